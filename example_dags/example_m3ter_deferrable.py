"""Deferrable waits: an export that defers to the triggerer, and a deferrable sensor on another export.

While m3ter works, the tasks free their worker slots: the triggerer polls m3ter (asynchronously, with
the provider's cached token) and resumes the task when the job is done. Needs only the
``m3ter_default`` connection and a running triggerer (``airflow triggerer``; ``airflow dags test``
runs triggers in-process).

Environment (optional): ``M3TER_DEMO_OUTPUT`` where files are downloaded,
``M3TER_DEMO_POLL_INTERVAL`` seconds between job polls.
"""

from __future__ import annotations

import datetime as dt
import json
import os

from airflow.providers.common.compat.sdk import DAG, task
from m3ter_example_helpers import OUTPUT_DIR, POLL_INTERVAL, ensure_account

from m3ter_provider.operators.m3ter import M3terDataExportOperator, M3terOperator
from m3ter_provider.sensors.m3ter import M3terJobSensor

ACCOUNT_CODE = "example-deferrable-initech"

with DAG(
    dag_id="example_m3ter_deferrable",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
    doc_md=__doc__,
):
    # Something to export: the Account (created once; later runs find it).
    find_account = M3terOperator(
        task_id="find_account",
        endpoint="accounts",
        query_params={"codes": ACCOUNT_CODE},
        response_filter=lambda page: [account["id"] for account in page["data"]],
    )

    account_id = ensure_account(
        ACCOUNT_CODE, "Initech (example)", "it@initech.example", found=find_account.output
    )

    # 1. Start an export without waiting, and let a deferrable sensor wait for it.
    start_meters_export = M3terDataExportOperator(
        task_id="start_meters_export",
        source_type="OPERATIONAL",
        operational_data_types=["METERS", "ACCOUNTS"],
        export_file_format="CSV",
        wait_for_completion=False,
    )
    wait_for_meters_export = M3terJobSensor(
        task_id="wait_for_meters_export",
        kind="dataexport",
        job_id="{{ ti.xcom_pull(task_ids='start_meters_export', key='m3ter_job_id') }}",
        deferrable=True,
        poke_interval=POLL_INTERVAL,
        timeout=3600,
    )

    # 2. The operator itself defers while the export runs, then downloads the file.
    export_accounts = M3terDataExportOperator(
        task_id="export_accounts",
        source_type="OPERATIONAL",
        operational_data_types=["ACCOUNTS"],
        export_file_format="JSONL",
        destination=os.path.join(OUTPUT_DIR, "{{ dag.dag_id }}", "{{ run_id }}", "accounts.jsonl"),
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        timeout=3600,
    )

    @task
    def report(export_result: dict, sensed_job: dict) -> dict:
        with open(export_result["destination"], encoding="utf-8") as handle:
            accounts = [json.loads(line) for line in handle if line.strip()]
        print(f"Export {export_result['job_id']} lists {len(accounts)} accounts.")
        print(f"Export {sensed_job['id']} finished {sensed_job['status']}.")
        return {"accounts": len(accounts), "sensed_status": sensed_job["status"]}

    account_id >> start_meters_export >> wait_for_meters_export >> export_accounts
    report(export_accounts.output, wait_for_meters_export.output)
