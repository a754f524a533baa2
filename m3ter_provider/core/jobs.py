"""m3ter's long-running jobs: the one table of job kinds, and the calls that follow them.

The table (:data:`JOB_KINDS`) is read by the hook, the sensor and the trigger: no status string is
written twice. Statuses are from m3ter's OpenAPI spec (``Status``, ``BillJobStatus``,
``StatementJobStatus``, ``JobStatus``). The calls (read, wait for, cancel; start and find bill jobs)
are functions over an :class:`~m3ter_provider.core.client.M3terClient`. No Airflow import, and nothing
heavy: operator modules import this one while a DAG file is parsed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from m3ter_provider.core.limits import check_export_file_format, check_poll_interval, check_timeout
from m3ter_provider.errors import M3terAPIError, M3terConfigError, M3terJobFailedError, M3terJobTimeoutError

if TYPE_CHECKING:
    from m3ter_provider.core.client import M3terClient

log = logging.getLogger(__name__)

Outcome = Literal["done", "failed", "running"]


@dataclasses.dataclass(frozen=True)
class JobKind:
    """How to follow one kind of m3ter job.

    :param name: the kind's name in this provider (``"dataexport"``, ``"billjob"``, ...).
    :param title: how log lines and errors name it.
    :param poll_path: the org-relative path that reads one job, with ``{job_id}``.
    :param status_field: the job field holding its status.
    :param done_states: statuses meaning the job finished well.
    :param failed_states: statuses meaning the job failed or was cancelled.
    :param cancel_path: the org-relative path that cancels a job (POST), where m3ter has one.
    :param console_path: the m3ter Console page for the job, where one is known.
    """

    name: str
    title: str
    poll_path: str
    status_field: str
    done_states: frozenset[str]
    failed_states: frozenset[str]
    cancel_path: str | None = None
    console_path: str | None = None

    def path(self, job_id: str) -> str:
        """The org-relative path that reads the job (its id checked and URL-quoted)."""
        return self.poll_path.format(job_id=_check_id(job_id, self))

    def cancel(self, job_id: str) -> str:
        """The org-relative path that cancels the job; :class:`M3terConfigError` where m3ter has none."""
        if self.cancel_path is None:
            raise M3terConfigError(f"m3ter has no way to cancel a {self.title}.")
        return self.cancel_path.format(job_id=_check_id(job_id, self))

    def status(self, job: Mapping[str, Any]) -> str | None:
        value = job.get(self.status_field) if isinstance(job, Mapping) else None
        return str(value) if value is not None else None

    def outcome(self, job: Mapping[str, Any]) -> Outcome:
        """``"done"``, ``"failed"`` or ``"running"`` (anything not final, including unknown states)."""
        status = self.status(job)
        if status in self.done_states:
            return "done"
        if status in self.failed_states:
            return "failed"
        return "running"

    def failed_error(self, job_id: str, job: Mapping[str, Any]) -> M3terJobFailedError:
        """The error for a job of this kind that reached a failed state (names its id and status)."""
        status = self.status(job)
        return M3terJobFailedError(
            f"m3ter {self.title} {job_id} ended {status}.",
            kind=self.name,
            job_id=job_id,
            status=status,
            job=job,
        )


DATA_EXPORT = JobKind(
    name="dataexport",
    title="data export",
    poll_path="dataexports/jobs/{job_id}",
    status_field="status",
    done_states=frozenset({"SUCCEEDED"}),
    failed_states=frozenset({"FAILED"}),
)
BILL_JOB = JobKind(
    name="billjob",
    title="bill job",
    poll_path="billjobs/{job_id}",
    status_field="status",
    done_states=frozenset({"COMPLETE"}),
    failed_states=frozenset({"CANCELLED"}),
    cancel_path="billjobs/{job_id}/cancel",
)
STATEMENT_JOB = JobKind(
    name="statementjob",
    title="statement job",
    poll_path="statementjobs/{job_id}",
    status_field="statementJobStatus",
    done_states=frozenset({"COMPLETE"}),
    failed_states=frozenset({"CANCELLED", "FAILED"}),
    cancel_path="statementjobs/{job_id}/cancel",
)
FILE_UPLOAD = JobKind(
    name="fileupload",
    title="measurement file upload",
    poll_path="fileuploads/measurements/jobs/{job_id}",
    status_field="status",
    done_states=frozenset({"succeeded"}),
    failed_states=frozenset({"failed"}),
)

JOB_KINDS: dict[str, JobKind] = {
    kind.name: kind for kind in (DATA_EXPORT, BILL_JOB, STATEMENT_JOB, FILE_UPLOAD)
}


def get_kind(kind: str | JobKind) -> JobKind:
    """Look a job kind up by name; raise :class:`M3terConfigError` listing the known kinds."""
    if isinstance(kind, JobKind):
        return kind
    found = JOB_KINDS.get(str(kind).lower().replace("_", "").replace("-", ""))
    if found is None:
        raise M3terConfigError(f"unknown m3ter job kind {kind!r}: use one of {sorted(JOB_KINDS)}.")
    return found


def data_export_body(
    source_type: str,
    *,
    start_date: str | dt.date | None = None,
    end_date: str | dt.date | None = None,
    meter_ids: list[str] | None = None,
    account_ids: list[str] | None = None,
    aggregations: list[dict[str, Any]] | None = None,
    groups: list[dict[str, Any]] | None = None,
    operational_data_types: list[str] | None = None,
    export_file_format: str = "CSV",
    destination_ids: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build and check the body of ``POST /dataexports/adhoc``.

    ``USAGE`` needs ``start_date`` and ``end_date`` (see :func:`export_date`); ``OPERATIONAL`` needs
    ``operational_data_types`` (for example ``["BILLS", "ACCOUNTS"]``). Other fields of m3ter's
    schema pass through ``extra``.
    """
    source = str(source_type or "").upper()
    if source not in ("USAGE", "OPERATIONAL"):
        raise M3terConfigError(f"source_type {source_type!r}: use 'USAGE' or 'OPERATIONAL'.")
    fmt = check_export_file_format(export_file_format or "CSV")
    body: dict[str, Any] = {"sourceType": source, "exportFileFormat": fmt}
    if source == "USAGE":
        if not start_date or not end_date:
            raise M3terConfigError(
                "a USAGE data export needs start_date and end_date (ISO-8601, e.g. '2026-01-01T00:00:00Z')."
            )
        if operational_data_types:
            raise M3terConfigError("operational_data_types is for OPERATIONAL exports; drop it for USAGE.")
        body.update(
            startDate=export_date(start_date, "start_date"), endDate=export_date(end_date, "end_date")
        )
        for key, value in (
            ("meterIds", meter_ids),
            ("accountIds", account_ids),
            ("aggregations", aggregations),
            ("groups", groups),
        ):
            if value:
                body[key] = list(value)
    else:
        if not operational_data_types:
            raise M3terConfigError(
                "an OPERATIONAL data export needs operational_data_types, e.g. ['BILLS', 'ACCOUNTS']."
            )
        if meter_ids or account_ids or aggregations or groups:
            raise M3terConfigError("meter_ids, account_ids, aggregations and groups are for USAGE exports.")
        body["operationalDataTypes"] = [str(t).upper() for t in operational_data_types]
    if destination_ids:
        body["destinationIds"] = list(destination_ids)
    body.update(extra)
    return body


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", re.IGNORECASE)


