"""M3terDataExportOperator and M3terBillJobOperator: wait or defer, download, fail clearly, retry safely."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import re
import threading
import time

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath, TaskDeferred
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS, AIRFLOW_V_3_3_PLUS

from m3ter_provider.errors import M3terConfigError, M3terJobFailedError, M3terJobTimeoutError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.links import CONSOLE_LINK_XCOM_KEY, JOB_ID_XCOM_KEY
from m3ter_provider.operators import _base
from m3ter_provider.operators._base import TryRecord
from m3ter_provider.operators.m3ter import M3terBillJobOperator, M3terDataExportOperator
from m3ter_provider.triggers.m3ter import M3terJobTrigger
from tests.operators.helpers import FakeTaskStateStore, make_context, measurement

needs_task_state_store = pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS, reason="task_state_store (ResumableJobMixin) arrived in Airflow 3.3"
)
POST_EXPORT = "POST /organizations/{orgId}/dataexports/adhoc"
POST_BILL_JOB = "POST /organizations/{orgId}/billjobs"
WINDOW = {"export_start_date": "2026-01-01T00:00:00Z", "export_end_date": "2026-01-02T00:00:00Z"}


AIRFLOWS_VARIABLES = _base._variables


class FakeVariables:
    """Airflow's Variable, in memory: the store that survives a retry below Airflow 3.3."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes = 0

    def get(self, key: str, default=None):
        return self.values.get(key, default)

    def set(self, key: str, value: str, description: str | None = None) -> None:
        assert description and "airflow-provider-m3ter" in description
        self.values[key] = value
        self.writes += 1

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


@pytest.fixture(autouse=True)
def variables(monkeypatch) -> FakeVariables:
    """Where no task state store is given, the bill-job operator keeps its job id in a Variable."""
    fake = FakeVariables()
    monkeypatch.setattr(_base, "_variables", lambda: fake)
    return fake


def export_op(**kwargs) -> M3terDataExportOperator:
    kwargs.setdefault("task_id", "export")
    kwargs.setdefault("source_type", "USAGE")
    kwargs.setdefault("poll_interval", 0.05)
    if kwargs["source_type"] == "USAGE":
        for key, value in WINDOW.items():
            kwargs.setdefault(key, value)
    return M3terDataExportOperator(**kwargs)


def bill_op(**kwargs) -> M3terBillJobOperator:
    kwargs.setdefault("task_id", "bill")
    kwargs.setdefault("poll_interval", 0.05)
    kwargs.setdefault("bill_date", "2026-02-01")
    return M3terBillJobOperator(**kwargs)


def run_trigger(trigger: M3terJobTrigger) -> dict:
    async def collect() -> list:
        return [event async for event in trigger.run()]

    [event] = asyncio.run(collect())
    return event.payload


def seed_accounts(emu, *codes: str) -> list[str]:
    rows = [{"code": c, "name": c, "emailAddress": f"{c}@example.com"} for c in codes]
    return [a["id"] for a in emu.seed("accounts", rows)]


def execute_and_kill(op, context) -> None:
    """Run the task and kill it once it follows a job (Airflow calls on_kill from another thread)."""

    def kill_once_following() -> None:
        deadline = time.monotonic() + 5
        while JOB_ID_XCOM_KEY not in context["ti"].xcom and time.monotonic() < deadline:
            time.sleep(0.01)
        op.on_kill()

    killer = threading.Thread(target=kill_once_following)
    killer.start()
    try:
        op.execute(context)
    finally:
        killer.join(5)


def requests_to(emu, route: str) -> int:
    return emu.stats()["requests"].get(route, 0)


