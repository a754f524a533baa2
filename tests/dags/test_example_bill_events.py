"""The event-driven example DAG: its watcher's trigger reads m3ter's bill Events, its task writes the bill."""

from __future__ import annotations

import json

import pytest

from m3ter_provider.testing import M3terEmulator
from tests.dagrun import load_dag, run_dag


@pytest.fixture
def emu(monkeypatch, tmp_path):
    with M3terEmulator() as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", emulator.airflow_conn_json())
        monkeypatch.setenv("M3TER_BILLS_DIR", str(tmp_path / "bills"))
        monkeypatch.setenv("M3TER_ORG_ID", emulator.org_id)
        yield emulator


def test_the_dag_watches_m3ter_bill_events():
    pytest.importorskip("airflow.sdk")
    dag = load_dag("example_m3ter_bill_events")
    (asset,) = [a for a in dag.timetable.asset_condition.objects if hasattr(a, "watchers")]
    assert asset.uri.endswith("/bills")
    (watcher,) = asset.watchers
    assert type(watcher.trigger).__name__ == "M3terEventTrigger"
    assert watcher.trigger.event_name == "billing.bill.updated"


def test_a_run_writes_the_named_bill(airflow_db, emu, tmp_path):
    (bill,) = emu.seed("bills", [{"accountId": "a1", "status": "APPROVED", "locked": False}])
    result = run_dag(load_dag("example_m3ter_bill_events"), run_conf={"bill_id": bill["id"]})
    assert result.state == "success"
    written = json.loads((tmp_path / "bills" / f"{bill['id']}.json").read_text())
    assert written["id"] == bill["id"] and written["status"] == "APPROVED"
