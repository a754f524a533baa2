"""M3terUploadMeasurementsOperator and M3terUsageQueryOperator against the emulator over HTTP."""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from m3ter_provider.assets import meter_asset
from m3ter_provider.errors import M3terConfigError, M3terJobFailedError, M3terJobTimeoutError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators import _base
from m3ter_provider.operators.warehouse import M3terUploadMeasurementsOperator, M3terUsageQueryOperator
from m3ter_provider.triggers.m3ter import M3terJobTrigger
from tests.operators.helpers import events_in, make_context, measurement, outlet_events, run_with_events

GENERATE = "POST /organizations/{orgId}/fileuploads/measurements/generateUploadUrl"
ORG_ID = "emulator-org"  # the emulator's Organization, in asset URIs
QUERY = "POST /organizations/{orgId}/usage/query"


class FakeVariables:
    """Airflow's Variable, in memory: where the upload operator keeps its job ids between tries."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value, description=None):
        assert description and "airflow-provider-m3ter" in description
        self.values[key] = value

    def delete(self, key):
        self.values.pop(key, None)


@pytest.fixture(autouse=True)
def variables(monkeypatch) -> FakeVariables:
    fake = FakeVariables()
    monkeypatch.setattr(_base, "_variables", lambda: fake)
    return fake


def upload_op(**kwargs) -> M3terUploadMeasurementsOperator:
    kwargs.setdefault("task_id", "upload")
    kwargs.setdefault("poll_interval", 0.05)
    if "measurements_file" not in kwargs:
        kwargs.setdefault("measurements", [measurement(i) for i in range(250)])
    return M3terUploadMeasurementsOperator(**kwargs)


def test_upload_operator_returns_counts_and_forgets_its_record(emu, variables):
    op = upload_op()
    result = op.execute(make_context(op))
    json.dumps(result)
    assert (result["measurements"], result["total_rows"], result["status"]) == (250, 250, "succeeded")
    assert len(emu.measurements()) == 250
    assert variables.values == {}  # deleted once the task succeeded


def test_upload_emits_one_usage_event_per_meter_once_its_jobs_are_done(emu):
    rows = [measurement(i) for i in range(240)] + [measurement(i, meter="storage") for i in (7, 2, 5)]
    result, events = run_with_events(upload_op(measurements=rows))
    assert result["status"] == "succeeded"
    namespace = '["test_dag", "upload", "manual__1", -1]'
    assert events == {
        meter_asset(ORG_ID, "api_calls").uri: {
            "measurements": 240,
            "first_ts": "2026-01-01T00:00:00Z",
            "last_ts": "2026-01-01T00:03:59Z",
            "uid_namespace": namespace,
            "rejected": None,
        },
        meter_asset(ORG_ID, "storage").uri: {
            "measurements": 3,
            "first_ts": "2026-01-01T00:00:02Z",
            "last_ts": "2026-01-01T00:00:07Z",
            "uid_namespace": namespace,
            "rejected": None,
        },
    }
    assert run_with_events(upload_op(wait_for_completion=False))[1] == {}  # jobs not waited for
    quiet = upload_op(emit_asset_events=False)
    assert run_with_events(quiet)[1] == {} and quiet.outlets == []


def test_a_retry_follows_the_earlier_tries_upload_instead_of_uploading_again(emu, variables):
    op = upload_op(timeout=0.01)  # the first try gives up waiting while the job runs
    context = make_context(op)
    with pytest.raises(M3terJobTimeoutError):
        op.execute(context)
    assert emu.stats()["requests"][GENERATE] == 1
    retry = upload_op()
    result = retry.execute(make_context(retry, try_number=2))
    assert emu.stats()["requests"][GENERATE] == 1  # not uploaded twice
    assert result["status"] == "succeeded" and result["total_rows"] == 250
    assert len(emu.measurements()) == 250


def test_a_retry_uploads_again_when_the_earlier_job_failed_and_nothing_doubles(emu, variables):
    emu.fail_next_job("fileupload")
    op = upload_op()
    with pytest.raises(M3terJobFailedError):
        op.execute(make_context(op))
    retry = upload_op()
    assert retry.execute(make_context(retry, try_number=2))["status"] == "succeeded"
    assert emu.stats()["requests"][GENERATE] == 2
    assert len(emu.measurements()) == 250


def test_a_retry_with_other_input_uploads_it(emu, variables):
    op = upload_op(timeout=0.01)
    with pytest.raises(M3terJobTimeoutError):
        op.execute(make_context(op))
    changed = upload_op(measurements=[measurement(i) for i in range(260)])
    assert changed.execute(make_context(changed, try_number=2))["measurements"] == 260
    assert emu.stats()["requests"][GENERATE] == 2
    assert len(emu.measurements()) == 260  # the 250 rows both files share are ingested once


def test_upload_operator_reads_a_csv_file_with_a_column_mapping(emu, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(
        "customer,meter,ts,calls\n" + "".join(f"c{i},m,2026-01-01T00:00:0{i}Z,{i}\n" for i in range(5))
    )
    op = upload_op(
        measurements_file=str(path), column_mapping={"customer": "account", "calls": "measure.calls"}
    )
    assert op.execute(make_context(op))["measurements"] == 5
    assert sorted(m["account"] for m in emu.measurements()) == [f"c{i}" for i in range(5)]


def test_deferrable_upload_hands_the_wait_to_the_trigger_and_resumes(emu):
    op = upload_op(deferrable=True)
    first = outlet_events()
    context = make_context(op, outlet_events=first)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    assert events_in(first, "usage") == {}  # nothing before the jobs are done
    trigger = deferred.value.trigger
    assert isinstance(trigger, M3terJobTrigger) and trigger.kind == "fileupload"

    async def collect():
        return [event async for event in trigger.run()]

    [event] = asyncio.run(collect())
    resumed = upload_op(deferrable=True)
    accessors = outlet_events()
    result = resumed.execute_complete(
        make_context(resumed, outlet_events=accessors), event.payload, **deferred.value.kwargs
    )
    assert result["status"] == "succeeded" and result["total_rows"] == 250
    # the per-Meter counts crossed the deferral in the trigger's kwargs
    assert events_in(accessors, "usage")[meter_asset(ORG_ID, "api_calls").uri]["measurements"] == 250
    assert len(emu.measurements()) == 250


def test_upload_operator_arguments_are_checked_when_the_dag_is_parsed():
    with pytest.raises(M3terConfigError, match="exactly one"):
        M3terUploadMeasurementsOperator(task_id="u")
    with pytest.raises(M3terConfigError, match="check_ingest_failures"):
        upload_op(check_ingest_failures="sometimes")


# -- usage query --------------------------------------------------------------------------------
def query_op(**kwargs) -> M3terUsageQueryOperator:
    kwargs.setdefault("task_id", "query")
    kwargs.setdefault("query_start", "2026-01-01")
    kwargs.setdefault("query_end", "2026-01-02")
    return M3terUsageQueryOperator(**kwargs)


def test_usage_query_operator_writes_the_file_and_returns_only_counts(emu, tmp_path):
    M3terHook().submit_measurements([measurement(i) for i in range(120)])
    op = query_op(destination=str(tmp_path / "usage.jsonl"), limit=50)
    result = op.execute(make_context(op))
    assert result["rows"] == 120 and result["parts"] >= 3
    assert result["requests"] == emu.stats()["requests"][QUERY]
    assert len(json.dumps(result)) < 400  # path and counts, never the rows
    assert len((tmp_path / "usage.jsonl").read_text().splitlines()) == 120


def test_usage_query_operator_checks_its_query_when_the_dag_is_parsed(tmp_path):
    with pytest.raises(M3terConfigError, match="query_start"):
        query_op(destination=str(tmp_path / "u.jsonl"), query_start="soon")
    with pytest.raises(M3terConfigError, match="format"):
        query_op(destination=str(tmp_path / "u.xlsx"))
    query_op(destination="{{ var.value.folder }}/u.jsonl", query_start="{{ ds }}")  # checked once rendered


def test_a_deferred_upload_still_checks_the_failure_events_of_its_own_uids(emu, tmp_path):
    """The spool of uids does not cross a deferral: they are derived again from the same input."""
    from m3ter_provider.errors import M3terIngestRejectedError

    path = tmp_path / "usage.jsonl"
    rows = [measurement(i) for i in range(4)]
    rows.append({"account": "acme", "meter": "unknown_meter", "ts": "2026-01-01T00:00:00Z"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    kwargs = {"measurements_file": str(path), "deferrable": True, "check_ingest_failures": "fail"}
    op = upload_op(ingest_failures_wait=5, **kwargs)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(make_context(op))

    async def collect():
        return [event async for event in deferred.value.trigger.run()]

    [event] = asyncio.run(collect())
    resumed = upload_op(ingest_failures_wait=5, **kwargs)
    with pytest.raises(M3terIngestRejectedError, match=r"rejected 1 of 5 measurements \(ingest.validation"):
        resumed.execute_complete(make_context(resumed), event.payload, **deferred.value.kwargs)
