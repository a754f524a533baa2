"""Usage pipeline: build measurements, send them to m3ter, export the usage back and download it.

Needs only the ``m3ter_default`` connection (the local emulator or a real m3ter Organization). The
DAG finds or creates the Account and Meter it uses, so it runs on an empty Organization. On a real
Organization m3ter ingests asynchronously: an export run seconds after the upload may not hold every
measurement yet.

m3ter answers 200 for a batch and validates its measurements afterwards (an unknown Meter, a missing
Data Field...): the submit task reads back the ``ingest.validation.failure`` Events for the uids it
sent (``check_ingest_failures``) and fails if any measurement was refused, so no usage is lost
silently; its result says how many were ``rejected``.

Environment (optional): ``M3TER_DEMO_OUTPUT`` where files are downloaded (default: a folder
under the system temp directory), ``M3TER_DEMO_POLL_INTERVAL`` seconds between job polls,
``M3TER_DEMO_INGEST_WAIT`` seconds to wait for m3ter's ingest validation (default 60).
"""

from __future__ import annotations

import csv
import datetime as dt
import os

from airflow.providers.common.compat.sdk import DAG, task
from m3ter_example_helpers import OUTPUT_DIR, POLL_INTERVAL, ensure_account, ensure_meter

from m3ter_provider.operators.m3ter import M3terDataExportOperator, M3terSubmitMeasurementsOperator

ACCOUNT_CODE = "example-acme"
METER_CODE = "example_api_calls"
MEASUREMENTS = 60
INGEST_WAIT = float(os.environ.get("M3TER_DEMO_INGEST_WAIT", "60"))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


with DAG(
    dag_id="example_m3ter_usage_pipeline",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
    doc_md=__doc__,
):

    @task(multiple_outputs=True)
    def build_measurements() -> dict:
        """The last hour's API calls, one measurement a minute, and the window to export."""
        now = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
        measurements = [
            {
                "account": ACCOUNT_CODE,
                "meter": METER_CODE,
                "ts": _iso(now - dt.timedelta(minutes=minute)),
                "measure": {"calls": float(100 + minute)},
                "where": {"region": "eu-west-1" if minute % 2 else "us-east-1"},
            }
            for minute in range(MEASUREMENTS)
        ]
        return {
            "measurements": measurements,
            "start_date": _iso(now - dt.timedelta(hours=2)),
            "end_date": _iso(now + dt.timedelta(minutes=1)),
        }

    account_id = ensure_account(ACCOUNT_CODE, "Acme (example)", "billing@acme.example")
    meter_id = ensure_meter(
        METER_CODE,
        "API calls (example)",
        [
            {"category": "MEASURE", "code": "calls", "name": "Calls", "unit": "{call}"},
            {"category": "WHERE", "code": "region", "name": "Region"},
        ],
    )
    built = build_measurements()

    submit = M3terSubmitMeasurementsOperator(
        task_id="submit_measurements",
        measurements=built["measurements"],
        check_ingest_failures="fail",  # or "warn"; "off" (the default) trusts the 200s
        ingest_failures_wait=INGEST_WAIT,
    )

    export = M3terDataExportOperator(
        task_id="export_usage",
        source_type="USAGE",
        export_start_date="{{ ti.xcom_pull(task_ids='build_measurements', key='start_date') }}",
        export_end_date="{{ ti.xcom_pull(task_ids='build_measurements', key='end_date') }}",
        account_ids="{{ ti.xcom_pull(task_ids='ensure_account') }}",
        meter_ids="{{ ti.xcom_pull(task_ids='ensure_meter') }}",
        export_file_format="CSV",
        destination=os.path.join(OUTPUT_DIR, "{{ dag.dag_id }}", "{{ run_id }}", "usage.csv"),
        poll_interval=POLL_INTERVAL,
        timeout=3600,
    )

    @task
    def report(export_result: dict) -> dict:
        """Read the downloaded export back and say how much usage it holds."""
        with open(export_result["destination"], newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        print(f"Export {export_result['job_id']} holds {len(rows)} measurements.")
        return {"rows": len(rows), "destination": export_result["destination"]}

    [account_id, meter_id] >> submit
    submit >> export
    report(export.output)
