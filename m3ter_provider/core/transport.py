"""The one HTTP transport: a keep-alive ``requests`` session, retries under the one policy, and
a strict idea of success (no Airflow import).

- Every ``requests``/``urllib3``/``http.client``/socket exception becomes an
  :class:`~m3ter_provider.errors.M3terTransportError` (or is retried, as the policy says).
- Redirects are never followed: a 3xx is an :class:`~m3ter_provider.errors.M3terResponseError`
  naming where it pointed.
- A 2xx is a success only with a JSON body (or an empty one): an HTML page from a proxy is an
  error naming the status and content type; a cut-off JSON body is a transport failure, retried
  where a repeat is safe.
- Presigned URLs' signatures never reach a log line: :func:`install_log_redaction` puts a filter
  on this provider's, urllib3's, requests' and httpx's loggers. Importing this module changes no
  logger: :class:`~m3ter_provider.core.client.M3terClient` installs the filters when it is built.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions

from m3ter_provider.core.retry import Failure, RetryPolicy, retry_after_seconds
from m3ter_provider.errors import M3terResponseError, M3terTransportError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from m3ter_provider.core.pacing import Pace

log = logging.getLogger(__name__)

#: what any HTTP call may raise besides our own errors
TRANSPORT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)
_INVALID_REQUEST = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidHeader,
    requests.exceptions.InvalidJSONError,
    urllib3.exceptions.LocationValueError,
)


class _BodyCutOff(Exception):
    """A 2xx whose JSON body ended early or is malformed: the answer did not arrive whole."""


#: what one attempt may raise that the retry policy decides about
_ATTEMPT_FAILURES: tuple[type[BaseException], ...] = (_BodyCutOff, *TRANSPORT_EXCEPTIONS)


@dataclass(frozen=True)
class Answer:
    """What :meth:`Transport.call` returns: m3ter's final answer after the retries.

    :param response: the last response (any status; a 2xx's body has been read).
    :param attempts: how many requests it took (1 when the first was final).
    :param body: the decoded JSON body of a 2xx checked for JSON (``None`` for an empty body, for a
        non-2xx, or when the call asked for no JSON check).
    """

    response: requests.Response
    attempts: int = 1
    body: Any = None

    @property
    def status(self) -> int:
        """The HTTP status of :attr:`response`."""
        return self.response.status_code


class Transport:
    """Sends requests with retries and checks answers; one keep-alive session per transport.

    :param user_agent: the ``User-Agent`` of every request.
    :param timeout: ``(connect, read)`` seconds.
    :param policy: the retry policy.
    :param sleep: how to wait between retries (the client passes its own, so tests can record it).
    :param label: what hints name: ``"the m3ter connection 'x'"`` or ``"this connection"``.
    """

    def __init__(
        self,
        *,
        user_agent: str,
        timeout: tuple[float, float],
        policy: RetryPolicy,
        sleep: Callable[[float], None] = time.sleep,
        label: str = "the m3ter connection",
    ) -> None:
        self.user_agent = user_agent
        self.timeout = timeout
        self.policy = policy
        self.sleep = sleep
        self.label = label
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    @property
    def session(self) -> requests.Session:
        """One keep-alive ``requests.Session`` per transport (created on first use)."""
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    session = requests.Session()
                    session.headers["User-Agent"] = self.user_agent
                    session.headers["Accept"] = "application/json"
                    self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def call(
        self,
        method: str,
        url: str,
        send: Callable[[], requests.Response],
        *,
        idempotent: bool,
        json_body: bool = True,
        pace: Pace | None = None,
    ) -> Answer:
        """Run ``send`` until it gives a final answer, retrying as the policy says.

        Returns the last response whatever its status (after retries of transient ones), with the
        number of attempts; a 2xx has had its JSON body checked and decoded (``json_body``).
        Raises :class:`M3terTransportError` when no usable answer arrived,
        :class:`M3terResponseError` for a 3xx or a non-JSON 2xx.

        :param pace: paces every attempt (retries too) and hears of each 429 (ingest pacing).
        """
        attempt = 0
        while True:
            if pace is not None:
                pace.before_attempt()
            try:
                response = send()
                body = _read_json(method, url, response) if json_body else None
            except _ATTEMPT_FAILURES as exc:
                failure, reason = classify(exc)
                if not self.policy.retry_failure(failure, attempt, idempotent=idempotent):
                    raise self._failure_error(method, url, failure, reason, attempt + 1, idempotent) from None
                delay = self.policy.delay(attempt)
                log.warning(
                    "%s %s: %s; retry %d of %d in %.1f s.",
                    method,
                    url_path(url),
                    reason,
                    attempt + 1,
                    self.policy.max_retries,
                    delay,
                )
            else:
                status = response.status_code
                if status == 429 and pace is not None:
                    pace.throttled(retry_after_seconds(response.headers))
                if not self.policy.retry_status(status, attempt, idempotent=idempotent):
                    if 300 <= status < 400:
                        response.close()
                        raise redirect_error(method, url, response, self.label, attempts=attempt + 1)
                    return Answer(response, attempts=attempt + 1, body=body)
                retry_after = retry_after_seconds(response.headers)
                delay = self.policy.delay(attempt, retry_after)
                response.close()
                log.warning(
                    "%s %s: m3ter answered HTTP %d; retry %d of %d in %.1f s%s.",
                    method,
                    url_path(url),
                    status,
                    attempt + 1,
                    self.policy.max_retries,
                    delay,
                    " (Retry-After)" if retry_after is not None else "",
                )
            self.sleep(delay)
            attempt += 1

    def _failure_error(
        self, method: str, url: str, failure: Failure, reason: str, attempts: int, idempotent: bool
    ) -> M3terTransportError:
        if failure is Failure.INVALID:
            hint = f"Check the URLs of {self.label} (host, ingest_url, token_url)."
        elif failure is Failure.NO_ANSWER and not idempotent:
            hint = "m3ter may have processed it: check before re-running."
        else:
            hint = f"Check the URLs of {self.label} and your network."
        error = M3terTransportError(
            f"no usable answer from m3ter ({reason})",
            method=method,
            path=url_path(url),
            hint=hint,
            attempts=attempts,
        )
        error.permanent = failure is Failure.INVALID  # a malformed URL or an untrusted certificate
        return error


def _read_json(method: str, url: str, response: requests.Response) -> Any:
    """Check a 2xx has a JSON body (or none) and return it decoded (``None`` for an empty body or a
    non-2xx)."""
    if not 200 <= response.status_code < 300:
        return None
    content = response.content  # a body cut off mid-way raises here (ChunkedEncodingError)
    if not content.strip():
        return None
    try:
        return jsonlib.loads(content)
    except ValueError:
        content_type = response.headers.get("Content-Type") or "no Content-Type"
        if _is_json_type(content_type):
            raise _BodyCutOff from None
        response.close()
        raise M3terResponseError(
            f"m3ter's answer is not JSON ({content_type}, {len(content):,} bytes)",
            method=method,
            path=url_path(url),
            status=response.status_code,
            hint="A proxy or login page may sit between Airflow and m3ter: check the connection's host "
            "and your network's proxy settings.",
        ) from None


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def redirect_error(
    method: str, url: str, response: requests.Response, label: str, *, attempts: int = 1
) -> M3terResponseError:
    """A 3xx: redirects are never followed (the bearer token must not go elsewhere)."""
    location = response.headers.get("Location") or "nowhere"
    return M3terResponseError(
        f"m3ter answered with a redirect to {redact_url(location)} "
        f"({response.headers.get('Content-Type') or 'no Content-Type'}); redirects are not followed",
        method=method,
        path=url_path(url),
        status=response.status_code,
        attempts=attempts,
        hint=f"Check the URLs of {label} (host, ingest_url, token_url): use the address the redirect "
        "points at, with https.",
    )


def classify(exc: BaseException) -> tuple[Failure, str]:
    """What kind of failure ``exc`` is, and a short reason naming it (never the URL or its query)."""
    name = type(exc).__name__
    chain = list(_causes(exc))
    if isinstance(exc, _BodyCutOff):
        return Failure.NO_ANSWER, "the JSON body was cut off or malformed"
    if isinstance(exc, _INVALID_REQUEST):
        return Failure.INVALID, f"invalid request URL or header ({name})"
    if any(isinstance(c, ssl.SSLCertVerificationError) for c in chain):
        return Failure.INVALID, "the server's TLS certificate is not trusted"
    if isinstance(exc, requests.ConnectTimeout):
        return Failure.NOT_SENT, "connect timeout"
    if any(isinstance(c, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for c in chain):
        return Failure.NOT_SENT, "host name not found"
    if any(isinstance(c, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)) for c in chain):
        return Failure.NOT_SENT, "connection refused"
    if any(isinstance(c, (requests.exceptions.SSLError, ssl.SSLError)) for c in chain):
        return Failure.NO_ANSWER, f"TLS error ({name})"
    if isinstance(exc, requests.Timeout) or any(
        isinstance(c, (urllib3.exceptions.ReadTimeoutError, TimeoutError, socket.timeout)) for c in chain
    ):
        return Failure.NO_ANSWER, "read timeout"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or any(
        isinstance(c, (http.client.IncompleteRead, urllib3.exceptions.IncompleteRead)) for c in chain
    ):
        return Failure.NO_ANSWER, f"the body was cut off ({name})"
    if isinstance(exc, (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError)):
        return Failure.NO_ANSWER, f"the body could not be decoded ({name})"
    return Failure.NO_ANSWER, f"connection dropped ({name})"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: exceptions in its ``args``, ``MaxRetryError.reason``, ``__cause__``."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        nested = [reason, current.__cause__]
        nested += [arg for arg in current.args if isinstance(arg, BaseException)]
        todo.extend(e for e in nested if isinstance(e, BaseException))


def url_path(url: str) -> str:
    """The path of ``url``, for messages (no host, no query)."""
    return urlsplit(url).path or "/"


# ---------------------------------------------------------------- log redaction
#: query parameters that authorise a request by themselves (presigned URLs, tokens)
_SECRET_PARAM = re.compile(
    r"(?i)^(x-amz-[a-z-]*|x-goog-[a-z-]*|signature|sig|se|sp|sv|skoid|sktid|policy|key-pair-id|"
    r"googleaccessid|awsaccesskeyid|[a-z_-]*token|[a-z_-]*secret|[a-z_-]*credential|"
    r"access_key|api_key|apikey|key|password)$"
)
_QUERY = re.compile(r"\?([^\s\"'<>#]*)")
REDACTED = "?<redacted>"


def redact(text: str) -> str:
    """``text`` with every query string that carries a signature or token replaced by ``?<redacted>``."""
    if "?" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        names = (part.split("=", 1)[0] for part in match.group(1).split("&"))
        return REDACTED if any(_SECRET_PARAM.match(name) for name in names if name) else match.group(0)

    return _QUERY.sub(replace, text)


def redact_url(url: str) -> str:
    """A URL without its query string (and without any user info), for messages."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
    except ValueError:
        return "<unparsable URL>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) + ("?<query hidden>" if parts.query else "")


class RedactingFilter(logging.Filter):
    """Rewrites a log record whose message holds a presigned URL's query (or a token parameter)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is the handler's business, not ours
            return True
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


#: loggers that may log a request URL: filters on a logger apply to records created there only,
#: so each module logger is named
REDACTED_LOGGERS = (
    "urllib3",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.response",
    "urllib3.poolmanager",
    "urllib3.util.retry",
    "requests",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "m3ter_provider",
    "m3ter_provider.core.client",
    "m3ter_provider.core.tokens.client",
    "m3ter_provider.core.transport",
    "m3ter_provider.core.download",
    "m3ter_provider.core.jobs",
    "m3ter_provider.core.paging",
    "m3ter_provider.hooks.m3ter",
    "m3ter_provider.triggers.m3ter",
    "m3ter_provider.operators.m3ter",
    "m3ter_provider.sensors.m3ter",
)
_FILTER = RedactingFilter("m3ter-presigned-url-redaction")


def install_log_redaction() -> None:
    """Put the redacting filter on every logger in :data:`REDACTED_LOGGERS` (idempotent: a logger
    gets it once, however often this runs).

    :class:`~m3ter_provider.core.client.M3terClient` calls it when it is built, so anything that
    sends a request (the hook, the trigger, the SDK client, a download) runs with the filters on;
    importing this module installs nothing.
    """
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def log_redaction_installed() -> bool:
    """Whether :func:`install_log_redaction` has put the filter on every logger it names."""
    return all(_FILTER in logging.getLogger(name).filters for name in REDACTED_LOGGERS)
