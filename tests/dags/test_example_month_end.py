"""example_m3ter_month_end end to end under dag.test(), its approval answered through Airflow's REST API."""

from __future__ import annotations

import importlib.util
import json
import threading

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS

from tests.dags.test_example_dags import REPO, run_example
from tests.dags.test_example_dags import emulator as emulator  # the fixture

ORG = "/organizations/{orgId}"


def load_demo():
    spec = importlib.util.spec_from_file_location("m3ter_demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ApiAnswerer(threading.Thread):
    """Answers the DAG's approval as a person would: through Airflow's REST API (the public API
    app in this process, on the same metadata DB), "Approve" (or ``option``) once it is waiting."""

    def __init__(self, dag_id: str, option: str = "Approve") -> None:
        super().__init__(daemon=True)
        from airflow.api_fastapi.app import create_app
        from fastapi.testclient import TestClient

        self.client = TestClient(create_app())
        token = self.client.get("/auth/token").json()["access_token"]
        self.client.headers["Authorization"] = f"Bearer {token}"
        self.dag_id, self.option = dag_id, option
        self.answered: list[str] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        demo = load_demo()
        while not self.stop.wait(0.5) and not self.answered:
            try:
                self.answered = demo.answer_pending_approvals(self.client, self.dag_id, self.option)
            except Exception as exc:  # reported by the test
                self.errors.append(exc)
                return


@pytest.fixture
def answerer(emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
    made = []

    def start(option: str = "Approve") -> ApiAnswerer:
        thread = ApiAnswerer("example_m3ter_month_end", option)
        thread.start()
        made.append(thread)
        return thread

    yield start
    for thread in made:
        thread.stop.set()
        thread.join(10)


#: human-in-the-loop operators arrived in Airflow 3.1, but 3.1's dag.test() fails the approval task:
#: its in-process supervisor leaves GetHITLDetail unhandled ("'NoneType' object has no attribute
#: 'response_received'"); seen on 3.1.8, runs on 3.3 (3.2 not tried)
HITL_UNDER_DAG_TEST = "the approval step runs under dag.test() from Airflow 3.3 (3.1's fails it)"


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason=HITL_UNDER_DAG_TEST)
def test_month_end_runs_end_to_end_with_a_persons_approval(emulator, answerer, tmp_path):
    person = answerer("Approve")
    run, xcoms = run_example("example_m3ter_month_end")
    assert person.errors == [] and person.answered == ["approval"]
    synced = xcoms[("sync_accounts", "return_value")]
    assert (synced["created"], synced["plans_attached"], synced["failed"]) == (3, 3, 0)
    assert xcoms[("reconcile", "return_value")] == {"measurements_in_m3ter": 30}
    bill_ids = xcoms[("run_bill_job", "return_value")]["bill_ids"]
    assert len(bill_ids) == 3
    assert xcoms[("approve_bills", "return_value")]["approved"] == bill_ids
    assert xcoms[("lock_bills", "return_value")]["locked"] == bill_ids
    bills = emulator.entities("bills")
    assert {(b["status"], b["locked"]) for b in bills} == {("APPROVED", True)}
    assert sorted(sum(item["quantity"] for item in b["lineItems"]) for b in bills) == [10, 10, 10]
    files = xcoms[("statements", "return_value")]["files"]
    assert len(files) == 6
    folder = tmp_path / "example_m3ter_month_end" / run.run_id / "statements"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{b}.{s}" for b in bill_ids for s in ("json", "csv")
    )
    assert json.loads((folder / f"{bill_ids[0]}.json").read_text())["id"] == bill_ids[0]

    # the whole month again: nothing in m3ter changes twice
    before = emulator.stats()["requests"]
    answerer("Approve")
    _, again = run_example("example_m3ter_month_end")
    after = emulator.stats()["requests"]
    assert again[("sync_accounts", "return_value")]["unchanged"] == 3
    for route in (f"POST {ORG}/accounts", f"PUT {ORG}/accounts/{{id}}", f"POST {ORG}/accountplans"):
        assert after.get(route, 0) == before.get(route, 0), route
    assert len(emulator.measurements()) == 30  # the same usage rows: the same uids, ingested once


@pytest.mark.skipif(not AIRFLOW_V_3_3_PLUS, reason=HITL_UNDER_DAG_TEST)
def test_a_rejected_month_approves_and_locks_nothing(emulator, answerer):
    from airflow.utils.session import create_session

    person = answerer("Reject")
    run, xcoms = run_example("example_m3ter_month_end")
    assert person.answered == ["approval"]
    with create_session() as session:
        states = {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}
    assert {states[t] for t in ("approve_bills", "lock_bills", "statements")} == {"skipped"}
    assert len(xcoms[("run_bill_job", "return_value")]["bill_ids"]) == 3
    assert {(b["status"], b["locked"]) for b in emulator.entities("bills")} == {("PENDING", False)}


@pytest.mark.skipif(AIRFLOW_V_3_3_PLUS, reason="from Airflow 3.3 the approval step asks a person")
def test_before_airflow_3_3_the_month_runs_with_the_approval_step_skipped_or_failing_under_dag_test(emulator):
    """Airflow 2.11 has no human-in-the-loop operator: the approval step is skipped, says why, and the
    bills are approved, locked and their statements made. Airflow 3.1 has one, but its dag.test()
    fails it (see HITL_UNDER_DAG_TEST): then nothing after it runs, and nothing is approved."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS
    from airflow.utils.session import create_session

    run, xcoms = run_example("example_m3ter_month_end", expect="failed" if AIRFLOW_V_3_0_PLUS else "success")
    with create_session() as session:
        states = {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}
    assert len(xcoms[("run_bill_job", "return_value")]["bill_ids"]) == 3
    assert xcoms[("reconcile", "return_value")] == {"measurements_in_m3ter": 30}
    bills = emulator.entities("bills")
    if not AIRFLOW_V_3_0_PLUS:
        assert states["approval"] == "skipped"
        assert {states[t] for t in ("approve_bills", "lock_bills", "statements")} == {"success"}
        assert {(b["status"], b["locked"]) for b in bills} == {("APPROVED", True)}
        assert len(xcoms[("statements", "return_value")]["files"]) == 6
    else:
        assert states["approval"] == "failed"
        assert {states[t] for t in ("approve_bills", "lock_bills", "statements")} == {"upstream_failed"}
        assert {(b["status"], b["locked"]) for b in bills} == {("PENDING", False)}
