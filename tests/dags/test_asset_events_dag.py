"""In a real task run (dag.test), the submit operator's asset event lands in Airflow's metadata DB."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

from m3ter_provider.assets import meter_asset
from m3ter_provider.testing import M3terEmulator
from tests.dagrun import load_dag, run_dag
from tests.testing.helpers import know_meters


@pytest.fixture
def emu(monkeypatch):
    with M3terEmulator() as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", emulator.airflow_conn_json())
        know_meters(emulator, "api_calls")
        yield emulator


def asset_events(uri: str) -> list[dict]:
    from airflow.utils.session import create_session
    from sqlalchemy import select

    try:
        from airflow.models.asset import AssetEvent, AssetModel
    except ImportError:  # Airflow 2.11: datasets
        from airflow.models.dataset import DatasetEvent as AssetEvent
        from airflow.models.dataset import DatasetModel as AssetModel
    key = AssetEvent.asset_id if hasattr(AssetEvent, "asset_id") else AssetEvent.dataset_id

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent).join(AssetModel, key == AssetModel.id).where(AssetModel.uri == uri)
        ).all()
        return [dict(row.extra or {}) for row in rows]


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="asset events are Airflow 3's: 2.11 emits none")
def test_the_submit_task_records_one_asset_event_per_meter(airflow_db, emu):
    uri = meter_asset(emu.org_id, "api_calls").uri
    before = len(asset_events(uri))
    assert run_dag(load_dag("m3ter_asset_producer")).state == "success"
    events = asset_events(uri)
    assert len(events) == before + 1
    assert events[-1]["measurements"] == 3 and events[-1]["last_ts"] == "2026-01-01T00:00:02Z"
