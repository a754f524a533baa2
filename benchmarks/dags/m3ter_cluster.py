"""DAGs of the Celery cluster benchmark and test (benchmarks/celery_cluster.py).

``m3ter_cluster_deferrable``: a data export and a bill job, each handed to the triggerer while m3ter
works; the benchmark restarts the triggerer while both wait, and checks that both finish and that
m3ter saw each job started once. ``M3TER_CLUSTER_OUTPUT`` is where the export lands.

``m3ter_cluster_assets``, run once before the loads, emits one event for the asset the mapped-ingest
example's tasks emit events for through the ``m3ter/usage`` alias. Without it, the first run's
parallel ``ingest_slice`` tasks each make Airflow create that asset, and link it to the alias, as
they finish; on PostgreSQL two such inserts at once break a unique index (seen: ``asset``'s
``idx_asset_name_uri_unique``) and Airflow (3.3.2) sets the losing task to failed, without a retry,
though m3ter accepted all its measurements.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile

from airflow.providers.common.compat.sdk import DAG, Asset, AssetAlias, task

from m3ter_provider.operators.m3ter import M3terBillJobOperator, M3terDataExportOperator

#: what the mapped-ingest example's ingest tasks emit events for, through the alias
USAGE_ASSET = Asset("m3ter://emulator-org/meters/example_mapped_requests")
USAGE_ALIAS = AssetAlias("m3ter/usage")
OUTPUT = os.environ.get("M3TER_CLUSTER_OUTPUT", os.path.join(tempfile.gettempdir(), "m3ter-cluster"))

with DAG(
    dag_id="m3ter_cluster_deferrable",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "benchmark"],
):
    M3terDataExportOperator(
        task_id="export_accounts",
        source_type="OPERATIONAL",
        operational_data_types=["ACCOUNTS"],
        export_file_format="JSONL",
        destination=os.path.join(OUTPUT, "{{ run_id }}", "accounts.jsonl"),
        deferrable=True,
        poll_interval=2,
        timeout=900,
    )
    M3terBillJobOperator(
        task_id="run_bill_job",
        bill_date="2026-12-01",
        last_date_in_billing_period="2026-11-30",
        billing_frequency="MONTHLY",
        deferrable=True,
        poll_interval=2,
        timeout=900,
    )

with DAG(
    dag_id="m3ter_cluster_assets",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "benchmark"],
):

    @task(outlets=[USAGE_ASSET, USAGE_ALIAS])
    def link_usage_asset(*, outlet_events=None) -> None:
        """One event for the Meter's asset through the alias, so the asset and its link to the alias
        exist before parallel tasks emit theirs."""
        outlet_events[USAGE_ALIAS].add(USAGE_ASSET, extra={"warm_up": True})

    link_usage_asset()
