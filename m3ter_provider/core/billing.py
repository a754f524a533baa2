"""The bill lifecycle after a bill job: list, approve, lock, recalculate (no Airflow import).

m3ter's rules (spec: ``ApproveBills``, ``ApproveAllBillsInBillingPeriod``, ``LockBill``,
``RecalculateBillJob``): a Bill is ``PENDING`` until a person approves it (``APPROVED``); only an
approved Bill can be locked, and a locked Bill never changes again (not approved, not recalculated).
A recalculation is a bill job of type ``RECALCULATE`` that puts its Bills back to ``PENDING``.

Each call reads the Bills first and acts only on those that need it, so a retry after a lost
answer is not an error: an approved Bill is reported ``already_approved``, a locked one
``already_locked``. Every call returns what it changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from m3ter_provider.core._text import plural
from m3ter_provider.core.jobs import BILL_JOB, export_date
from m3ter_provider.errors import M3terAPIError, M3terConfigError, M3terValidationError

if TYPE_CHECKING:
    from m3ter_provider.core.client import M3terClient

log = logging.getLogger(__name__)

BILLING_FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "ANNUALLY", "AD_HOC")
_IDS_PER_READ = 100  # GET bills?ids=... pageSize maximum
_IDS_PER_RECALCULATION = 100  # BillJobRecalculateRequest.billIds maxItems


def bill_id_list(bill_ids: Any, name: str = "bill_ids") -> list[str]:
    """Bill ids from a list (or one comma-separated string), checked and without repeats."""
    if isinstance(bill_ids, str):
        bill_ids = [part for part in bill_ids.split(",") if part.strip()]
    if not isinstance(bill_ids, Iterable) or isinstance(bill_ids, Mapping):
        raise M3terConfigError(f"{name}: give a list of Bill ids, not {type(bill_ids).__name__}.")
    ids: list[str] = []
    for item in bill_ids:
        text = str(item or "").strip()
        if not text or "/" in text or "?" in text:
            raise M3terConfigError(f"{name}: {item!r} is not a Bill id.")
        if text not in ids:
            ids.append(text)
    return ids


def list_bills(
    client: M3terClient,
    *,
    bill_job_id: str | None = None,
    bill_ids: Iterable[str] | None = None,
    status: str | None = None,
    include_line_items: bool = False,
) -> list[dict[str, Any]]:
    """The Bills of a bill job, or with given ids (``GET bills``), optionally of one ``status``."""
    params: dict[str, Any] = {"excludeLineItems": str(not include_line_items).lower()}
    if status:
        params["status"] = status
    if bill_ids is not None:
        ids = bill_id_list(bill_ids)
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), _IDS_PER_READ):
            chunk = ids[start : start + _IDS_PER_READ]
            found.extend(client.paginate("bills", params={**params, "ids": chunk}, page_size=_IDS_PER_READ))
        missing = sorted(set(ids) - {str(b.get("id")) for b in found})
        if missing:
            raise M3terValidationError(f"bill_ids: m3ter has no Bill with id(s) {missing}.")
        return found
    if bill_job_id:
        params["billJobId"] = bill_job_id
    return list(client.paginate("bills", params=params, page_size=_IDS_PER_READ))


def approve_bills(client: M3terClient, bill_ids: Iterable[str]) -> dict[str, Any]:
    """Approve the PENDING Bills among ``bill_ids`` (``POST bills/approve``).

    :return: ``{"approved": [...], "already_approved": [...], "locked": [...]}`` (ids).
    :raises M3terValidationError: an id m3ter does not know (nothing approved).
    """
    bills = list_bills(client, bill_ids=bill_ids)
    result = _split(bills)
    pending = result.pop("pending")
    if pending:
        try:
            client.request("POST", "bills/approve", json={"billIds": pending})
        except M3terAPIError as exc:
            if exc.status != 400:
                raise
            # a retried POST m3ter had processed, or someone else's approval: read what is true now
            again = _split(list_bills(client, bill_ids=pending))
            if again["pending"]:
                raise
            log.info("m3ter had approved %s already.", plural(len(pending), "bill"))
    result = {"approved": pending, **result}
    log.info(
        "Approved %s (%s approved already, %s locked).",
        plural(len(pending), "m3ter bill"),
        len(result["already_approved"]),
        len(result["locked"]),
    )
    return result


def approve_billing_period(
    client: M3terClient, last_date_in_billing_period: Any, billing_frequency: str = "MONTHLY"
) -> dict[str, Any]:
    """Approve every PENDING Bill of a billing period (``POST bills/billingperiod/{date}/{freq}/approve``).

    :return: ``{"approved": [...], "already_approved": [...], "locked": [...]}`` as read before and
        after the call, and ``message``: m3ter's answer.
    """
    day = export_date(last_date_in_billing_period, "last_date_in_billing_period")[:10]
    frequency = str(billing_frequency or "").upper()
    if frequency not in BILLING_FREQUENCIES:
        raise M3terConfigError(
            f"billing_frequency {billing_frequency!r}: use one of {', '.join(BILLING_FREQUENCIES)}."
        )
    period = f"bills/billingperiod/{quote(day)}/{frequency}"
    before = _split(list(client.paginate(period, page_size=_IDS_PER_READ)))
    answer = client.request("POST", f"{period}/approve", idempotent=True) if before["pending"] else None
    log.info(
        "Approved %s of the %s period ending %s.",
        plural(len(before["pending"]), "m3ter bill"),
        frequency,
        day,
    )
    message = answer.get("message") if isinstance(answer, dict) else None
    return {"approved": before.pop("pending"), **before, "message": message}


def lock_bills(client: M3terClient, bill_ids: Iterable[str]) -> dict[str, Any]:
    """Lock the approved Bills among ``bill_ids`` (``PUT bills/{id}/lock``); a locked one is skipped.

    :return: ``{"locked": [...], "already_locked": [...]}`` (ids).
    :raises M3terValidationError: a Bill is still PENDING (nothing is locked): approve it first.
    """
    bills = list_bills(client, bill_ids=bill_ids)
    split = _split(bills)
    if split["pending"]:
        raise M3terValidationError(
            f"bill_ids: {plural(len(split['pending']), 'bill')} still PENDING ({split['pending'][:5]}): "
            "m3ter locks only approved Bills. Approve them first."
        )
    to_lock = split["already_approved"]
    for bill_id in to_lock:
        client.request("PUT", f"bills/{quote(bill_id, safe='')}/lock")
    log.info("Locked %s (%s locked already).", plural(len(to_lock), "m3ter bill"), len(split["locked"]))
    return {"locked": to_lock, "already_locked": split["locked"]}


def recalculation_body(client: M3terClient, bill_ids: Iterable[str]) -> dict[str, Any]:
    """The body of ``POST billjobs/recalculate``, after checking no Bill is locked (read first)."""
    ids = bill_id_list(bill_ids)
    if not 1 <= len(ids) <= _IDS_PER_RECALCULATION:
        raise M3terConfigError(
            f"bill_ids: give 1 to {_IDS_PER_RECALCULATION} Bills to recalculate, not {len(ids)}."
        )
    locked = _split(list_bills(client, bill_ids=ids))["locked"]
    if locked:
        raise M3terValidationError(f"bill_ids: locked Bills cannot be recalculated: {locked[:5]}.")
    return {"billIds": ids}


def start_recalculation(client: M3terClient, bill_ids: Iterable[str]) -> dict[str, Any]:
    """Start a RECALCULATE bill job for ``bill_ids`` (not blindly retried) and return it.

    Follow it like any bill job (``wait_for_job(client, "billjob", id)``): once ``COMPLETE`` the
    Bills are ``PENDING`` again, with their line items computed from the corrected usage.
    """
    job = client.request("POST", "billjobs/recalculate", json=recalculation_body(client, bill_ids))
    if not isinstance(job, dict) or not job.get("id"):
        raise M3terAPIError(
            "m3ter answered without a bill job id", method="POST", path="billjobs/recalculate"
        )
    log.info(
        "Started m3ter %s %s to recalculate %s.",
        BILL_JOB.title,
        job["id"],
        plural(len(job.get("billIds") or []), "bill"),
    )
    return job


def _split(bills: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
    """Bill ids by state: ``pending`` (to approve), ``already_approved`` (to lock), ``locked``."""
    split: dict[str, list[str]] = {"pending": [], "already_approved": [], "locked": []}
    for bill in bills:
        bill_id = str(bill.get("id"))
        if bill.get("locked"):
            split["locked"].append(bill_id)
        elif bill.get("status") == "APPROVED":
            split["already_approved"].append(bill_id)
        else:
            split["pending"].append(bill_id)
    return split
