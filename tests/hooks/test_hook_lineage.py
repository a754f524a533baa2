"""Hook-level lineage: hook calls (from an @task too) report files and m3ter assets, and the
OpenLineage provider turns them into datasets."""

from __future__ import annotations

import json

import pytest

from m3ter_provider.hooks.m3ter import M3terHook
from tests.operators.helpers import measurement
from tests.testing.helpers import know_meters

sdk_lineage = pytest.importorskip("airflow.sdk.lineage")  # Airflow 3's cached collector getter


@pytest.fixture
def collector(monkeypatch):
    """A real collector, as Airflow makes one when a lineage reader (OpenLineage) is configured."""
    from airflow.sdk import plugins_manager

    monkeypatch.setattr(plugins_manager, "get_hook_lineage_readers_plugins", lambda: [object])
    sdk_lineage.get_hook_lineage_collector.cache_clear()
    made = sdk_lineage.get_hook_lineage_collector()
    assert type(made).__name__ == "HookLineageCollector"
    yield made
    sdk_lineage.get_hook_lineage_collector.cache_clear()


@pytest.fixture
def emu(m3ter_conn):
    know_meters(m3ter_conn, "api_calls", "storage")
    return m3ter_conn


def uris(infos) -> list[str]:
    return sorted(info.asset.uri for info in infos)


def test_a_file_submitted_is_an_input_and_each_meter_an_output(collector, emu, tmp_path):
    path = tmp_path / "usage.jsonl"
    rows = [measurement(i) for i in range(3)] + [measurement(9, meter="storage")]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    M3terHook().submit_measurements(path)
    collected = collector.collected_assets
    assert uris(collected.inputs) == [f"file://{path}"]
    org = emu.org_id
    assert uris(collected.outputs) == [f"m3ter://{org}/meters/api_calls", f"m3ter://{org}/meters/storage"]


def test_rows_in_memory_report_only_the_meters(collector, emu):
    M3terHook().submit_measurements([measurement(0)])
    collected = collector.collected_assets
    assert collected.inputs == [] and uris(collected.outputs) == [f"m3ter://{emu.org_id}/meters/api_calls"]


def test_paginate_to_file_reports_the_collection_in_and_the_file_out(collector, emu, tmp_path):
    emu.seed("accounts", [{"code": f"a{i}", "name": f"a{i}"} for i in range(5)])
    target = tmp_path / "accounts.jsonl"
    assert M3terHook().paginate_to_file("accounts", target)["items"] == 5
    collected = collector.collected_assets
    assert uris(collected.inputs) == [f"m3ter://{emu.org_id}/accounts"]
    assert uris(collected.outputs) == [f"file://{target}"]


def test_a_download_reports_the_export_in_and_the_file_out(collector, emu, tmp_path):
    hook = M3terHook()
    hook.submit_measurements([measurement(i) for i in range(2)])
    job_id = hook.start_data_export(
        "USAGE", start_date="2026-01-01T00:00:00Z", end_date="2026-01-02T00:00:00Z"
    )
    hook.wait_for_job("dataexport", job_id, poll_interval=0.05, timeout=30)
    target = tmp_path / "usage.csv"
    hook.download(hook.get_export_download_url(job_id)["url"], target, export_name="usage")
    collected = collector.collected_assets
    assert f"m3ter://{emu.org_id}/exports/usage" in uris(collected.inputs)
    assert f"file://{target}" in uris(collected.outputs)


def test_openlineage_shows_file_to_m3ter_for_hook_calls(collector, emu, tmp_path):
    """What the OpenLineage provider reports for a task with no lineage methods (an @task)."""
    from airflow.providers.openlineage.extractors.manager import ExtractorManager

    path = tmp_path / "usage.jsonl"
    path.write_text(json.dumps(measurement(0)) + "\n")
    M3terHook().submit_measurements(path)
    lineage = ExtractorManager().get_hook_lineage()
    assert lineage is not None
    assert [(d.namespace, d.name) for d in lineage.inputs] == [("file", str(path))]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [(f"m3ter://{emu.org_id}", "meters/api_calls")]


def test_without_a_lineage_reader_nothing_is_collected_and_calls_work(emu, monkeypatch):
    from airflow.sdk import plugins_manager

    monkeypatch.setattr(plugins_manager, "get_hook_lineage_readers_plugins", lambda: [])
    sdk_lineage.get_hook_lineage_collector.cache_clear()
    try:
        assert M3terHook().submit_measurements([measurement(0)])["measurements"] == 1
        assert not sdk_lineage.get_hook_lineage_collector().has_collected
    finally:
        sdk_lineage.get_hook_lineage_collector.cache_clear()
