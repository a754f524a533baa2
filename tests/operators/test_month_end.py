"""Month-end against the emulator over real HTTP: account sync, bill approval and locking,
recalculation, statements; each safe to run again."""

from __future__ import annotations

import json
import sqlite3

import pytest

from m3ter_provider.assets import accounts_asset, bills_asset, statements_asset
from m3ter_provider.errors import M3terError, M3terJobTimeoutError, M3terValidationError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators import _base
from m3ter_provider.operators import accounts as accounts_operator
from m3ter_provider.operators.accounts import M3terSyncAccountsOperator
from m3ter_provider.operators.bills import (
    M3terApproveBillsOperator,
    M3terLockBillsOperator,
    M3terRecalculateBillsOperator,
)
from m3ter_provider.operators.statements import M3terStatementsOperator
from tests.operators.helpers import FakeTaskStateStore, make_context, measurement, run_with_events
from tests.operators.test_job_operators import FakeVariables

ORG = "/organizations/{orgId}"
ORG_ID = "emulator-org"  # the emulator's Organization, in asset URIs
WRITES = (f"POST {ORG}/accounts", f"PUT {ORG}/accounts/{{id}}", f"POST {ORG}/accountplans")


def rows(n: int = 3, **overrides) -> list[dict]:
    return [
        {
            "code": f"cust_{i}",
            "name": f"Customer {i}",
            "emailAddress": f"billing@cust{i}.example",
            "currency": "USD",
            "plan_code": "standard",
            "plan_start_date": "2026-01-01",
            **overrides,
        }
        for i in range(n)
    ]


def writes(emu) -> dict[str, int]:
    requests = emu.stats()["requests"]
    return {route: requests.get(route, 0) for route in WRITES}


@pytest.fixture
def plan(emu) -> dict:
    return emu.seed("plans", [{"code": "standard", "name": "Standard", "planTemplateId": "t" * 36}])[0]


@pytest.fixture
def variables(monkeypatch) -> FakeVariables:
    fake = FakeVariables()
    monkeypatch.setattr(_base, "_variables", lambda: fake)
    return fake


# ---------------------------------------------------------------- accounts
def test_sync_creates_then_a_rerun_writes_nothing(emu, plan):
    hook = M3terHook()
    first = hook.sync_accounts(rows())
    assert (first["created"], first["updated"], first["unchanged"], first["failed"]) == (3, 0, 0, 0)
    assert first["plans_attached"] == 3
    assert sorted(a["code"] for a in emu.entities("accounts")) == ["cust_0", "cust_1", "cust_2"]
    assert {p["planId"] for p in emu.entities("accountplans")} == {plan["id"]}
    before = writes(emu)
    assert before == dict(zip(WRITES, (3, 0, 3), strict=True))

    second = M3terHook().sync_accounts(rows())
    assert (second["created"], second["updated"], second["unchanged"], second["plans_attached"]) == (
        0,
        0,
        3,
        0,
    )
    assert writes(emu) == before  # zero writes counted by the emulator


def test_only_a_changed_given_field_is_updated_and_others_are_kept(emu, plan):
    hook = M3terHook()
    hook.sync_accounts(rows(2))
    changed = rows(2)
    changed[1]["name"] = "Customer One Ltd"
    del changed[0]["currency"]  # not given: kept as m3ter has it, not a change
    summary = hook.sync_accounts(changed)
    assert (summary["updated"], summary["unchanged"]) == (1, 1)
    assert writes(emu)[f"PUT {ORG}/accounts/{{id}}"] == 1
    accounts = {a["code"]: a for a in emu.entities("accounts")}
    assert accounts["cust_1"]["name"] == "Customer One Ltd" and accounts["cust_1"]["version"] == 2
    assert accounts["cust_0"]["currency"] == "USD" and accounts["cust_0"]["version"] == 1


def test_a_stale_version_is_read_again_and_retried_once(emu, plan):
    hook = M3terHook()
    hook.sync_accounts(rows(1))
    emu.add_fault(f"PUT {ORG}/accounts/{{id}}", status=409, times=1)
    summary = hook.sync_accounts(rows(1, name="Renamed"))
    assert summary["updated"] == 1 and summary["failed"] == 0
    assert emu.stats()["statuses"][f"PUT {ORG}/accounts/{{id}}"] == {"409": 1, "200": 1}
    assert emu.entities("accounts")[0]["name"] == "Renamed"


