"""Billing: run a bill job for last month and fetch the bills it produced.

Needs only the ``m3ter_default`` connection. The DAG finds or creates the Account it bills. On a real
Organization an Account without a Plan gets no charges, so its bill may be empty or missing.

Environment (optional): ``M3TER_DEMO_POLL_INTERVAL`` seconds between job polls.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.providers.common.compat.sdk import DAG, task
from m3ter_example_helpers import POLL_INTERVAL, ensure_account

from m3ter_provider.operators.m3ter import M3terBillJobOperator, M3terOperator

ACCOUNT_CODE = "example-billing-globex"


def summarise_bills(bills: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep what a downstream task needs from each bill (and XCom stays small)."""
    return [
        {
            "id": bill["id"],
            "accountCode": bill.get("accountCode"),
            "billDate": bill.get("billDate"),
            "total": bill.get("billTotal"),
            "currency": bill.get("currency"),
        }
        for bill in bills
    ]


with DAG(
    dag_id="example_m3ter_billing",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
    doc_md=__doc__,
):

    @task(multiple_outputs=True)
    def last_month() -> dict:
        """The bill date (the 1st of this month) and the last day of last month."""
        first = dt.datetime.now(dt.timezone.utc).date().replace(day=1)
        return {"bill_date": first.isoformat(), "last_day": (first - dt.timedelta(days=1)).isoformat()}

    account_id = ensure_account(ACCOUNT_CODE, "Globex (example)", "ap@globex.example")
    period = last_month()

    bill_job = M3terBillJobOperator(
        task_id="run_bill_job",
        account_ids="{{ ti.xcom_pull(task_ids='ensure_account') }}",
        bill_date="{{ ti.xcom_pull(task_ids='last_month', key='bill_date') }}",
        last_date_in_billing_period="{{ ti.xcom_pull(task_ids='last_month', key='last_day') }}",
        billing_frequency="MONTHLY",
        poll_interval=POLL_INTERVAL,
        timeout=3600,
    )

    fetch_bills = M3terOperator(
        task_id="fetch_bills",
        endpoint="bills",
        query_params={"billJobId": "{{ ti.xcom_pull(task_ids='run_bill_job')['bill_job_id'] }}"},
        paginate=True,
        page_size=100,
        response_filter=summarise_bills,
    )

    [account_id, period] >> bill_job >> fetch_bills
