"""Test-only DAG: a task with retries=2 whose m3ter call fails. ``M3TER_TEST_FAILURE`` says how:
``invalid`` (a measurement without ``ts``: permanent, one try), ``refused`` (wrong credentials:
permanent), ``unavailable`` (m3ter answers 503: transient, three tries)."""

from __future__ import annotations

import datetime as dt
import os

from airflow.providers.common.compat.sdk import DAG, task

with DAG(
    "m3ter_permanent_error",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "test"],
) as dag:

    @task(retries=2, retry_delay=dt.timedelta(0))
    def push() -> None:
        from m3ter_provider.hooks.m3ter import M3terHook

        row = {"account": "acme", "meter": "api_calls", "ts": "2026-01-01T00:00:00Z"}
        if os.environ.get("M3TER_TEST_FAILURE") == "invalid":
            row.pop("ts")
        M3terHook().submit_measurements([row])

    push()
