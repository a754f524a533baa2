"""Test-only DAG: a task reads an m3ter connection stored in the metadata DB and tests it."""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import DAG, task

from m3ter_provider.hooks.m3ter import M3terHook

with DAG(
    "m3ter_db_connection_check",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "test"],
) as dag:

    @task
    def check_connection() -> str:
        ok, message = M3terHook(m3ter_conn_id="m3ter_from_db").test_connection()
        if not ok:
            raise RuntimeError(message)
        return message

    check_connection()