# ------------------------------------------------------------------ data exports
def test_usage_export_waits_and_downloads_without_the_token(emu, tmp_path):
    M3terHook().submit_measurements([measurement(i) for i in range(7)])
    op = export_op(destination=str(tmp_path / "out" / "usage.csv"))
    context = make_context(op)
    result = op.execute(context)
    assert result["status"] == "SUCCEEDED" and result["destination"] == str(tmp_path / "out" / "usage.csv")
    assert result["job_id"] == context["ti"].xcom[JOB_ID_XCOM_KEY]
    with open(result["destination"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 7 and result["bytes"] > 0
    assert emu.stats()["authorization_on_download"] == 0
    assert context["ti"].xcom[CONSOLE_LINK_XCOM_KEY].startswith("https://console.m3ter.com")
    json.dumps(result)


def test_operational_export_to_object_storage(emu, tmp_path):
    seed_accounts(emu, "acme", "globex")
    target = ObjectStoragePath(f"file://{tmp_path}/accounts.jsonl")
    op = export_op(
        source_type="OPERATIONAL",
        operational_data_types=["ACCOUNTS"],
        export_file_format="JSONL",
        destination=target,
    )
    context = make_context(op)
    op.render_template_fields(context)
    result = op.execute(context)
    lines = [json.loads(line) for line in (tmp_path / "accounts.jsonl").read_text().splitlines()]
    assert sorted(row["code"] for row in lines) == ["acme", "globex"]
    assert result["destination"] == f"file://{tmp_path}/accounts.jsonl"


def test_a_url_destination_is_object_storage_not_a_local_folder(emu, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    op = export_op(
        source_type="OPERATIONAL",
        operational_data_types=["ACCOUNTS"],
        destination=f"file://{tmp_path}/{{{{ run_id }}}}/accounts.csv",
    )
    context = make_context(op, run_id="r1")
    op.render_template_fields(context)
    op.execute(context)
    assert (tmp_path / "r1" / "accounts.csv").is_file()
    assert not (tmp_path / "file:").exists()


def test_export_fields_are_templated(emu, tmp_path):
    M3terHook().submit_measurements([measurement(1)])
    op = export_op(
        export_start_date="{{ params.start }}",
        export_end_date="{{ params.end }}",
        destination=str(tmp_path / "{{ run_id }}.csv"),
        params={"start": WINDOW["export_start_date"], "end": WINDOW["export_end_date"]},
    )
    context = make_context(
        op, run_id="run-7", params={"start": WINDOW["export_start_date"], "end": WINDOW["export_end_date"]}
    )
    op.render_template_fields(context)
    result = op.execute(context)
    assert result["destination"] == str(tmp_path / "run-7.csv")
    assert (tmp_path / "run-7.csv").exists()


def test_without_waiting_the_job_id_comes_back_at_once(emu):
    emu.job_duration = 30
    op = export_op(wait_for_completion=False)
    result = op.execute(make_context(op))
    assert result["status"] in ("PENDING", "RUNNING") and result["destination"] is None


def test_a_failed_export_fails_the_task_naming_job_and_status(emu):
    emu.fail_next_job("dataexport")
    op = export_op()
    context = make_context(op)
    with pytest.raises(M3terJobFailedError, match=r"data export .* ended FAILED") as caught:
        op.execute(context)
    assert caught.value.job_id == context["ti"].xcom[JOB_ID_XCOM_KEY]
    assert caught.value.status == "FAILED"


def test_deferrable_export_hands_the_wait_to_the_trigger_and_resumes(emu, tmp_path):
    M3terHook().submit_measurements([measurement(i) for i in range(3)])
    op = export_op(deferrable=True, destination=str(tmp_path / "usage.csv"), timeout=60)
    context = make_context(op)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, M3terJobTrigger) and deferred.value.method_name == "execute_complete"
    assert trigger.job_id == context["ti"].xcom[JOB_ID_XCOM_KEY]  # pushed before deferring
    assert trigger.end_time is not None and trigger.poll_interval == 0.05

    event = run_trigger(trigger)
    resumed = export_op(deferrable=True, destination=str(tmp_path / "usage.csv"), timeout=60)
    result = resumed.execute_complete(make_context(resumed), event)
    assert result["status"] == "SUCCEEDED" and result["bytes"] > 0
    assert len((tmp_path / "usage.csv").read_text().splitlines()) == 4  # header and three rows


def test_deferrable_failure_and_timeout_events_fail_clearly(emu):
    op = export_op(deferrable=True)
    failed = {
        "status": "error",
        "kind": "dataexport",
        "job_id": "j-9",
        "job_status": "FAILED",
        "message": "m3ter data export j-9 ended FAILED.",
    }
    with pytest.raises(M3terJobFailedError, match=r"j-9 ended FAILED\. Look the job up") as caught:
        op.execute_complete(make_context(op), failed)
    assert (caught.value.job_id, caught.value.status) == ("j-9", "FAILED")
    timed_out = {
        **failed,
        "job_status": "RUNNING",
        "timed_out": True,
        "message": "m3ter data export j-9 was still RUNNING when the wait timed out.",
    }
    with pytest.raises(M3terJobTimeoutError, match="still RUNNING"):
        op.execute_complete(make_context(op), timed_out)


def test_a_job_already_final_is_not_deferred(emu):
    emu.job_duration = 0
    op = export_op(deferrable=True)
    assert op.execute(make_context(op))["status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source_type": "USAGE", "export_start_date": None}, "needs export_start_date and export_end_date"),
        ({"source_type": "OPERATIONAL"}, "needs operational_data_types"),
        ({"source_type": "BILLING"}, "use 'USAGE' or 'OPERATIONAL'"),
        ({"source_type": "USAGE", "wait_for_completion": False, "destination": "/tmp/x"}, "needs wait_for"),
        ({"source_type": "USAGE", "poll_interval": 0}, "poll_interval 0: give the seconds"),
    ],
)
def test_bad_export_arguments_fail_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(M3terConfigError, match=message):
        export_op(**kwargs)


