"""The provider's one exception family.

Every error names what was attempted (method and path), what m3ter said (status and its
``message``) and what to check. No message ever carries the Api Secret, a bearer token or a
request header. The family derives from ``Exception``: Airflow fails a task on any exception, so
the framework-free core imports nothing from Airflow.
"""

from __future__ import annotations

from typing import Any

#: HTTP 4xx statuses that are worth another try later: a timeout, a conflict, too many requests,
#: too early. Every other 4xx answer is permanent: the same request gets the same answer.
TRANSIENT_CLIENT_STATUSES = frozenset({408, 409, 425, 429})


class M3terError(Exception):
    """Base class of every error this provider raises.

    ``permanent`` says whether trying again later can help: ``True`` for refused credentials, bad
    configuration, invalid input and most 4xx answers; ``False`` for what time may cure (no answer,
    5xx, 408/409/429, a job still running). The Airflow face fails a task at once on a permanent
    error instead of spending its retries.
    """

    permanent: bool = False


class M3terConfigError(M3terError, ValueError):
    """The connection (or an argument) is missing a field or holds a malformed value."""

    permanent = True


class M3terValidationError(M3terError, ValueError):
    """Input refused before anything was sent to m3ter (for example a bad measurement)."""

    permanent = True


class M3terRequestError(M3terError):
    """A request to m3ter failed.

    :param method: the HTTP method attempted.
    :param path: the URL path attempted (no query string, no host).
    :param status: the HTTP status m3ter answered, or None when no answer arrived.
    :param m3ter_message: the ``message`` (or OAuth ``error_description``) m3ter sent back.
    :param hint: what to check.
    """

    def __init__(
        self,
        summary: str,
        *,
        method: str,
        path: str,
        status: int | None = None,
        m3ter_message: str | None = None,
        hint: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.method = method
        self.path = path
        self.status = status
        self.m3ter_message = m3ter_message
        self.hint = hint
        self.attempts = attempts
        parts = [f"{method} {path}: {summary}"]
        if status is not None:
            parts.append(f"HTTP {status}")
        if m3ter_message:
            parts.append(f"m3ter said: {m3ter_message!r}")
        if attempts > 1:
            parts.append(f"after {attempts} attempts")
        text = "; ".join(parts) + "."
        if hint:
            text += f" {hint}"
        super().__init__(text)

    @property
    def permanent(self) -> bool:  # type: ignore[override]
        """A 4xx answer other than 408, 409, 425 and 429: the same request gets the same answer."""
        return (
            self.status is not None
            and 400 <= self.status < 500
            and self.status not in TRANSIENT_CLIENT_STATUSES
        )


class M3terAuthError(M3terRequestError):
    """m3ter refused the credentials (HTTP 400/401/403 at the token endpoint), or refused a call
    made with a freshly exchanged token (a wrong org id or a missing permission)."""

    permanent = True


class M3terAPIError(M3terRequestError):
    """m3ter answered an API call with an error status (4xx or 5xx after retries)."""


class M3terRateLimitError(M3terAPIError):
    """m3ter kept answering 429 Too Many Requests until the retries ran out."""


class M3terResponseError(M3terAPIError):
    """An answer that is not m3ter's: a redirect (redirects are never followed), or a 2xx whose
    body is not JSON (a proxy's HTML page, for example). Never retried."""


class M3terTransportError(M3terRequestError):
    """A transient failure that outlasted the retries: no answer (connection refused or dropped, a
    timeout, a cut-off body, a TLS error), or a token endpoint answering 429 or 5xx. Worth trying
    again later; a caller that polls (the trigger) treats it as non-fatal."""

    permanent = False


class M3terJobError(M3terError):
    """A long-running m3ter job (export, bill job, ...) failed, was cancelled or timed out.

    :param kind: the job kind (see :mod:`m3ter_provider.core.jobs`).
    :param job_id: the job's id.
    :param status: the job's last status.
    """

    def __init__(self, text: str, *, kind: str, job_id: str, status: str | None, job: Any = None) -> None:
        self.kind = kind
        self.job_id = job_id
        self.status = status
        self.job = job
        super().__init__(text)


class M3terJobFailedError(M3terJobError):
    """The job reached one of its failed states."""


class M3terJobTimeoutError(M3terJobError):
    """The job did not reach a final state in time."""


def m3ter_message(body: Any) -> str | None:
    """Return the human message from an m3ter error body.

    m3ter answers ``{"message": "..."}``; an OAuth endpoint may answer
    ``{"error": "...", "error_description": "..."}``. Both are read.
    """
    if not isinstance(body, dict):
        return None
    message = body.get("message")
    if isinstance(message, str) and message:
        return message
    error, description = body.get("error"), body.get("error_description")
    if isinstance(error, str) and error:
        return f"{error}: {description}" if isinstance(description, str) and description else error
    return None


class M3terIngestError(M3terError):
    """A measurement request failed part-way: some batches were accepted before it, the rest not.

    Re-running the same input with the same ``uid_namespace`` completes it without doubling: the
    measurements m3ter already has carry the same uids and are ingested once.

    :param accepted_measurements: measurements m3ter accepted in this call.
    :param accepted_batches: requests m3ter accepted in this call.
    :param uid_namespace: the namespace the uids were derived from (the call's own random one when
        none was given: pass it back to resume).
    :param cause: what failed: an error of this family, or anything else raised underneath (an
        ``OSError``, a bug); ``permanent`` follows it (only an error of this family can be permanent).
    """

    def __init__(
        self,
        cause: BaseException,
        *,
        accepted_measurements: int,
        accepted_batches: int,
        total_measurements: int,
        total_batches: int,
        uid_namespace: str,
    ) -> None:
        self.cause = cause
        self.accepted_measurements = accepted_measurements
        self.accepted_batches = accepted_batches
        self.total_measurements = total_measurements
        self.total_batches = total_batches
        self.uid_namespace = uid_namespace
        self.permanent = bool(getattr(cause, "permanent", False)) if isinstance(cause, M3terError) else False
        resume = (
            f"Re-run with uid_namespace={uid_namespace!r} and the same input to send the rest without "
            "doubling (this call had no namespace of its own)."
            if uid_namespace.startswith("random:")
            else f"Re-running the same input with uid_namespace={uid_namespace!r} sends the rest without "
            "doubling."
        )
        batches = "batch" if total_batches == 1 else "batches"
        what = str(cause) if isinstance(cause, M3terError) else f"{type(cause).__name__}: {cause}."
        super().__init__(
            f"{what} m3ter accepted {accepted_measurements:,} of {total_measurements:,} measurements "
            f"(in {accepted_batches:,} of {total_batches:,} {batches}) before this. {resume}"
        )


class M3terIngestRejectedError(M3terError):
    """m3ter accepted measurements and then refused them (``ingest.validation.failure`` Events).

    Permanent: the same measurements sent again are refused again (fix them and send them anew).
    """

    permanent = True


class M3terIngestCheckError(M3terError):
    """The measurements were sent, but reading m3ter's Events to check them failed."""


class M3terDestinationError(M3terError):
    """A download could not be written to its destination (a local path or an ``ObjectStoragePath``);
    the destination is left as it was."""


class M3terUsageQueryError(M3terError):
    """A usage query cannot be answered completely (too many items at one instant, or an aggregated
    query over more than one answer holds). Permanent: narrow the query (a shorter range, fewer
    Meters or Accounts) and run it again."""

    permanent = True
