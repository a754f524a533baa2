"""Test-only DAG: a ``@task`` calls ``M3terHook().submit_measurements(rows)`` (no namespace) and fails
after sending; Airflow retries it. The retry must re-send the same uids (m3ter stores each row once).

``M3TER_TEST_ROWS`` rows (default 2,500); ``M3TER_TEST_CALLS`` calls per try (default 1), each with
the same rows: identical rows in two calls are two events.
"""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.common.compat.sdk import DAG, get_current_context, task


def rows(count: int) -> list[dict]:
    row = {"account": "acme", "meter": "api_calls", "ts": "2026-01-01T00:00:00Z"}
    return [{**row, "measure": {"calls": float(i)}} for i in range(count)]


with DAG(
    "m3ter_hook_retry",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "test"],
) as dag:

    @task(retries=1, retry_delay=dt.timedelta(0))
    def push() -> None:
        from m3ter_provider.hooks.m3ter import M3terHook

        hook = M3terHook()
        for _ in range(int(os.environ.get("M3TER_TEST_CALLS", "1"))):
            hook.submit_measurements(rows(int(os.environ.get("M3TER_TEST_ROWS", "2500"))))
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("the task fails after sending (a later step of it, say)")

    push()