def test_templated_arguments_are_checked_once_rendered(emu):
    op = export_op(export_start_date="{{ params.missing }}", export_end_date="2026-01-02T00:00:00Z")
    context = make_context(op, params={})
    op.render_template_fields(context)
    with pytest.raises(M3terConfigError, match="needs export_start_date and export_end_date"):
        op.execute(context)
    assert requests_to(emu, POST_EXPORT) == 0


# ------------------------------------------------------------------ bill jobs
def test_bill_job_returns_its_bills(emu):
    account_ids = seed_accounts(emu, "acme", "globex")
    op = bill_op(account_ids=account_ids, billing_frequency="monthly", due_date="2026-02-15")
    context = make_context(op)
    result = op.execute(context)
    bills = [b for b in emu.entities("bills") if b["billJobId"] == result["bill_job_id"]]
    assert result["status"] == "COMPLETE"
    assert sorted(result["bill_ids"]) == sorted(b["id"] for b in bills) and len(bills) == 2
    assert result["bill_job_id"] == result["job_id"] == context["ti"].xcom[JOB_ID_XCOM_KEY]


def test_account_ids_from_a_rendered_xcom(emu):
    account_ids = seed_accounts(emu, "acme")
    op = bill_op(account_ids="{{ params.ids }}", params={"ids": account_ids})
    context = make_context(op, params={"ids": account_ids})
    op.render_template_fields(context)
    assert op.account_ids == str(account_ids)
    assert len(op.execute(context)["bill_ids"]) == 1


def test_a_cancelled_bill_job_fails_the_task(emu):
    emu.fail_next_job("billjob")
    op = bill_op(account_ids=seed_accounts(emu, "acme"))
    with pytest.raises(M3terJobFailedError, match=r"bill job .* ended CANCELLED"):
        op.execute(make_context(op))


def test_on_kill_cancels_the_running_bill_job(emu):
    emu.job_duration = 30
    op = bill_op(account_ids=seed_accounts(emu, "acme"))
    context = make_context(op)

    with pytest.raises(M3terJobFailedError, match="ended CANCELLED"):
        execute_and_kill(op, context)
    job_id = context["ti"].xcom[JOB_ID_XCOM_KEY]
    assert M3terHook().get_job("billjob", job_id)["status"] == "CANCELLED"