def test_an_account_plan_is_attached_only_when_none_covers_the_date(emu, plan):
    hook = M3terHook()
    hook.sync_accounts(rows(1))
    assert hook.sync_accounts(rows(1, plan_start_date="2026-06-01"))["plans_attached"] == 0  # covered
    ended = emu.entities("accountplans")[0]
    account_id = emu.entities("accounts")[0]["id"]
    hook.put(f"accountplans/{ended['id']}", json={"accountId": account_id, "planId": plan["id"],
             "startDate": ended["startDate"], "endDate": "2026-03-01T00:00:00Z", "version": 1})  # fmt: skip
    assert hook.sync_accounts(rows(1, plan_start_date="2026-06-01"))["plans_attached"] == 1
    assert len(emu.entities("accountplans")) == 2


def test_dry_run_reads_and_writes_nothing(emu, plan):
    summary = M3terHook().sync_accounts(rows(), dry_run=True)
    assert (summary["created"], summary["plans_attached"], summary["dry_run"]) == (3, 3, True)
    assert writes(emu) == dict.fromkeys(WRITES, 0) and emu.entities("accounts") == []


def test_a_bad_row_sends_nothing(emu, plan):
    with pytest.raises(M3terValidationError, match=r"row 2 \(cust_1\): unknown column\(s\) \['colour'\]"):
        M3terHook().sync_accounts([*rows(1), {**rows(2)[1], "colour": "red"}])
    assert emu.stats()["requests_total"] == 0 and emu.stats()["token_exchanges"] == 0


