"""The hook from plain Python tasks: list the Organization's Accounts, then create one.

Needs only the ``m3ter_default`` connection. The new Account's code is derived from the run id, so a
retried task finds the Account it already created instead of making a second one.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from airflow.providers.common.compat.sdk import DAG, task

from m3ter_provider.hooks.m3ter import M3terHook

with DAG(
    dag_id="example_m3ter_hook",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
    doc_md=__doc__,
):

    @task
    def list_accounts() -> list[str]:
        """Every Account code in the Organization (all pages, 100 at a time)."""
        codes = [account["code"] for account in M3terHook().paginate("accounts", page_size=100)]
        print(f"The Organization has {len(codes)} accounts.")
        return codes

    @task
    def create_account(existing_codes: list[str], run_id: str | None = None) -> str:
        """Create an Account for this run, unless an earlier try of this task already did."""
        hook = M3terHook()
        code = "example-hook-" + hashlib.sha256(str(run_id).encode()).hexdigest()[:12]
        found = hook.get("accounts", params={"codes": [code]})["data"]
        if found:
            print(f"Account {code} exists already (an earlier try made it): {found[0]['id']}.")
            return found[0]["id"]
        account = hook.post(
            "accounts",
            json={"code": code, "name": f"Example account {code}", "emailAddress": "ops@example.com"},
        )
        print(f"Created account {code} ({len(existing_codes) + 1} accounts now): {account['id']}.")
        return account["id"]

    @task
    def read_account(account_id: str) -> dict:
        """Read the Account back by id."""
        account = M3terHook().get(f"accounts/{account_id}")
        return {"id": account["id"], "code": account["code"], "name": account["name"]}

    read_account(create_account(list_accounts()))