def test_deferred_bill_job_trigger_cancels_on_kill(emu):
    emu.job_duration = 30
    op = bill_op(account_ids=seed_accounts(emu, "acme"), deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(op))
    assert deferred.value.trigger.cancel_on_kill is True and deferred.value.trigger.kind == "billjob"


def test_a_strangers_active_bill_job_is_neither_adopted_nor_cancelled(emu):
    """Another DAG's (or a Console user's) bill job for the same accounts and dates is not ours."""
    emu.job_duration = 30
    account_ids = seed_accounts(emu, "acme")
    hook = M3terHook()
    op = bill_op(account_ids=account_ids, last_date_in_billing_period="2026-01-31", wait_for_completion=False)
    stranger = hook.start_bill_job(op._body())
    context = make_context(op, try_number=2)  # a retry, with no record of an earlier try's job
    result = op.execute(context)
    assert result["job_id"] != stranger["id"]
    assert context["ti"].xcom[JOB_ID_XCOM_KEY] == result["job_id"]
    assert requests_to(emu, POST_BILL_JOB) == 2
    op.on_kill()
    assert hook.get_job("billjob", stranger["id"])["status"] not in ("CANCELLED", "COMPLETE")
    assert hook.get_job("billjob", result["job_id"])["status"] == "CANCELLED"


def bill_jobs_created(emu) -> list[str]:
    return [job["id"] for job in M3terHook().paginate("billjobs")]


def test_below_3_3_a_retry_follows_its_own_bill_job_through_a_variable(emu, variables):
    """No task state store (Airflow 2.11-3.2): the job id kept in a Variable survives the try."""
    emu.job_duration = 1.0
    account_ids = seed_accounts(emu, "acme")
    first = bill_op(account_ids=account_ids, last_date_in_billing_period="2026-01-31", timeout=0.2)
    with pytest.raises(M3terJobTimeoutError):  # the worker gave up; its job still runs in m3ter
        first.execute(make_context(first, try_number=1))
    [key] = variables.values
    own = json.loads(variables.values[key])["job_id"]
    assert own == first._job_id and variables.writes == 1

    retry = bill_op(account_ids=account_ids, last_date_in_billing_period="2026-01-31")
    context = make_context(retry, try_number=2)
    result = retry.execute(context)
    assert result["job_id"] == own and result["status"] == "COMPLETE" and len(result["bill_ids"]) == 1
    assert context["ti"].xcom[JOB_ID_XCOM_KEY] == own  # the retry's XCom names the job it followed
    assert requests_to(emu, POST_BILL_JOB) == 1 and bill_jobs_created(emu) == [own]
    assert variables.values == {}  # forgotten once the task succeeded: a cleared task bills afresh


def test_below_3_3_a_retry_neither_adopts_nor_cancels_a_strangers_identical_job(emu, variables):
    """Same body, same Service User, created before the task and between its tries: not ours."""
    emu.job_duration = 30
    account_ids = seed_accounts(emu, "acme")
    hook = M3terHook()
    first = bill_op(account_ids=account_ids, last_date_in_billing_period="2026-01-31", timeout=0.2)
    before = hook.start_bill_job(first._body())  # another DAG's, before this task instance started
    with pytest.raises(M3terJobTimeoutError):
        first.execute(make_context(first, try_number=1))
    own = first._job_id
    between = hook.start_bill_job(first._body())  # and one created while this task waited to retry
    creators = {hook.get_job("billjob", job_id)["createdBy"] for job_id in (before["id"], own, between["id"])}
    assert len(creators) == 1  # one Service User, one body: only the record tells them apart

    retry = bill_op(account_ids=account_ids, last_date_in_billing_period="2026-01-31", poll_interval=0.05)
    context = make_context(retry, try_number=2)
    with pytest.raises(M3terJobFailedError, match="ended CANCELLED"):
        execute_and_kill(retry, context)
    assert retry._job_id == own and context["ti"].xcom[JOB_ID_XCOM_KEY] == own
    assert requests_to(emu, POST_BILL_JOB) == 3  # the two strangers' and the first try's: no fourth
    assert hook.get_job("billjob", own)["status"] == "CANCELLED"
    for stranger in (before["id"], between["id"]):
        assert hook.get_job("billjob", stranger)["status"] not in ("CANCELLED", "COMPLETE")


