"""From the warehouse into m3ter and back: a SQL table is loaded as measurements, m3ter's usage is
queried back to a file, and the totals per Account are compared with the warehouse's.

The warehouse here is a SQLite file the DAG fills itself (the Airflow connection
``m3ter_example_warehouse`` points at it); point ``sql_conn_id`` at your own warehouse connection
(PostgreSQL, Snowflake, BigQuery, Redshift: any ``common.sql`` connection) instead. Each run loads
its own rows (its ``run_id`` is a column), stamped within the hour the run started, and reconciles
that hour.

On a real Organization m3ter ingests asynchronously: a usage query run seconds after the load may
not see every measurement yet (the ``compare`` task then fails and its retry compares again).

Needs the ``sql`` extra (``apache-airflow-providers-common-sql``) and the SQLite provider.
Environment (optional): ``M3TER_DEMO_OUTPUT`` where files are written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import tempfile

from airflow.providers.common.compat.sdk import DAG, task

from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators.warehouse import M3terUsageQueryOperator
from m3ter_provider.transfers.sql_to_m3ter import SqlToM3terMeasurementsOperator

METER_CODE = "example_warehouse_calls"
ROWS = 1_000
OUTPUT_DIR = os.environ.get("M3TER_DEMO_OUTPUT", os.path.join(tempfile.gettempdir(), "m3ter-examples"))
WAREHOUSE = os.path.join(OUTPUT_DIR, "example-warehouse.db")
# the example's own warehouse connection (yours lives in Airflow's connections)
os.environ["AIRFLOW_CONN_M3TER_EXAMPLE_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": WAREHOUSE})

with DAG(
    dag_id="example_m3ter_warehouse",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
    doc_md=__doc__,
):

    @task
    def ensure_meter() -> str:
        """Find the example Meter by code, or create it (a measure ``calls``, a dimension ``region``)."""
        hook = M3terHook()
        found = hook.get("meters", params={"codes": [METER_CODE]})["data"]
        if found:
            return found[0]["id"]
        meter = {
            "code": METER_CODE,
            "name": "API calls (warehouse example)",
            "dataFields": [
                {"category": "MEASURE", "code": "calls", "name": "Calls", "unit": "{call}"},
                {"category": "WHERE", "code": "region", "name": "Region"},
            ],
            "derivedFields": [],
        }
        return hook.post("meters", json=meter)["id"]

    @task
    def fill_warehouse(run_id: str | None = None) -> dict:
        """This run's usage rows in the warehouse table; return the hour they lie in."""
        start = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
        os.makedirs(OUTPUT_DIR, exist_ok=True)
        with sqlite3.connect(WAREHOUSE) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS api_usage (run_id TEXT, customer TEXT, region TEXT, "
                "calls INTEGER, used_at TEXT)"
            )
            db.executemany(
                "INSERT INTO api_usage VALUES (?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        f"example-wh-{i % 4}",
                        "eu" if i % 3 else "us",
                        1 + i % 17,
                        (start + dt.timedelta(seconds=i * 3)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    )
                    for i in range(ROWS)
                ],
            )
        end = start + dt.timedelta(hours=1)
        return {"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"), "end": end.strftime("%Y-%m-%dT%H:%M:%SZ")}

    meter_id = ensure_meter()
    window = fill_warehouse()

    load = SqlToM3terMeasurementsOperator(
        task_id="load_usage",
        sql_conn_id="m3ter_example_warehouse",
        sql="SELECT customer, 'example_warehouse_calls' AS meter, used_at, calls, region "
        "FROM api_usage WHERE run_id = :run_id",
        parameters={"run_id": "{{ run_id }}"},
        column_mapping={
            "customer": "account",
            "used_at": "ts",
            "calls": "measure.calls",
            "region": "where.region",
        },
        fetch_size=250,
    )

    query = M3terUsageQueryOperator(
        task_id="query_usage",
        destination=os.path.join(OUTPUT_DIR, "usage-{{ ts_nodash }}.jsonl"),
        query_start="{{ ti.xcom_pull('fill_warehouse')['start'] }}",
        query_end="{{ ti.xcom_pull('fill_warehouse')['end'] }}",
        meter_ids="{{ ti.xcom_pull('ensure_meter') }}",
    )

    @task
    def compare(result: dict, run_id: str | None = None) -> dict:
        """Totals per Account in m3ter's answer against the warehouse's; fail on any difference."""
        with sqlite3.connect(WAREHOUSE) as db:
            warehouse = dict(
                db.execute(
                    "SELECT customer, SUM(calls) FROM api_usage WHERE run_id = ? GROUP BY customer", (run_id,)
                ).fetchall()
            )
        m3ter: dict[str, float] = {}
        with open(result["destination"]) as lines:
            for line in lines:
                item = json.loads(line)
                m3ter[item["account"]] = m3ter.get(item["account"], 0.0) + item["measure"]["calls"]
        differences = {
            account: (warehouse.get(account), m3ter.get(account))
            for account in warehouse.keys() | m3ter.keys()
            if float(warehouse.get(account) or 0) != m3ter.get(account, 0.0)
        }
        if differences:
            raise ValueError(f"m3ter and the warehouse differ (warehouse, m3ter): {differences}")
        return {
            "accounts": len(warehouse),
            "warehouse_total": float(sum(warehouse.values())),
            "m3ter_total": sum(m3ter.values()),
            "rows": result["rows"],
        }

    [meter_id, window] >> load >> query
    compare(query.output)