def test_a_row_m3ter_refuses_fails_alone_with_its_reason_and_the_task_fails(emu, plan, tmp_path):
    data = rows(3)
    data[1]["plan_code"] = "no_such_plan"
    data[2] = {"code": "cust_2", "name": "No e-mail"}  # m3ter needs emailAddress to create
    op = M3terSyncAccountsOperator(
        task_id="sync", rows=data, report_path=str(tmp_path / "r" / "report.jsonl")
    )
    with pytest.raises(
        M3terError, match=r"m3ter refused 2 of 3 Account rows \(first: row 2, cust_1: .*no_such_plan"
    ):
        op.execute(make_context(op))
    report = [json.loads(line) for line in (tmp_path / "r" / "report.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in report] == ["created", "failed", "failed"]
    assert "name and emailAddress" in report[2]["reason"]
    lenient = M3terSyncAccountsOperator(task_id="sync", rows=data, fail_on_failed_rows=False, max_failures=1)
    summary = lenient.execute(make_context(lenient))
    assert (summary["unchanged"], summary["created"], summary["failed"], len(summary["failures"])) == (
        1,
        0,
        2,
        1,
    )
    assert [a["code"] for a in emu.entities("accounts")] == ["cust_0"]  # a failed row wrote nothing
    json.dumps(summary)  # a small XCom


def test_rows_from_a_csv_file_and_from_sql(emu, plan, tmp_path, monkeypatch):
    csv_path = tmp_path / "accounts.csv"
    csv_path.write_text(
        "code,name,emailAddress,plan_code,plan_start_date\ncsv_1,From CSV,a@csv.example,standard,2026-01-01\n"
    )
    op = M3terSyncAccountsOperator(task_id="csv", rows=str(csv_path))
    assert op.execute(make_context(op))["created"] == 1
    db = tmp_path / "crm.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table customers (code text, name text, emailAddress text)")
        conn.executemany(
            "insert into customers values (?, ?, ?)",
            [(f"sql_{i}", f"S {i}", f"s{i}@x.example") for i in range(30)],
        )
    monkeypatch.setenv("AIRFLOW_CONN_CRM", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    monkeypatch.setattr(accounts_operator, "SQL_FETCH_SIZE", 7)  # several fetches
    sql = "select code, name, emailAddress from customers where code < 'sql_2'"
    sql_op = M3terSyncAccountsOperator(task_id="sql", sql=sql, sql_conn_id="crm", rate=50)
    summary = sql_op.execute(make_context(sql_op))
    assert summary["rows"] == summary["created"] == 12  # sql_0, sql_1, sql_10 ... sql_19
    assert len(emu.entities("accounts")) == 13


def test_sync_emits_an_accounts_event_only_when_it_changed_something(emu, plan):
    op = M3terSyncAccountsOperator(task_id="sync", rows=rows(), dry_run=True)
    assert run_with_events(op)[1] == {}  # a dry run changes nothing
    op = M3terSyncAccountsOperator(task_id="sync", rows=rows())
    summary, events = run_with_events(op)
    assert events == {
        accounts_asset(ORG_ID).uri: {
            "rows": 3,
            "created": 3,
            "updated": 0,
            "unchanged": 0,
            "failed": 0,
            "plans_attached": 3,
        }
    }
    assert summary["created"] == 3
    assert run_with_events(op)[1] == {}  # the re-run wrote nothing: no event
    changed = rows()
    changed[1]["name"] = "Renamed"
    quiet = M3terSyncAccountsOperator(task_id="sync", rows=changed, emit_asset_events=False)
    assert run_with_events(quiet) == ({**summary, "created": 0, "updated": 1, "unchanged": 2,
                                       "plans_attached": 0}, {})  # fmt: skip
    assert emu.entities("accounts")[1]["name"] == "Renamed"


def test_operator_arguments_are_checked_when_the_dag_is_parsed():
    with pytest.raises(M3terError, match="give rows or sql"):
        M3terSyncAccountsOperator(task_id="x")
    with pytest.raises(M3terError, match="sql needs sql_conn_id"):
        M3terSyncAccountsOperator(task_id="x", sql="select 1")
    with pytest.raises(M3terError, match="at most 50"):
        M3terSyncAccountsOperator(task_id="x", rows=[], rate=80)


# ---------------------------------------------------------------- bills
def billed(emu, n: int = 2) -> tuple[str, list[str]]:
    """n Accounts with January usage, a completed bill job for January: (job id, bill ids)."""
    emu.job_duration = 0
    emu.seed(
        "accounts", [{"code": f"b{i}", "name": f"B{i}", "emailAddress": f"b{i}@x.example"} for i in range(n)]
    )
    hook = M3terHook()
    hook.submit_measurements([measurement(i, account=f"b{i % n}") for i in range(10)], uid_namespace="jan")
    job = hook.start_bill_job({"lastDateInBillingPeriod": "2026-01-31", "billingFrequency": "MONTHLY"})
    done = hook.wait_for_job("billjob", job["id"], poll_interval=0.05)
    return job["id"], hook.get_bill_ids(done)


def test_approve_then_lock_each_safe_to_repeat(emu):
    job_id, bill_ids = billed(emu)
    lock = M3terLockBillsOperator(task_id="lock", bill_job_id=job_id)
    with pytest.raises(M3terValidationError, match="2 bills still PENDING"):
        lock.execute(make_context(lock))
    approve = M3terApproveBillsOperator(task_id="approve", bill_job_id=job_id)
    assert approve.execute(make_context(approve)) == {
        "approved": bill_ids,
        "already_approved": [],
        "locked": [],
    }
    assert approve.execute(make_context(approve)) == {
        "approved": [],
        "already_approved": bill_ids,
        "locked": [],
    }
    assert emu.stats()["requests"][f"POST {ORG}/bills/approve"] == 1  # the retry sent no second approval
    assert lock.execute(make_context(lock)) == {"locked": bill_ids, "already_locked": []}
    assert lock.execute(make_context(lock)) == {"locked": [], "already_locked": bill_ids}
    assert emu.stats()["requests"][f"PUT {ORG}/bills/{{id}}/lock"] == 2
    assert {(b["status"], b["locked"]) for b in emu.entities("bills")} == {("APPROVED", True)}
    assert approve.execute(make_context(approve))["locked"] == bill_ids  # locked: reported, not an error


def test_approve_and_lock_emit_a_bills_event_only_when_bills_changed(emu):
    job_id, bill_ids = billed(emu)
    approve = M3terApproveBillsOperator(task_id="approve", bill_job_id=job_id)
    _, events = run_with_events(approve)
    assert events == {
        bills_asset(ORG_ID).uri: {
            "action": "approved",
            "approved": 2,
            "bill_ids": bill_ids,
            "bill_job_id": job_id,
            "last_date_in_billing_period": None,
            "billing_frequency": None,
        }
    }
    assert run_with_events(approve)[1] == {}  # already approved: nothing changed
    lock = M3terLockBillsOperator(task_id="lock", bill_ids=bill_ids)
    _, events = run_with_events(lock)
    assert events == {
        bills_asset(ORG_ID).uri: {"action": "locked", "locked": 2, "bill_ids": bill_ids, "bill_job_id": None}
    }
    assert run_with_events(lock)[1] == {}


def test_approve_a_whole_billing_period(emu):
    _, bill_ids = billed(emu, 3)
    M3terHook().approve_bills(bill_ids[:1])
    op = M3terApproveBillsOperator(task_id="approve", last_date_in_billing_period="2026-01-31")
    result, events = run_with_events(op)
    assert (result["approved"], result["already_approved"]) == (bill_ids[1:], bill_ids[:1])
    assert result["message"] == "2 Bills approved"
    assert events[bills_asset(ORG_ID).uri] == {
        "action": "approved",
        "approved": 2,
        "bill_ids": bill_ids[1:],
        "bill_job_id": None,
        "last_date_in_billing_period": "2026-01-31",
        "billing_frequency": "MONTHLY",
    }
    again = op.execute(make_context(op))
    assert again["approved"] == [] and again["message"] is None
    assert (
        emu.stats()["requests"][
            f"POST {ORG}/bills/billingperiod/{{lastDateInBillingPeriod}}/{{billingFrequency}}/approve"
        ]
        == 1
    )


def test_recalculation_after_corrected_usage_puts_bills_back_to_pending(emu, variables):
    job_id, bill_ids = billed(emu, 1)
    hook = M3terHook()
    hook.approve_bills(bill_ids)
    hook.submit_measurements([measurement(i, account="b0") for i in range(100, 105)], uid_namespace="late")
    op = M3terRecalculateBillsOperator(task_id="recalc", bill_ids=bill_ids, poll_interval=0.05)
    result = op.execute(make_context(op))
    assert result["status"] == "COMPLETE" and result["bill_ids"] == bill_ids and result["job_id"] != job_id
    (bill,) = emu.entities("bills")
    assert bill["status"] == "PENDING" and bill["lineItems"][0]["quantity"] == 15
    hook.approve_bills(bill_ids)
    hook.lock_bills(bill_ids)
    with pytest.raises(M3terValidationError, match="locked Bills cannot be recalculated"):
        M3terRecalculateBillsOperator(task_id="recalc2", bill_ids=bill_ids).execute(make_context(op))
    assert emu.stats()["requests"][f"POST {ORG}/billjobs/recalculate"] == 1


# ---------------------------------------------------------------- statements
def test_statements_for_eleven_bills_are_produced_and_downloaded(emu, tmp_path, variables):
    _, bill_ids = billed(emu, 11)
    op = M3terStatementsOperator(task_id="statements", bill_ids=bill_ids, destination=str(tmp_path / "out"),
                                 formats=["JSON", "CSV"], poll_interval=0.05)  # fmt: skip
    result, events = run_with_events(op)
    assert len(result["statement_job_ids"]) == 11 and len(result["files"]) == 22
    assert events == {
        statements_asset(ORG_ID).uri: {
            "statements": 22,
            "bill_count": 11,
            "formats": ["JSON", "CSV"],
            "destination": str(tmp_path / "out"),
            "statement_job_ids": result["statement_job_ids"],
        }
    }
    assert emu.stats()["requests"][f"POST {ORG}/statementjobs/batch"] == 1  # 10 by batch
    assert emu.stats()["requests"][f"POST {ORG}/statementjobs"] == 1  # and the 11th alone
    statement = json.loads((tmp_path / "out" / f"{bill_ids[0]}.json").read_text())
    assert statement["id"] == bill_ids[0] and statement["lineItems"]
    assert (tmp_path / "out" / f"{bill_ids[0]}.csv").read_text().startswith("id,")
    assert variables.values == {}  # forgotten once the task succeeded
    assert all(b["jsonStatementGenerated"] and b["csvStatementGenerated"] for b in emu.entities("bills"))


@pytest.mark.parametrize("state_store", [False, True], ids=["variable", "task_state_store"])
def test_a_retry_follows_the_statement_jobs_its_first_try_started(emu, tmp_path, variables, state_store):
    _, bill_ids = billed(emu, 3)
    emu.job_duration = 1.0
    store = FakeTaskStateStore() if state_store else None
    first = M3terStatementsOperator(
        task_id="s", bill_ids=bill_ids, destination=str(tmp_path), timeout=0.2, poll_interval=0.05
    )
    with pytest.raises(M3terJobTimeoutError):
        first.execute(make_context(first, try_number=1, task_state_store=store))
    retry = M3terStatementsOperator(
        task_id="s", bill_ids=bill_ids, destination=str(tmp_path), poll_interval=0.05
    )
    result = retry.execute(make_context(retry, try_number=2, task_state_store=store))
    assert emu.stats()["requests"][f"POST {ORG}/statementjobs/batch"] == 1  # not started twice
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{b}.json" for b in bill_ids)
    assert len(result["statement_job_ids"]) == 3


def test_a_failed_statement_job_is_started_again_for_its_bill_only(emu, tmp_path, variables):
    _, bill_ids = billed(emu, 2)
    emu.fail_next_job("statementjob")
    first = M3terStatementsOperator(
        task_id="s", bill_ids=bill_ids, destination=str(tmp_path), poll_interval=0.05
    )
    with pytest.raises(M3terError, match="ended FAILED"):
        first.execute(make_context(first, try_number=1))
    retry = M3terStatementsOperator(
        task_id="s", bill_ids=bill_ids, destination=str(tmp_path), poll_interval=0.05
    )
    retry.execute(make_context(retry, try_number=2))
    assert emu.stats()["requests"][f"POST {ORG}/statementjobs/batch"] == 1
    assert emu.stats()["requests"][f"POST {ORG}/statementjobs"] == 1  # the failed bill's job only
    assert len(list(tmp_path.iterdir())) == 2


def test_statement_arguments_are_checked_when_the_dag_is_parsed():
    with pytest.raises(M3terError, match="no HTML statement"):
        M3terStatementsOperator(task_id="s", bill_ids=["b"], destination="/tmp", formats=["HTML"])
    with pytest.raises(M3terError, match="destination is required"):
        M3terStatementsOperator(task_id="s", bill_ids=["b"], destination="")


def test_deferrable_statements_defer_per_running_job_and_start_each_once(emu, tmp_path, variables):
    from airflow.providers.common.compat.sdk import TaskDeferred

    from tests.operators.test_job_operators import run_trigger

    _, bill_ids = billed(emu, 2)
    emu.job_duration = 0.3
    op = M3terStatementsOperator(
        task_id="s", bill_ids=bill_ids, destination=str(tmp_path), poll_interval=0.05, deferrable=True
    )
    context = make_context(op)
    deferrals, call = 0, (op.execute, {})
    while True:
        method, kwargs = call
        try:
            result = method(context, **kwargs)
            break
        except TaskDeferred as deferred:
            deferrals += 1
            assert deferred.trigger.kind == "statementjob" and deferrals <= 2  # noqa: PT017
            call = (op.execute_complete, {"event": run_trigger(deferred.trigger)})
    assert deferrals >= 1 and len(result["files"]) == 2
    assert emu.stats()["requests"][f"POST {ORG}/statementjobs/batch"] == 1


def test_the_sync_waits_on_its_pacer_before_every_request(emu, plan, monkeypatch):
    from m3ter_provider.core.pacing import Pacer

    waits = []
    monkeypatch.setattr(Pacer, "wait", lambda self, sleep: waits.append(self.rate))
    M3terHook().sync_accounts(rows(4), rate=5)
    api_requests = emu.stats()["requests_total"] - emu.stats()["requests"].get("POST /oauth/token", 0)
    assert len(waits) == api_requests and set(waits) == {5.0}


def test_a_429_during_the_sync_is_retried_and_nothing_is_doubled(emu, plan):
    hook = M3terHook()
    hook.client.sleep = lambda seconds: None
    emu.add_fault(f"POST {ORG}/accounts", status=429, times=2)
    summary = hook.sync_accounts(rows(2))
    assert (summary["created"], summary["failed"]) == (2, 0)
    assert sorted(a["code"] for a in emu.entities("accounts")) == ["cust_0", "cust_1"]
