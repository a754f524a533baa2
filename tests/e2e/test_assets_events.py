"""Under a real scheduler and triggerer: an asset event from our operator schedules a DAG, and an
AssetWatcher on m3ter's Events starts exactly one run per Event, across a triggerer restart."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import time

import pytest

from tests.e2e import load_benchmark

pytestmark = pytest.mark.e2e

DAGS = pathlib.Path(__file__).resolve().parent / "dags_assets_events"
WATCHED = "m3ter_e2e_on_bill_event"
BILL = "billing.bill.updated"


def runs(airflow, dag_id: str) -> list[dict]:
    answer = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=100")
    return answer.json()["dag_runs"] if answer.ok else []


def finished(airflow, dag_id: str, count: int):
    found = [r for r in runs(airflow, dag_id) if r["state"] in ("success", "failed")]
    return found if len(found) >= count else None


def test_asset_events_and_m3ter_event_watchers_under_a_real_scheduler_and_triggerer(tmp_path, monkeypatch):
    bench = load_benchmark("executor_tokens")
    if bench.airflow_major() < 3:
        pytest.skip("AssetWatcher and event-driven scheduling need Airflow 3")
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS

    if not AIRFLOW_V_3_3_PLUS:  # before 3.3 the watermark lives in the triggerer's memory (documented)
        pytest.skip("an Event exactly once across a triggerer restart needs Airflow 3.3's asset state store")
    out = tmp_path / "out"
    monkeypatch.setenv("E2E_M3TER_OUT", str(out))
    monkeypatch.setenv("E2E_M3TER_START", dt.datetime.now(dt.timezone.utc).isoformat())
    with bench.airflow_with_emulator(dag_id=WATCHED, dags_folder=DAGS) as (airflow, emulator):
        emulator.seed(
            "meters", [{"code": "api_calls", "name": "API calls", "dataFields": [], "derivedFields": []}]
        )
        for dag_id in ("m3ter_e2e_usage_producer", "m3ter_e2e_usage_consumer"):
            airflow.wait_for(f"DAG {dag_id}", lambda d=dag_id: airflow.get(f"/api/v2/dags/{d}").ok, 300)
        airflow.start("scheduler", "scheduler")
        airflow.start("triggerer", "triggerer")

        # 1. our operator's asset event schedules the consumer
        producer = airflow.post("/api/v2/dags/m3ter_e2e_usage_producer/dagRuns", {"logical_date": None})
        producer.raise_for_status()
        (consumer_run,) = airflow.wait_for(
            "the usage consumer's run", lambda: finished(airflow, "m3ter_e2e_usage_consumer", 1), 300
        )
        assert consumer_run["state"] == "success"
        assert emulator.stats()["measurements_stored"] == 1

        # 2. one m3ter Event, one run
        first = emulator.add_event(BILL, {"newDto": {"id": "bill-1", "status": "APPROVED"}})
        airflow.wait_for("a run for the first Event", lambda: finished(airflow, WATCHED, 1), 300)

        # 3. the triggerer restarts; an Event made while it is down still starts exactly one run
        airflow.stop("triggerer")
        second = emulator.add_event(BILL, {"newDto": {"id": "bill-2", "status": "APPROVED"}})
        airflow.start("triggerer", "triggerer")
        airflow.wait_for("a run for the second Event", lambda: finished(airflow, WATCHED, 2), 300)
        time.sleep(15)  # polls go on every second: give a duplicate the time to show
        watched = runs(airflow, WATCHED)
        assert [r["state"] for r in watched] == ["success", "success"], watched
        delivered = sorted(
            event_id for path in out.glob("*.json") for event_id in json.loads(path.read_text())
        )
        assert delivered == sorted([first["id"], second["id"]])
        # the unrelated Event name starts nothing
        emulator.add_event("ingest.validation.failure", {})
        time.sleep(5)
        assert len(runs(airflow, WATCHED)) == 2
        assert os.path.isdir(out)
