"""Test-only DAG: a bill job whose first try gives up waiting, run as on Airflow below 3.3.

The operator is told there is no task state store (as on Airflow 2.11 to 3.2), so its retry must
find the bill job through the Airflow Variable the first try wrote, inside a real task run.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.providers.common.compat.sdk import DAG

from m3ter_provider.operators.m3ter import M3terBillJobOperator


class BillJobWithoutTaskStateStore(M3terBillJobOperator):
    """As below Airflow 3.3: no task state store; the first try stops waiting after 0.2 s."""

    def execute(self, context: Any) -> dict[str, Any]:
        self.timeout = 0.2 if context["ti"].try_number == 1 else None
        return super().execute({k: v for k, v in context.items() if k != "task_state_store"})


with DAG(
    "m3ter_bill_job_retry",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "test"],
) as dag:
    BillJobWithoutTaskStateStore(
        task_id="bill",
        account_ids=os.environ.get("M3TER_TEST_ACCOUNT_IDS", "[]"),
        bill_date="2026-02-01",
        poll_interval=0.05,
        retries=1,
        retry_delay=dt.timedelta(0),
    )
