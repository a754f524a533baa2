"""Operators emit m3ter:// asset events for what they changed, through their alias outlets."""

from __future__ import annotations

import pytest

from m3ter_provider.assets import bills_asset, export_asset, meter_asset
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators import _base
from m3ter_provider.operators.asset_events import asset_alias, emit_asset_event
from m3ter_provider.operators.m3ter import (
    M3terBillJobOperator,
    M3terDataExportOperator,
    M3terSubmitMeasurementsOperator,
)
from tests.operators.helpers import make_context, measurement, run_with_events

context_module = pytest.importorskip("airflow.sdk.execution_time.context")  # Airflow 3's accessors
ORG = "emulator-org"


class FakeVariables:
    def __init__(self) -> None:
        self.values: dict = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value, **_):
        self.values[key] = value

    def delete(self, key):
        self.values.pop(key, None)


@pytest.fixture(autouse=True)
def _variables(monkeypatch):
    monkeypatch.setattr(_base, "_variables", lambda: FakeVariables())


def run(op):
    """Execute with Airflow 3's own outlet event accessors; return (result, {uri: extra})."""
    return run_with_events(op)


def alias_names(op) -> list[str]:
    return [outlet.name for outlet in op.outlets if type(outlet).__name__ in ("AssetAlias", "DatasetAlias")]


def test_operators_declare_their_alias_outlet_at_parse_time_and_keep_the_users():
    from airflow.providers.common.compat.sdk import Asset

    mine = Asset("s3://bucket/usage")
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=[], outlets=[mine])
    assert alias_names(op) == ["m3ter/usage"] and mine in op.outlets
    assert alias_names(M3terBillJobOperator(task_id="b", bill_date="2026-02-01")) == ["m3ter/bills"]
    assert alias_names(
        M3terDataExportOperator(task_id="e", source_type="OPERATIONAL", operational_data_types=["BILLS"])
    ) == ["m3ter/exports"]


def test_opting_out_declares_nothing_and_emits_nothing(emu):
    op = M3terSubmitMeasurementsOperator(
        task_id="push", measurements=[measurement(i) for i in range(3)], emit_asset_events=False
    )
    assert alias_names(op) == []
    outlet_events = context_module.OutletEventAccessors()
    assert op.execute(make_context(op, outlet_events=outlet_events))["measurements"] == 3
    assert outlet_events[asset_alias("usage")].asset_alias_events == []


def test_submit_emits_one_event_per_meter_with_counts_and_times(emu):
    rows = [measurement(i) for i in range(5)] + [measurement(i, meter="storage") for i in (9, 3)]
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=rows)
    result, events = run(op)
    assert result["measurements"] == 7
    assert set(events) == {meter_asset(ORG, "api_calls").uri, meter_asset(ORG, "storage").uri}
    api = events[meter_asset(ORG, "api_calls").uri]
    assert (api["measurements"], api["first_ts"], api["last_ts"]) == (
        5,
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:00:04Z",
    )
    storage = events[meter_asset(ORG, "storage").uri]
    assert (storage["measurements"], storage["first_ts"], storage["last_ts"]) == (
        2,
        "2026-01-01T00:00:03Z",
        "2026-01-01T00:00:09Z",
    )
    assert api["uid_namespace"] == '["test_dag", "push", "manual__1", -1]'


def test_submit_from_a_file_tallies_too(emu, tmp_path):
    import json

    path = tmp_path / "usage.jsonl"
    path.write_text("".join(json.dumps(measurement(i)) + "\n" for i in range(1500)))
    _, events = run(M3terSubmitMeasurementsOperator(task_id="push", measurements_file=str(path)))
    assert events[meter_asset(ORG, "api_calls").uri]["measurements"] == 1500
    assert emu.stats()["measurements_stored"] == 1500


def test_a_failed_submission_emits_nothing(emu):
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=[measurement(0), {"account": "a"}])
    outlet_events = context_module.OutletEventAccessors()
    with pytest.raises(Exception, match="meter"):
        op.execute(make_context(op, outlet_events=outlet_events))
    assert outlet_events[asset_alias("usage")].asset_alias_events == []


def test_export_emits_its_kind_with_job_and_period(emu, tmp_path):
    M3terHook().submit_measurements([measurement(i) for i in range(3)])
    op = M3terDataExportOperator(
        task_id="export",
        source_type="USAGE",
        export_start_date="2026-01-01",
        export_end_date="2026-01-02",
        destination=str(tmp_path / "usage.csv"),
        poll_interval=0.05,
    )
    result, events = run(op)
    extra = events[export_asset(ORG, "usage").uri]
    assert extra["job_id"] == result["job_id"] and extra["bytes"] == result["bytes"] > 0
    assert (extra["start_date"], extra["end_date"]) == ("2026-01-01", "2026-01-02")
    assert extra["destination"] == str(tmp_path / "usage.csv")


def test_an_export_not_waited_for_emits_nothing(emu):
    op = M3terDataExportOperator(
        task_id="export",
        source_type="OPERATIONAL",
        operational_data_types=["ACCOUNTS"],
        wait_for_completion=False,
    )
    _, events = run(op)
    assert events == {}


def test_bill_job_emits_bills_with_job_id_and_count(emu):
    ids = [a["id"] for a in emu.seed("accounts", [{"code": c, "name": c} for c in ("acme", "globex")])]
    op = M3terBillJobOperator(task_id="bill", account_ids=ids, bill_date="2026-02-01", poll_interval=0.05)
    result, events = run(op)
    extra = events[bills_asset(ORG).uri]
    assert extra == {
        "job_id": result["job_id"],
        "bill_count": 2,
        "bill_date": "2026-02-01",
        "billing_frequency": None,
    }


def test_a_huge_extra_is_refused_with_the_fix():
    outlet_events = context_module.OutletEventAccessors()
    with pytest.raises(M3terConfigError, match="write large results to a file"):
        emit_asset_event(
            {"outlet_events": outlet_events}, "m3ter/usage", bills_asset(ORG), {"x": "y" * 20_000}
        )


def test_outside_a_task_run_nothing_is_emitted_and_nothing_fails(emu):
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=[measurement(0)])
    assert op.execute(make_context(op))["measurements"] == 1