def test_below_3_3_a_cancelled_or_changed_record_starts_a_new_bill_job(emu, variables):
    account_ids = seed_accounts(emu, "acme", "globex")
    emu.fail_next_job("billjob")
    first = bill_op(account_ids=account_ids[:1])
    with pytest.raises(M3terJobFailedError):
        first.execute(make_context(first))
    cancelled = first._job_id
    retry = bill_op(account_ids=account_ids[:1])
    result = retry.execute(make_context(retry, try_number=2))
    assert result["job_id"] != cancelled and result["status"] == "COMPLETE"
    assert requests_to(emu, POST_BILL_JOB) == 2 and variables.values == {}

    emu.job_duration = 30
    started = bill_op(account_ids=account_ids[:1], timeout=0.2)
    with pytest.raises(M3terJobTimeoutError):
        started.execute(make_context(started))
    emu.job_duration = 0
    changed = bill_op(account_ids=account_ids)  # the DAG now bills both accounts: not that job
    result = changed.execute(make_context(changed, try_number=2))
    assert result["job_id"] != started._job_id and len(result["bill_ids"]) == 2
    assert requests_to(emu, POST_BILL_JOB) == 4


def test_below_3_3_the_record_is_per_task_instance(emu, variables):
    """Another run, task or map index of the same DAG never follows this task instance's job."""
    emu.job_duration = 30
    account_ids = seed_accounts(emu, "acme")
    first = bill_op(account_ids=account_ids, timeout=0.1)
    with pytest.raises(M3terJobTimeoutError):
        first.execute(make_context(first, run_id="r1", map_index=0))
    others = [("bill", "r1", 1), ("bill", "r2", 0), ("other_task", "r1", 0)]
    for task_id, run_id, map_index in others:
        op = bill_op(task_id=task_id, account_ids=account_ids, wait_for_completion=False)
        result = op.execute(make_context(op, run_id=run_id, map_index=map_index, try_number=2))
        assert result["job_id"] != first._job_id
    assert requests_to(emu, POST_BILL_JOB) == 1 + len(others)
    assert len(variables.values) == 1  # the succeeded ones forgot theirs; the first's is kept


def test_below_3_3_a_deferred_bill_job_keeps_its_record_until_it_succeeds(emu, variables):
    emu.job_duration = 2.0
    op = bill_op(account_ids=seed_accounts(emu, "acme"), deferrable=True)
    context = make_context(op)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    job_id = deferred.value.trigger.job_id
    assert TryRecord(context, op.job_kind, op._body()).get() == job_id
    timed_out = {"status": "error", "kind": "billjob", "job_id": job_id, "job_status": "RUNNING",
                 "timed_out": True, "message": "still RUNNING"}  # fmt: skip
    with pytest.raises(M3terJobTimeoutError):
        op.execute_complete(context, timed_out)
    assert TryRecord(context, op.job_kind, op._body()).get() == job_id  # a retry follows the job
    job = M3terHook().wait_for_job("billjob", job_id, poll_interval=0.05, timeout=30)
    done = {"status": "success", "kind": "billjob", "job_id": job_id, "job": job}
    assert op.execute_complete(context, done)["status"] == "COMPLETE"
    assert variables.values == {} and requests_to(emu, POST_BILL_JOB) == 1


