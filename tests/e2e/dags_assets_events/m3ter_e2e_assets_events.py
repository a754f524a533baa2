"""DAGs for tests/e2e/test_assets_events.py: an m3ter Events watcher, and an asset producer/consumer."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib

from airflow.sdk import DAG, Asset, AssetWatcher, task

from m3ter_provider.assets import bills_asset, meter_asset
from m3ter_provider.operators.m3ter import M3terSubmitMeasurementsOperator
from m3ter_provider.triggers.events import M3terEventTrigger

ORG = "emulator-org"
OUT = pathlib.Path(os.environ.get("E2E_M3TER_OUT", "/nonexistent"))
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)

bills = Asset(
    bills_asset(ORG).uri,
    watchers=[
        AssetWatcher(
            name="m3ter_e2e_bill_updated",
            trigger=M3terEventTrigger(
                event_name="billing.bill.updated",
                poll_interval=1,
                start_after=os.environ.get("E2E_M3TER_START") or None,
            ),
        )
    ],
)

with DAG("m3ter_e2e_on_bill_event", schedule=[bills], start_date=START, catchup=False):

    @task
    def record(triggering_asset_events=None, run_id=None):
        ids = [
            event.extra["payload"]["event_id"]
            for events in (triggering_asset_events or {}).values()
            for event in events
        ]
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{run_id}.json").write_text(json.dumps(ids))
        return ids

    record()


with DAG("m3ter_e2e_usage_producer", schedule=None, start_date=START, catchup=False):
    M3terSubmitMeasurementsOperator(
        task_id="push",
        measurements=[{"account": "acme", "meter": "api_calls", "ts": "2026-01-01T00:00:00Z"}],
    )

with DAG(
    "m3ter_e2e_usage_consumer", schedule=[meter_asset(ORG, "api_calls")], start_date=START, catchup=False
):

    @task
    def consume(triggering_asset_events=None):
        return [event.extra for events in (triggering_asset_events or {}).values() for event in events]

    consume()
