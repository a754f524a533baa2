"""Month-end: customers synced from a table, last month's usage loaded and reconciled, bills run,
approved by a person, locked, and their statements downloaded.

1. ``crm_tables`` stands in for your CRM/warehouse: it writes a SQLite file with a ``customers`` and
   a ``usage`` table (sample rows for last month). Point ``CRM_CONN_ID`` at your own database instead.
2. ``sync_accounts`` (``M3terSyncAccountsOperator``) creates or updates the Accounts and attaches the
   Plan from the customers table; a re-run writes nothing.
3. ``load_usage`` (``SqlToM3terMeasurementsOperator``) sends last month's usage rows straight from the
   table; ``query_usage`` (``M3terUsageQueryOperator``) writes m3ter's usage for the month to a file,
   and ``reconcile`` checks m3ter counted each row.
4. ``run_bill_job`` bills last month; ``approval`` waits for a person (Airflow 3.1+'s
   human-in-the-loop ``ApprovalOperator``: answer it under *Required actions* in the UI or through
   the REST API; "Reject" skips the rest). On older Airflow the step is skipped and says why.
5. ``approve_bills`` and ``lock_bills`` approve and lock the bills; ``statements`` downloads their
   JSON and CSV statements under ``$M3TER_DEMO_OUTPUT/example_m3ter_month_end/<run id>/``.

Needs the ``m3ter_default`` connection and ``apache-airflow-providers-sqlite``. Environment
(optional): ``M3TER_DEMO_OUTPUT``, ``M3TER_DEMO_POLL_INTERVAL``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import tempfile

from airflow.providers.common.compat.sdk import DAG, task

from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators.accounts import M3terSyncAccountsOperator
from m3ter_provider.operators.bills import M3terApproveBillsOperator, M3terLockBillsOperator
from m3ter_provider.operators.m3ter import M3terBillJobOperator
from m3ter_provider.operators.statements import M3terStatementsOperator
from m3ter_provider.operators.warehouse import M3terUsageQueryOperator
from m3ter_provider.transfers.sql_to_m3ter import SqlToM3terMeasurementsOperator

try:  # Airflow 3.1+: the standard provider's human-in-the-loop operators
    from airflow.providers.standard.operators.hitl import ApprovalOperator
except ImportError:  # older Airflow: the approval step is skipped
    ApprovalOperator = None

OUTPUT_DIR = os.environ.get("M3TER_DEMO_OUTPUT", os.path.join(tempfile.gettempdir(), "m3ter-examples"))
POLL_INTERVAL = float(os.environ.get("M3TER_DEMO_POLL_INTERVAL", "5"))
CRM_FILE = os.path.join(OUTPUT_DIR, "example_m3ter_month_end", "crm.sqlite")
CRM_CONN_ID = "m3ter_example_crm"
# The example's own SQLite "CRM", a connection defined by this file wherever it is parsed (the task
# processes too), always for this parse's CRM_FILE. Your DAG names its warehouse connection instead.
os.environ[f"AIRFLOW_CONN_{CRM_CONN_ID.upper()}"] = json.dumps({"conn_type": "sqlite", "host": CRM_FILE})
PLAN_CODE = "example-month-end-standard"
METER_CODE = "api_calls"
CUSTOMERS = [  # code, name, e-mail
    ("example-me-acme", "Acme (example)", "billing@acme.example"),
    ("example-me-globex", "Globex (example)", "ap@globex.example"),
    ("example-me-initech", "Initech (example)", "finance@initech.example"),
]
BILLS = "{{ ti.xcom_pull(task_ids='run_bill_job')['bill_ids'] }}"


def last_month(today: dt.date | None = None) -> tuple[dt.date, dt.date]:
    """The first and the last day of the month before ``today``."""
    first_of_this = (today or dt.datetime.now(dt.timezone.utc).date()).replace(day=1)
    last = first_of_this - dt.timedelta(days=1)
    return last.replace(day=1), last


with DAG(
    dag_id="example_m3ter_month_end",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
    doc_md=__doc__,
):

    @task
    def crm_tables() -> str:
        """Write the sample CRM: ``customers`` (with their Plan) and last month's ``usage``."""
        first, _ = last_month()
        os.makedirs(os.path.dirname(CRM_FILE), exist_ok=True)
        with sqlite3.connect(CRM_FILE) as db:
            db.execute("drop table if exists customers")
            db.execute("drop table if exists usage")
            db.execute(
                "create table customers (code text, name text, emailAddress text, currency text, "
                "plan_code text, plan_start_date text)"
            )
            db.executemany(
                "insert into customers values (?, ?, ?, 'USD', ?, ?)",
                [(code, name, email, PLAN_CODE, first.isoformat()) for code, name, email in CUSTOMERS],
            )
            db.execute("create table usage (account text, ts text, calls real)")
            db.executemany(
                "insert into usage values (?, ?, ?)",
                [
                    (code, f"{first + dt.timedelta(days=day):%Y-%m-%d}T12:00:00Z", 100.0 * (n + 1) + day)
                    for n, (code, _, _) in enumerate(CUSTOMERS)
                    for day in range(10)
                ],
            )
        return CRM_FILE

    @task
    def ensure_catalog() -> str:
        """The Meter and the Plan the customers are on (found by code, else created)."""
        hook = M3terHook()
        if not hook.get("meters", params={"codes": [METER_CODE]})["data"]:
            hook.post("meters", json={"code": METER_CODE, "name": "API calls", "derivedFields": [],
                      "dataFields": [{"category": "MEASURE", "code": "calls", "name": "Calls"}]})  # fmt: skip
        plans = [p for p in hook.paginate("plans") if p.get("code") == PLAN_CODE]
        if plans:
            return plans[0]["id"]
        product = hook.post("products", json={"code": "example-month-end", "name": "Month-end example"})
        template = hook.post(
            "plantemplates",
            json={"name": "Monthly (example)", "productId": product["id"], "currency": "USD",
                  "billFrequency": "MONTHLY", "standingCharge": 0},
        )  # fmt: skip
        plan = {"code": PLAN_CODE, "name": "Standard (example)", "planTemplateId": template["id"]}
        return hook.post("plans", json=plan)["id"]

    sync_accounts = M3terSyncAccountsOperator(
        task_id="sync_accounts",
        sql="select code, name, emailAddress, currency, plan_code, plan_start_date from customers",
        sql_conn_id=CRM_CONN_ID,
    )

    # last month's usage, each row counted once: the uids derive from the month (and the rows), so a
    # retry, a cleared task or another run for the same month re-sends the same uids
    load_usage = SqlToM3terMeasurementsOperator(
        task_id="load_usage",
        sql_conn_id=CRM_CONN_ID,
        sql="select account, 'api_calls' as meter, ts, calls as \"measure.calls\" from usage",
        uid_namespace="example_m3ter_month_end:{{ ti.xcom_pull(task_ids='period', key='month') }}",
    )

    usage_in_m3ter = M3terUsageQueryOperator(
        task_id="query_usage",
        destination=os.path.join(OUTPUT_DIR, "{{ dag.dag_id }}", "{{ run_id }}", "usage.jsonl"),
        query_start="{{ ti.xcom_pull(task_ids='period', key='first_day') }}T00:00:00Z",
        query_end="{{ ti.xcom_pull(task_ids='period', key='bill_date') }}T00:00:00Z",
    )

    @task
    def reconcile(loaded: dict, queried: dict) -> dict:
        """m3ter's usage for last month equals what the table holds, or the month stops here."""
        customers = {code for code, _, _ in CUSTOMERS}
        with open(queried["destination"]) as lines:
            counted = sum(1 for line in lines if json.loads(line).get("account") in customers)
        if counted != loaded["measurements"]:
            raise ValueError(
                f"m3ter holds {counted} measurements for last month, the table {loaded['measurements']}."
            )
        return {"measurements_in_m3ter": counted}

    @task(multiple_outputs=True)
    def period() -> dict:
        first, last = last_month()
        return {
            "bill_date": (last + dt.timedelta(days=1)).isoformat(),
            "last_day": last.isoformat(),
            "first_day": first.isoformat(),
            "month": f"{first:%Y-%m}",
        }

    bill_job = M3terBillJobOperator(
        task_id="run_bill_job",
        bill_date="{{ ti.xcom_pull(task_ids='period', key='bill_date') }}",
        last_date_in_billing_period="{{ ti.xcom_pull(task_ids='period', key='last_day') }}",
        billing_frequency="MONTHLY",
        poll_interval=POLL_INTERVAL,
        timeout=3600,
    )

    if ApprovalOperator is not None:
        approval = ApprovalOperator(
            task_id="approval",
            subject="Approve last month's m3ter bills",
            body="Bill job {{ ti.xcom_pull(task_ids='run_bill_job')['bill_job_id'] }} produced "
            "{{ ti.xcom_pull(task_ids='run_bill_job')['bill_ids'] | length }} bills. Check them in the "
            "m3ter Console, then approve (they are approved, locked and their statements produced) "
            "or reject (nothing more happens).",
            ignore_downstream_trigger_rules=True,  # "Reject" skips every later step
        )
    else:

        @task(task_id="approval")
        def approval_not_available() -> None:
            """Airflow before 3.1 has no human-in-the-loop operator: the step is skipped."""
            from airflow.providers.common.compat.sdk import AirflowSkipException

            raise AirflowSkipException(
                "Airflow before 3.1 has no human-in-the-loop operator: no one is asked to approve the bills."
            )

        approval = approval_not_available()

    approve = M3terApproveBillsOperator(task_id="approve_bills", bill_ids=BILLS, trigger_rule="none_failed")
    lock = M3terLockBillsOperator(task_id="lock_bills", bill_ids=BILLS)
    statements = M3terStatementsOperator(
        task_id="statements",
        bill_ids=BILLS,
        destination=os.path.join(OUTPUT_DIR, "{{ dag.dag_id }}", "{{ run_id }}", "statements"),
        formats=["JSON", "CSV"],
        poll_interval=POLL_INTERVAL,
    )

    crm = crm_tables()
    catalog = ensure_catalog()
    month = period()
    [crm, catalog] >> sync_accounts >> month >> load_usage >> usage_in_m3ter
    (
        reconcile(load_usage.output, usage_in_m3ter.output)
        >> bill_job
        >> approval
        >> approve
        >> lock
        >> statements
    )