def export_date(value: Any, field: str) -> str:
    """An export's ``startDate``/``endDate`` as m3ter's spec wants it: an RFC 3339 date-time with an
    offset (``format: date-time``).

    Also accepted, as users write them: a timezone-aware ``datetime`` (pendulum's too), a ``date`` or
    a bare ``"2026-01-01"`` (Jinja's ``{{ ds }}``: midnight UTC), and ``str(datetime)``'s space
    instead of ``T``. Anything else is refused here, naming ``field``, before a request is sent.
    """
    example = "'2026-01-01T00:00:00Z', '2026-01-01' (midnight UTC) or a timezone-aware datetime"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise M3terConfigError(
                f"{field} {value!r} has no timezone: m3ter needs an offset. Give an aware datetime "
                "(e.g. datetime(2026, 1, 1, tzinfo=timezone.utc) or a pendulum DateTime) or a string "
                "such as '2026-01-01T00:00:00Z'."
            )
        return value.isoformat()
    if isinstance(value, dt.date):
        return f"{value.isoformat()}T00:00:00Z"
    text = value.strip() if isinstance(value, str) else None
    if text is not None and _DATE.fullmatch(text):
        text += "T00:00:00Z"
    elif text is not None and len(text) > 10 and text[10] == " " and _DATE.fullmatch(text[:10]):
        text = f"{text[:10]}T{text[11:]}"
    if text is None or not _RFC3339.fullmatch(text) or not _valid_datetime(text):
        raise M3terConfigError(
            f"{field} {value!r} is not a date-time m3ter accepts: give an RFC 3339 date-time with an "
            f"offset, e.g. {example}."
        )
    return text


