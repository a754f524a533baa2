"""A DAG whose submit task emits m3ter:// asset events (tests/dags/test_asset_events_dag.py runs it)."""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import DAG

from m3ter_provider.operators.m3ter import M3terSubmitMeasurementsOperator

with DAG("m3ter_asset_producer", schedule=None, start_date=dt.datetime(2026, 1, 1), catchup=False) as dag:
    M3terSubmitMeasurementsOperator(
        task_id="push_usage",
        measurements=[
            {
                "account": "acme",
                "meter": "api_calls",
                "ts": f"2026-01-01T00:00:0{i}Z",
                "measure": {"calls": 1.0},
            }
            for i in range(3)
        ],
    )
