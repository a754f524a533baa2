"""Bill lifecycle operators: approve, lock, recalculate the Bills a bill job produced.

Separate operators, not one ``M3terBillsOperator(action=...)``: each month-end step is its own task
in the DAG (its own retries, its own box in the grid, a human approval in between), and each takes
different arguments (a billing period for approval; a RECALCULATE job to wait for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from m3ter_provider.core.jobs import BILL_JOB
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.hooks.permanent import fails_fast
from m3ter_provider.operators._base import M3terHookMixin, M3terJobOperatorBase
from m3ter_provider.operators.asset_events import M3terAssetEventsMixin, capped_ids
from m3ter_provider.operators.inputs import as_id_list
from m3ter_provider.tasks import templated

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context


class M3terApproveBillsOperator(M3terAssetEventsMixin, M3terHookMixin, BaseOperator):
    """Approve m3ter Bills: given ids, the Bills of a bill job, or a whole billing period.

    Only PENDING Bills are approved; an approved or locked Bill is reported, not an error, so a
    retry is safe. Returns ``{"approved": [...], "already_approved": [...], "locked": [...]}``.

    :param bill_ids: the Bill ids (a list, an XCom, or comma-separated). (templated)
    :param bill_job_id: approve the Bills this bill job produced. (templated)
    :param last_date_in_billing_period: approve every PENDING Bill of the period ending this day
        (``YYYY-MM-DD``), with ``billing_frequency``. (templated)
    :param billing_frequency: the period's frequency (default ``MONTHLY``). (templated)
    :param bool emit_asset_events: when Bills were approved, emit an asset event for
        ``m3ter://<org id>/bills`` through the ``m3ter/bills`` alias outlet, ``extra``
        ``{"action": "approved", "approved", "bill_ids" (the first 20), "bill_job_id",
        "last_date_in_billing_period", "billing_frequency"}`` (the period's, None without one); none
        when nothing changed. Default True.
    :param m3ter_conn_id: the m3ter connection id.
    """

    asset_event_kind = "bills"
    template_fields: Sequence[str] = (
        "bill_ids",
        "bill_job_id",
        "last_date_in_billing_period",
        "billing_frequency",
    )

    def __init__(
        self,
        *,
        bill_ids: Any = None,
        bill_job_id: str | None = None,
        last_date_in_billing_period: Any = None,
        billing_frequency: str = "MONTHLY",
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = [name for name, value in (("bill_ids", bill_ids), ("bill_job_id", bill_job_id),
                 ("last_date_in_billing_period", last_date_in_billing_period)) if value]  # fmt: skip
        if len(given) != 1:
            raise M3terConfigError(
                "M3terApproveBillsOperator: give one of bill_ids, bill_job_id or last_date_in_billing_period"
                + (f", not {' and '.join(given)}." if given else ".")
            )
        self.bill_ids = bill_ids
        self.bill_job_id = bill_job_id
        self.last_date_in_billing_period = last_date_in_billing_period
        self.billing_frequency = billing_frequency
        self.m3ter_conn_id = m3ter_conn_id

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        if self.last_date_in_billing_period:
            result = self.hook.approve_billing_period(
                self.last_date_in_billing_period, self.billing_frequency
            )
        else:
            result = self.hook.approve_bills(_bill_ids(self.hook, self.bill_ids, self.bill_job_id))
        by_period = bool(self.last_date_in_billing_period)
        period = {
            "last_date_in_billing_period": self.last_date_in_billing_period if by_period else None,
            "billing_frequency": self.billing_frequency if by_period else None,
        }
        _emit_bills_event(self, context, "approved", result.get("approved"), self.bill_job_id, period)
        return result


class M3terLockBillsOperator(M3terAssetEventsMixin, M3terHookMixin, BaseOperator):
    """Lock approved m3ter Bills (given ids, or the Bills of a bill job); a locked Bill is skipped.

    A PENDING Bill fails the task before anything is locked: approve it first. Returns
    ``{"locked": [...], "already_locked": [...]}``.

    :param bill_ids: the Bill ids (a list, an XCom, or comma-separated). (templated)
    :param bill_job_id: lock the Bills this bill job produced. (templated)
    :param bool emit_asset_events: when Bills were locked, emit an asset event for
        ``m3ter://<org id>/bills`` through the ``m3ter/bills`` alias outlet, ``extra``
        ``{"action": "locked", "locked", "bill_ids" (the first 20), "bill_job_id"}``; none when
        nothing changed. Default True.
    :param m3ter_conn_id: the m3ter connection id.
    """

    asset_event_kind = "bills"
    template_fields: Sequence[str] = ("bill_ids", "bill_job_id")

    def __init__(
        self,
        *,
        bill_ids: Any = None,
        bill_job_id: str | None = None,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if bool(bill_ids) == bool(bill_job_id):
            raise M3terConfigError("M3terLockBillsOperator: give bill_ids or bill_job_id, one of them.")
        self.bill_ids = bill_ids
        self.bill_job_id = bill_job_id
        self.m3ter_conn_id = m3ter_conn_id

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        result = self.hook.lock_bills(_bill_ids(self.hook, self.bill_ids, self.bill_job_id))
        _emit_bills_event(self, context, "locked", result.get("locked"), self.bill_job_id, {})
        return result


class M3terRecalculateBillsOperator(M3terJobOperatorBase):
    """Recalculate Bills after usage was corrected: a RECALCULATE bill job, waited for (or deferred).

    Locked Bills cannot be recalculated: one fails the task before the job starts. When the job is
    ``COMPLETE`` the Bills are PENDING again (approve them again). A retry follows the job an
    earlier try started (as :class:`~m3ter_provider.operators.m3ter.M3terBillJobOperator` does).
    Returns ``{"job_id", "bill_job_id", "status", "bill_ids"}``.

    :param bill_ids: the Bill ids, 1 to 100 (a list, an XCom, or comma-separated). (templated)
    :param bool wait_for_completion: wait for the job; else return once it is created.
    :param float poll_interval: seconds between two polls of the job.
    :param float timeout: seconds to wait at most (``None``: no limit).
    :param bool deferrable: hand the wait to the triggerer (default ``[operators] default_deferrable``).
    :param str m3ter_conn_id: the m3ter connection id.
    """

    job_kind = BILL_JOB
    record_tries = True
    template_fields: Sequence[str] = ("bill_ids",)

    def __init__(self, *, bill_ids: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bill_ids = bill_ids
        if not templated(bill_ids) and not as_id_list(bill_ids, "bill_ids"):
            raise M3terConfigError(
                "M3terRecalculateBillsOperator: bill_ids is empty: give the Bills to recalculate."
            )

    def _request(self) -> Any:
        return sorted(as_id_list(self.bill_ids, "bill_ids") or [])

    def _start_job(self, context: Context) -> str:
        return str(self.hook.start_recalculation(as_id_list(self.bill_ids, "bill_ids") or [])["id"])

    def _summary(self, context: Context, job_id: str, job: dict[str, Any]) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "bill_job_id": job_id,
            "status": self.job_kind.status(job),
            "bill_ids": [str(i) for i in job.get("billIds") or []],
        }


def _emit_bills_event(
    operator: Any, context: Context, action: str, changed: Any, bill_job_id: Any, more: dict[str, Any]
) -> None:
    """One ``m3ter://<org id>/bills`` event when ``changed`` (the Bill ids) is not empty."""
    changed = list(changed or [])
    if not changed:
        return
    from m3ter_provider.assets import bills_asset

    extra = {
        "action": action,
        action: len(changed),
        "bill_ids": capped_ids(changed),
        "bill_job_id": str(bill_job_id) if bill_job_id else None,
        **more,
    }
    operator.emit_asset_event(context, bills_asset(operator.hook.org_id), extra)


def _bill_ids(hook: M3terHook, bill_ids: Any, bill_job_id: Any) -> list[str]:
    if bill_job_id:
        return [str(bill["id"]) for bill in hook.list_bills(bill_job_id=str(bill_job_id))]
    return as_id_list(bill_ids, "bill_ids") or []  # rendered empty (a bill job with no bills): nothing to do