def _valid_datetime(text: str) -> bool:
    """Whether an RFC 3339-shaped string is a real date and time (no month 13, no 25:00)."""
    match = _RFC3339.fullmatch(text)
    assert match is not None
    normal = text.upper().replace("Z", "+00:00")
    fraction = match.group(1)
    if fraction:  # fromisoformat (3.10) takes 3 or 6 fraction digits only
        normal = normal.replace(fraction, (fraction + "000000")[:7], 1)
    try:
        dt.datetime.fromisoformat(normal)
    except ValueError:
        return False
    return True


def _check_id(job_id: Any, kind: JobKind) -> str:
    """The id, URL-quoted for a path segment (``abc#frag`` must not poll ``abc``)."""
    text = str(job_id or "").strip()
    # "." and ".." would be resolved as path segments (billjobs/.. reads the list, not a job)
    if not text or text in (".", "..") or "/" in text or "?" in text:
        raise M3terConfigError(f"{kind.title} id {job_id!r} is not a valid m3ter id.")
    return quote(text, safe="")


# ---------------------------------------------------------------- calls that follow jobs
def get_job(client: M3terClient, kind: str | JobKind, job_id: str) -> dict[str, Any]:
    """Read one job of ``kind`` (see :data:`JOB_KINDS`)."""
    job: dict[str, Any] = client.request("GET", get_kind(kind).path(job_id))
    return job


def wait_for_job(
    client: M3terClient,
    kind: str | JobKind,
    job_id: str,
    *,
    poll_interval: float = 10.0,
    timeout: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Poll a job until it reaches a final state and return it.

    :raises M3terJobFailedError: the job reached a failed state.
    :raises M3terJobTimeoutError: ``timeout`` seconds passed first.
    """
    poll_interval = check_poll_interval(poll_interval)
    timeout = check_timeout(timeout)
    job_kind = get_kind(kind)
    deadline = None if timeout is None else clock() + timeout
    last_status: str | None = None
    while True:
        job = get_job(client, job_kind, job_id)
        status = job_kind.status(job)
        if status != last_status:
            log.info("m3ter %s %s is %s.", job_kind.title, job_id, status)
            last_status = status
        outcome = job_kind.outcome(job)
        if outcome == "done":
            return job
        if outcome == "failed":
            raise job_kind.failed_error(job_id, job)
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            raise M3terJobTimeoutError(
                f"m3ter {job_kind.title} {job_id} was still {status} after {timeout:g} s.",
                kind=job_kind.name,
                job_id=job_id,
                status=status,
                job=job,
            )
        # the last sleep ends at the deadline, where one more poll may still find the job final
        client.sleep(poll_interval if remaining is None else min(poll_interval, remaining))


def cancel_job(client: M3terClient, kind: str | JobKind, job_id: str) -> Any:
    """Cancel a job where m3ter has a cancel endpoint for its kind."""
    return client.request("POST", get_kind(kind).cancel(job_id), idempotent=True)


def start_bill_job(client: M3terClient, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST billjobs`` (not retried where m3ter may have processed it) and return the new job."""
    job = client.request("POST", "billjobs", json=dict(body))
    if not isinstance(job, dict) or not job.get("id"):
        raise M3terAPIError(
            "m3ter answered without a bill job id",
            method="POST",
            path=urlsplit(client.url("billjobs")).path,
            hint="Check the API URL of the connection points at m3ter's Config API.",
        )
    return job


def start_data_export(client: M3terClient, source_type: str, **kwargs: Any) -> str:
    """``POST dataexports/adhoc`` (see :func:`data_export_body` for the arguments); the new job's id."""
    body = data_export_body(source_type, **kwargs)
    answer = client.request("POST", "dataexports/adhoc", json=body)
    job_id = answer.get("jobId") if isinstance(answer, dict) else None
    if not job_id:
        raise M3terAPIError(
            "m3ter answered without a data export jobId",
            method="POST",
            path=urlsplit(client.url("dataexports/adhoc")).path,
            hint="Check the API URL of the connection points at m3ter's Config API.",
        )
    log.info("Started m3ter %s data export %s.", body["sourceType"], job_id)
    return str(job_id)


def export_download_url(client: M3terClient, job_id: str) -> dict[str, Any]:
    """A presigned download URL for a finished export (``{"url", "expirationTime"}``, valid 15 min)."""
    answer: dict[str, Any] = client.request("GET", f"{DATA_EXPORT.path(job_id)}/getdownloadurl")
    return answer


def bill_ids(client: M3terClient, job: Mapping[str, Any]) -> list[str]:
    """The ids of the bills a finished bill job produced (``billIds``, else ``GET bills?billJobId=``)."""
    ids = job.get("billIds")
    if isinstance(ids, list) and ids:
        return [str(i) for i in ids]
    return [
        str(bill["id"])
        for bill in client.paginate("bills", params={"billJobId": job["id"]}, page_size=100)
        if isinstance(bill, dict) and bill.get("id")
    ]