@pytest.mark.skipif(
    AIRFLOW_V_3_0_PLUS, reason="Airflow 3's Variable is written by a running task's supervisor"
)
def test_on_airflow_2_the_record_is_a_real_variable_in_the_metadata_db(emu, airflow_db, monkeypatch):
    from airflow.models import Variable

    monkeypatch.setattr(_base, "_variables", AIRFLOWS_VARIABLES)
    emu.job_duration = 1.0
    account_ids = seed_accounts(emu, "acme")
    first = bill_op(account_ids=account_ids, timeout=0.2)
    context = make_context(first, run_id="real_variable")
    with pytest.raises(M3terJobTimeoutError):
        first.execute(context)
    key = TryRecord(context, first.job_kind, first._body()).key
    assert json.loads(Variable.get(key))["job_id"] == first._job_id
    retry = bill_op(account_ids=account_ids)
    result = retry.execute(make_context(retry, run_id="real_variable", try_number=2))
    assert result["job_id"] == first._job_id and result["status"] == "COMPLETE"
    assert requests_to(emu, POST_BILL_JOB) == 1 and Variable.get(key, None) is None


def test_in_a_real_task_run_the_retry_follows_the_job_the_variable_names(emu, airflow_db, monkeypatch):
    """dag.test(): the first try gives up waiting, the retry finds its job through the Variable."""
    from tests.dagrun import load_dag, run_dag

    monkeypatch.setattr(_base, "_variables", AIRFLOWS_VARIABLES)
    emu.job_duration = 1.0
    monkeypatch.setenv("M3TER_TEST_ACCOUNT_IDS", json.dumps(seed_accounts(emu, "acme")))
    run = run_dag(load_dag("m3ter_bill_job_retry"))
    assert run.state == "success" and run.dag_run.get_task_instance("bill").try_number == 2
    assert requests_to(emu, POST_BILL_JOB) == 1  # the retry followed the first try's job
    [job] = M3terHook().paginate("billjobs")
    assert job["status"] == "COMPLETE"


@needs_task_state_store
def test_a_retry_follows_the_bill_job_this_task_started_not_a_strangers(emu):
    emu.job_duration = 1.0
    account_ids = seed_accounts(emu, "acme")
    store = FakeTaskStateStore()
    first = bill_op(account_ids=account_ids, last_date_in_billing_period="2026-01-31", timeout=0.2)
    stranger = M3terHook().start_bill_job(first._body())
    with pytest.raises(M3terJobTimeoutError):  # the worker gave up; its job still runs in m3ter
        first.execute(make_context(first, try_number=1, task_state_store=store))
    own = store.values[JOB_ID_XCOM_KEY]
    assert own != stranger["id"]
    retry = bill_op(account_ids=account_ids, last_date_in_billing_period="2026-01-31")
    result = retry.execute(make_context(retry, try_number=2, task_state_store=store))
    assert requests_to(emu, POST_BILL_JOB) == 2  # the stranger's and the first try's: no third
    assert result["job_id"] == own and result["status"] == "COMPLETE"


@needs_task_state_store
def test_with_a_task_state_store_a_retry_follows_the_stored_export(emu, tmp_path):
    """Airflow 3.3+: the job id kept in task_state_store survives the failed try."""
    emu.job_duration = 1.0
    store = FakeTaskStateStore()
    first = export_op(timeout=0.2)
    with pytest.raises(M3terJobTimeoutError):
        first.execute(make_context(first, task_state_store=store))
    assert store.values[JOB_ID_XCOM_KEY]
    retry = export_op(destination=str(tmp_path / "usage.csv"))
    result = retry.execute(make_context(retry, try_number=2, task_state_store=store))
    assert requests_to(emu, POST_EXPORT) == 1
    assert result["job_id"] == store.values[JOB_ID_XCOM_KEY] and result["status"] == "SUCCEEDED"
    assert (tmp_path / "usage.csv").exists()


@needs_task_state_store
def test_with_a_task_state_store_a_finished_job_is_used_and_a_failed_one_replaced(emu):
    store = FakeTaskStateStore()
    account_ids = seed_accounts(emu, "acme")
    op = bill_op(account_ids=account_ids)
    first = op.execute(make_context(op, task_state_store=store))
    again = op.execute(make_context(op, try_number=2, task_state_store=store))
    assert again == first and requests_to(emu, POST_BILL_JOB) == 1

    emu.fail_next_job("billjob")
    failing = bill_op(task_id="other", account_ids=account_ids)
    other_store = FakeTaskStateStore()
    with pytest.raises(M3terJobFailedError):
        failing.execute(make_context(failing, task_state_store=other_store))
    result = failing.execute(make_context(failing, try_number=2, task_state_store=other_store))
    assert result["status"] == "COMPLETE" and requests_to(emu, POST_BILL_JOB) == 3


