"""Event-driven: a bill approved in m3ter starts this DAG, which downloads the bill.

The asset ``m3ter://<org id>/bills`` is watched by an ``AssetWatcher`` whose
``M3terEventTrigger`` polls m3ter's Events API for ``billing.bill.updated``: each new Event makes
one asset event, and so one run of this DAG (Airflow 3). The task reads the Event from the
triggering asset event, and when the bill's new status is ``APPROVED`` writes the bill to
``<M3TER_BILLS_DIR>/<bill id>.json`` (default ``~/m3ter-bills``). A run started by hand can name a
bill with the ``bill_id`` param.

Set ``M3TER_ORG_ID`` (the connection's Organization id) where the DAG is parsed. On Airflow 2.11,
which has no event-driven scheduling, the DAG runs only by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib

from airflow.providers.common.compat.sdk import DAG, task

from m3ter_provider.assets import bills_asset

ORG_ID = os.environ.get("M3TER_ORG_ID", "my-org-id")
BILLS_DIR = os.environ.get("M3TER_BILLS_DIR") or os.path.join(os.path.expanduser("~"), "m3ter-bills")

try:  # Airflow 3: watch m3ter's Events
    from airflow.sdk import Asset, AssetWatcher

    from m3ter_provider.triggers.events import M3terEventTrigger

    BILLS = Asset(
        bills_asset(ORG_ID).uri,
        watchers=[
            AssetWatcher(
                name="m3ter_bill_updated",
                trigger=M3terEventTrigger(event_name="billing.bill.updated", poll_interval=30),
            )
        ],
    )
    SCHEDULE: list | None = [BILLS]
except ImportError:  # Airflow 2.11
    SCHEDULE = None


with DAG(
    dag_id="example_m3ter_bill_events",
    schedule=SCHEDULE,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
    params={"bill_id": None},
    doc_md=__doc__,
) as dag:

    @task
    def download_approved_bill(
        params: dict | None = None, triggering_asset_events: dict | None = None
    ) -> dict:
        """Write the approved bill the m3ter Event names (or the ``bill_id`` param) to a JSON file."""
        from m3ter_provider.hooks.m3ter import M3terHook

        bill_ids = [(params or {}).get("bill_id")] if (params or {}).get("bill_id") else []
        for events in (triggering_asset_events or {}).values():
            for asset_event in events:
                m3ter_event = ((asset_event.extra or {}).get("payload") or {}).get("event") or {}
                bill = (m3ter_event.get("m3terEvent") or {}).get("eventData", {}).get("newDto") or {}
                if bill.get("status") == "APPROVED" and bill.get("id"):
                    bill_ids.append(bill["id"])
        hook = M3terHook()
        written = []
        for bill_id in bill_ids:
            bill = hook.get(f"bills/{bill_id}")
            path = pathlib.Path(BILLS_DIR) / f"{bill_id}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(bill, indent=2))
            print(f"Bill {bill_id} ({bill.get('status')}) written to {path}.")
            written.append(str(path))
        return {"bills": len(written), "paths": written}

    download_approved_bill()
