"""Calls that follow m3ter's long-running jobs: read, wait for, cancel; start and adopt bill jobs.

Functions over an :class:`~m3ter_provider.client.M3terClient` (no Airflow import); the job kinds
they follow are the table in :mod:`m3ter_provider.jobs`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from m3ter_provider.client import M3terClient, url_path
from m3ter_provider.errors import M3terAPIError, M3terConfigError, M3terJobTimeoutError
from m3ter_provider.jobs import JobKind, get_kind

log = logging.getLogger(__name__)


def get_job(client: M3terClient, kind: str | JobKind, job_id: str) -> dict[str, Any]:
    """Read one job of ``kind`` (see :data:`m3ter_provider.jobs.JOB_KINDS`)."""
    return client.request("GET", get_kind(kind).path(job_id))


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
        if deadline is not None and clock() + poll_interval > deadline:
            raise M3terJobTimeoutError(
                f"m3ter {job_kind.title} {job_id} was still {status} after {timeout:g} s.",
                kind=job_kind.name,
                job_id=job_id,
                status=status,
                job=job,
            )
        client.sleep(poll_interval)


def cancel_job(client: M3terClient, kind: str | JobKind, job_id: str) -> Any:
    """Cancel a job where m3ter has a cancel endpoint for its kind."""
    job_kind = get_kind(kind)
    if job_kind.cancel_path is None:
        raise M3terConfigError(f"m3ter has no way to cancel a {job_kind.title}.")
    job_kind.path(job_id)  # validates the id
    return client.request("POST", job_kind.cancel_path.format(job_id=job_id), idempotent=True)


def start_bill_job(client: M3terClient, body: Mapping[str, Any]) -> dict[str, Any]:
    """``POST billjobs`` (not retried where m3ter may have processed it) and return the new job."""
    job = client.request("POST", "billjobs", json=dict(body))
    if not isinstance(job, dict) or not job.get("id"):
        raise M3terAPIError(
            "m3ter answered without a bill job id",
            method="POST",
            path=url_path(client.url("billjobs")),
            hint="Check the API URL of the connection points at m3ter's Config API.",
        )
    return job


def find_active_bill_job(client: M3terClient, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The oldest active bill job (``GET billjobs?active=true``) created for the same request.

    A job matches when it bills the same set of ``accountIds`` and agrees on every other field
    of ``body`` that m3ter echoes in the job (``billDate``, ``lastDateInBillingPeriod``,
    ``billingFrequency``, ``dueDate``...). Used on a retry so a second job is not created.
    """
    for job in client.paginate("billjobs", params={"active": "true"}, page_size=100):
        if isinstance(job, dict) and bill_job_matches(job, body):
            return job
    return None


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


#: bill job request fields m3ter echoes in the job, compared when looking for a job already started
BILL_JOB_MATCH_FIELDS = (
    "billDate",
    "lastDateInBillingPeriod",
    "billingFrequency",
    "billFrequencyInterval",
    "dueDate",
    "externalInvoiceDate",
    "targetCurrency",
    "timezone",
)


def bill_job_matches(job: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """Whether bill ``job`` was created from a request like ``body`` (same accounts, same dates)."""
    if job.get("type") not in (None, "CREATE"):
        return False
    if set(job.get("accountIds") or ()) != set(body.get("accountIds") or ()):
        return False
    return all(
        str(job.get(field)) == str(body[field])
        for field in BILL_JOB_MATCH_FIELDS
        if body.get(field) is not None
    )