@needs_task_state_store
def test_a_stored_finished_export_is_downloaded_again_unless_its_file_expired(emu, tmp_path, monkeypatch):
    """A cleared task re-runs with the stored job: m3ter serves its file for 24 hours only."""
    from m3ter_provider.operators import m3ter as operators

    store = FakeTaskStateStore()
    op = export_op(
        source_type="OPERATIONAL", operational_data_types=["ACCOUNTS"], destination=str(tmp_path / "a.csv")
    )
    first = op.execute(make_context(op, task_state_store=store))
    again = op.execute(make_context(op, try_number=2, task_state_store=store))
    assert again["job_id"] == first["job_id"] and requests_to(emu, POST_EXPORT) == 1

    monkeypatch.setattr(operators, "STALE_EXPORT", dt.timedelta(0))  # as if it ran a day ago
    fresh = op.execute(make_context(op, try_number=3, task_state_store=store))
    assert fresh["job_id"] != first["job_id"] and requests_to(emu, POST_EXPORT) == 2
    assert store.values[JOB_ID_XCOM_KEY] == fresh["job_id"]


def test_without_a_task_state_store_an_export_retry_starts_a_new_export(emu):
    """Below Airflow 3.3 nothing finds the export an earlier try started (documented)."""
    emu.job_duration = 1.0
    first = export_op(timeout=0.2)
    with pytest.raises(M3terJobTimeoutError):
        first.execute(make_context(first))
    retry = export_op()
    retry.execute(make_context(retry, try_number=2))
    assert requests_to(emu, POST_EXPORT) == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"billing_frequency": "FORTNIGHTLY"}, "billing_frequency 'FORTNIGHTLY'"),
        ({"bill_date": "next tuesday"}, "bill_date 'next tuesday' is not a date"),
        ({"timeout": -1}, "timeout -1: give the most seconds to wait"),
    ],
)
def test_bad_bill_job_arguments_fail_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(M3terConfigError, match=message):
        bill_op(**kwargs)


def test_export_dates_as_users_write_them_are_sent_as_rfc3339(emu):
    op = export_op(export_start_date="{{ ds }}", export_end_date="{{ end }}")
    context = make_context(op, ds="2026-01-01", end=dt.datetime(2026, 1, 2, tzinfo=dt.timezone.utc))
    op.render_template_fields(context)  # the datetime renders as str(): "2026-01-02 00:00:00+00:00"
    body = op._check()
    assert (body["startDate"], body["endDate"]) == ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00+00:00")


@pytest.mark.parametrize("bad", ["2026-01-01T00:00:00+00:00Z", "yesterday"])
def test_a_bad_export_date_is_refused_naming_the_operators_argument(emu, bad):
    with pytest.raises(M3terConfigError, match=rf"export_end_date '{re.escape(bad)}'.*RFC 3339"):
        export_op(export_end_date=bad)
    op = export_op(export_start_date="{{ params.start }}")
    context = make_context(op, params={"start": bad})
    op.render_template_fields(context)
    with pytest.raises(M3terConfigError, match=rf"export_start_date '{re.escape(bad)}'.*RFC 3339"):
        op.execute(context)
    assert requests_to(emu, POST_EXPORT) == 0


def test_one_bill_is_logged_as_one_bill(emu, caplog, capsys):
    import logging

    op = bill_op(account_ids=seed_accounts(emu, "acme"))
    with caplog.at_level(logging.INFO):
        result = op.execute(make_context(op))
    assert len(result["bill_ids"]) == 1
    logged = caplog.text + capsys.readouterr().out  # Airflow 3 task loggers write through structlog
    assert f"m3ter bill job {result['job_id']} produced 1 bill." in logged
