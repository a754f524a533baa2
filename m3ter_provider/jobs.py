"""The one table of m3ter's long-running job kinds (no Airflow import).

The hook, the sensor and the trigger all read this table: no status string is written twice.
Statuses are from m3ter's OpenAPI spec (``Status``, ``BillJobStatus``, ``StatementJobStatus``,
``JobStatus``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from m3ter_provider.errors import M3terConfigError, M3terJobFailedError

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
        return self.poll_path.format(job_id=_check_id(job_id, self))

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
    start_date: str | None = None,
    end_date: str | None = None,
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

    ``USAGE`` needs ``start_date`` and ``end_date``; ``OPERATIONAL`` needs ``operational_data_types``
    (for example ``["BILLS", "ACCOUNTS"]``). Other fields of m3ter's schema pass through ``extra``.
    """
    source = str(source_type or "").upper()
    if source not in ("USAGE", "OPERATIONAL"):
        raise M3terConfigError(f"source_type {source_type!r}: use 'USAGE' or 'OPERATIONAL'.")
    fmt = str(export_file_format or "CSV").upper()
    if fmt not in ("CSV", "JSONL"):
        raise M3terConfigError(f"export_file_format {export_file_format!r}: use 'CSV' or 'JSONL'.")
    body: dict[str, Any] = {"sourceType": source, "exportFileFormat": fmt}
    if source == "USAGE":
        if not start_date or not end_date:
            raise M3terConfigError(
                "a USAGE data export needs start_date and end_date (ISO-8601, e.g. '2026-01-01T00:00:00Z')."
            )
        if operational_data_types:
            raise M3terConfigError("operational_data_types is for OPERATIONAL exports; drop it for USAGE.")
        body.update(startDate=str(start_date), endDate=str(end_date))
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


def _check_id(job_id: Any, kind: JobKind) -> str:
    text = str(job_id or "").strip()
    if not text or "/" in text or "?" in text:
        raise M3terConfigError(f"{kind.title} id {job_id!r} is not a valid m3ter id.")
    return text
