"""M3terSubmitMeasurementsOperator and the hook's ingest: inputs, uids, partial failures, retries."""

from __future__ import annotations

import json
import time

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from m3ter_provider.core.ingest import M3terIngestError
from m3ter_provider.errors import M3terConfigError, M3terValidationError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators.m3ter import M3terSubmitMeasurementsOperator
from tests.operators.helpers import make_context, measurement, set_connection


def submit(op, **context_kwargs):
    return op.execute(make_context(op, **context_kwargs))


def test_a_list_is_sent_in_batches_and_summarised(emu):
    rows = [measurement(i) for i in range(2500)]
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=rows)
    result = submit(op)
    assert (result["measurements"], result["requests"]) == (2500, 3)
    assert emu.stats()["measurements_stored"] == 2500
    json.dumps(result)


def test_an_xcom_rendered_to_text_is_read_back(emu):
    rows = [measurement(i) for i in range(3)]
    op = M3terSubmitMeasurementsOperator(
        task_id="push", measurements="{{ params.rows }}", params={"rows": rows}
    )
    context = make_context(op, params={"rows": rows})
    op.render_template_fields(context)
    assert isinstance(op.measurements, str)  # what Airflow hands over without native rendering
    assert op.execute(context)["measurements"] == 3
    assert [m["measure"]["calls"] for m in emu.measurements()] == [0.0, 1.0, 2.0]


def test_uids_are_fixed_by_task_instance_and_content(emu):
    rows = [measurement(i) for i in range(4)]
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=rows)
    submit(op, run_id="run-a")
    first = [m["uid"] for m in emu.measurements()]
    assert len(set(first)) == 4

    submit(op, run_id="run-a")  # a re-run of the same task instance: same uids, nothing new stored
    assert emu.stats()["measurements_stored"] == 4

    submit(op, run_id="run-b")  # another run: new uids
    submit(op, run_id="run-a", map_index=1)  # another mapped instance: new uids
    uids = [m["uid"] for m in emu.measurements()]
    assert len(uids) == len(set(uids)) == 12


def test_a_given_uid_is_kept(emu):
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=[{**measurement(0), "uid": "mine-1"}])
    submit(op)
    assert [m["uid"] for m in emu.measurements()] == ["mine-1"]


def test_a_retry_after_a_lost_answer_resends_the_same_uids_and_m3ter_counts_once(emu, monkeypatch):
    # The first try's second request reaches m3ter, but the answer never comes back in time; with no
    # client retries left the task fails. The retry re-sends everything with the same uids.
    set_connection(monkeypatch, emu, max_retries=0, timeout=0.5)
    rows = [measurement(i) for i in range(1500)]
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=rows)
    emu.add_fault("POST /organizations/{orgId}/measurements", delay=0.01, times=1)  # first: fine
    emu.add_fault("POST /organizations/{orgId}/measurements", delay=1.0, times=1)  # second: answer lost
    with pytest.raises(M3terIngestError) as err:
        submit(op, try_number=1)
    assert err.value.accepted_measurements in (0, 500, 1000)  # the lost answer's batch is not counted
    summary = submit(op, try_number=2)
    assert (summary["measurements"], summary["requests"]) == (1500, 2)
    stats = emu.stats()
    assert stats["measurements_stored"] == 1500
    assert len({m["uid"] for m in emu.measurements()}) == 1500
    assert stats["measurements_received"] > 1500  # the retry really re-sent them


def test_a_json_lines_file(emu, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(measurement(i)) for i in range(5)) + "\n\n")
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements_file=str(path))
    assert submit(op)["measurements"] == 5


def test_a_csv_file_from_object_storage(emu, tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(
        "account,meter,ts,measure.gb,who.region,uid\n"
        "acme,storage,2026-01-01T00:00:00Z,1.5,eu,\n"
        "acme,storage,2026-01-01T01:00:00Z,2,,u-2\n"
    )
    op = M3terSubmitMeasurementsOperator(
        task_id="push", measurements_file=ObjectStoragePath(f"file://{path}")
    )
    assert submit(op)["measurements"] == 2
    stored = emu.measurements()
    assert stored[0]["measure"] == {"gb": 1.5} and stored[0]["who"] == {"region": "eu"}
    assert stored[1]["uid"] == "u-2" and "who" not in stored[1]


def test_a_file_url_string_is_object_storage(emu, tmp_path):
    path = tmp_path / "usage.data"
    path.write_text(json.dumps(measurement(1)) + "\n")
    op = M3terSubmitMeasurementsOperator(
        task_id="push", measurements_file=f"file://{path}", file_format="jsonl"
    )
    assert submit(op)["measurements"] == 1


def test_a_bad_measurement_sends_nothing(emu):
    rows = [measurement(0), {"account": "acme", "meter": "m"}]
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=rows)
    with pytest.raises(M3terValidationError, match=r"measurement #1.*'ts' is required"):
        submit(op)
    assert emu.stats()["measurements_stored"] == 0


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("account,meter,ts,colour\n", ".csv", "unknown column 'colour'"),
        ("account,meter,ts,measure.gb\nacme,m,2026-01-01T00:00:00Z,lots\n", ".csv", "line 2.*'measure.gb'"),
        (json.dumps(measurement(0)) + "\nnot json\n", ".jsonl", "line 2: not valid JSON"),
        ("[1, 2]\n", ".jsonl", "line 1: .*must be a dict"),
    ],
)
def test_bad_files_name_the_line_or_column(emu, tmp_path, content, suffix, message):
    path = tmp_path / f"usage{suffix}"
    path.write_text(content)
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements_file=str(path))
    with pytest.raises(M3terValidationError, match=message):
        submit(op)


def test_arguments_are_checked_when_the_dag_is_parsed(tmp_path):
    with pytest.raises(M3terConfigError, match="exactly one of measurements"):
        M3terSubmitMeasurementsOperator(task_id="t")
    with pytest.raises(M3terConfigError, match="exactly one of measurements"):
        M3terSubmitMeasurementsOperator(task_id="t", measurements=[], measurements_file="x.csv")
    op = M3terSubmitMeasurementsOperator(task_id="t", measurements_file=str(tmp_path / "usage.txt"))
    with pytest.raises(M3terConfigError, match="cannot tell the format"):
        op.execute(make_context(op))


@pytest.mark.parametrize("concurrency", [0, 11, 1.5])
def test_concurrency_is_checked_when_the_dag_is_parsed(concurrency):
    from m3ter_provider.errors import M3terConfigError
    from m3ter_provider.operators.m3ter import M3terSubmitMeasurementsOperator

    with pytest.raises(M3terConfigError, match="concurrency"):
        M3terSubmitMeasurementsOperator(task_id="push", measurements=[], concurrency=concurrency)


MEASUREMENTS = "POST /organizations/{orgId}/measurements"


def test_reordered_and_added_rows_are_stored_once_per_distinct_row(emu):
    a, b, c = measurement(1), measurement(2), measurement(3)
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=[a, b])
    submit(op)
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=[c, a, b, b])  # late row, a repeat
    submit(op)
    stored = sorted(m["measure"]["calls"] for m in emu.measurements())
    assert stored == [1.0, 2.0, 2.0, 3.0]  # C added, the second B is a real second event
    assert emu.stats()["measurements_duplicates"] == 2


@pytest.mark.parametrize("namespace", ["dag/task/run/-1", None])
def test_an_answer_slower_than_the_timeout_is_retried_and_stored_once(emu, monkeypatch, namespace):
    set_connection(monkeypatch, emu, max_retries=2, timeout=0.5)
    emu.add_fault(MEASUREMENTS, delay=1.0, times=1)  # m3ter stores it, the answer comes too late
    rows = [measurement(i) for i in range(3)]
    summary = M3terHook().submit_measurements(rows, uid_namespace=namespace)
    assert summary["measurements"] == 3
    for _ in range(100):  # the slow first answer is still on its way: let the emulator finish it
        stats = emu.stats()
        if stats["measurements_received"] >= 6:
            break
        time.sleep(0.05)
    assert stats["measurements_received"] == 6  # sent twice
    assert stats["measurements_stored"] == 3
    assert all(m.get("uid") for m in emu.measurements())


@pytest.mark.parametrize("namespace", ["dag/task/run/-1", None])
def test_a_refused_middle_batch_names_what_was_accepted_and_a_rerun_completes_it(emu, namespace):
    rows = [measurement(i, account=f"acct-{i // 1000}") for i in range(5000)]
    emu.add_fault(MEASUREMENTS, delay=0.001, times=2)  # the first two pass
    emu.add_fault(MEASUREMENTS, status=400, times=1)  # the third is refused
    hook = M3terHook()
    with pytest.raises(M3terIngestError, match=r"accepted 2,000 of 5,000 measurements \(in 2 of 5") as err:
        hook.submit_measurements(rows, uid_namespace=namespace, concurrency=1)
    assert (err.value.accepted_measurements, err.value.accepted_batches) == (2000, 2)
    assert err.value.cause.status == 400
    assert emu.stats()["measurements_stored"] == 2000
    resumed = hook.submit_measurements(rows, uid_namespace=err.value.uid_namespace, concurrency=1)
    assert resumed["measurements"] == 5000 and resumed["requests"] == 5
    assert emu.stats()["measurements_stored"] == 5000
    if namespace is None:
        assert "uid_namespace='random:" in str(err.value)


def test_null_and_bad_uids_are_refused_before_anything_is_sent(emu):
    for uid in (None, "", 7, "u" * 51):
        op = M3terSubmitMeasurementsOperator(
            task_id="push", measurements=[measurement(0), {**measurement(1), "uid": uid}]
        )
        with pytest.raises(M3terValidationError, match=r"measurement #1: 'uid'"):
            submit(op)
    assert emu.stats()["measurement_requests"] == 0


def test_a_generator_is_sent_lazily(emu):
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=(measurement(i) for i in range(1200)))
    assert submit(op)["measurements"] == 1200
    assert emu.stats()["measurements_stored"] == 1200


def test_a_literal_list_is_not_rendered(emu):
    rows = [{**measurement(i), "metadata": {"note": "{{ ds }} stays"}} for i in range(20_000)]
    snapshot = json.dumps(rows)
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=rows)
    context = make_context(op, ds="2026-01-01")
    op.render_template_fields(context)
    assert op.measurements is rows
    assert json.dumps(op.measurements) == snapshot  # "{{ ds }}" is data here, not a template
    generator = (row for row in rows[:3])
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=generator)
    op.render_template_fields(make_context(op))
    assert op.measurements is generator


def test_a_file_path_template_is_still_rendered(emu, tmp_path):
    (tmp_path / "2026-01-01.jsonl").write_text(json.dumps(measurement(1)) + "\n")
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements_file=str(tmp_path) + "/{{ ds }}.jsonl")
    context = make_context(op, ds="2026-01-01")
    op.render_template_fields(context)
    assert op.execute(context)["measurements"] == 1


def test_a_given_uid_namespace_is_shared_by_mapped_instances(emu):
    """Slices split by content each hold different rows: with one namespace a row's uid does not
    depend on the map index, so a row moved to another slice re-sends its uid."""
    rows = [measurement(i) for i in range(6)]
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=rows, uid_namespace="dag/run-a")
    submit(op, run_id="run-a", map_index=0)
    moved = M3terSubmitMeasurementsOperator(task_id="push", measurements=rows[3:], uid_namespace="dag/run-a")
    submit(moved, run_id="run-a", map_index=5)  # the same rows in another slice: nothing new
    assert emu.stats()["measurements_stored"] == 6
    assert op.template_fields.count("uid_namespace") == 1


def test_a_mapped_submit_takes_the_mixins_keywords_in_partial():
    """``partial(emit_asset_events=False)``: Airflow checks partial's keywords against the classes its
    metaclass wrapped, which a plain mixin is not; refused as unexpected until the mixin declared it."""
    import datetime as dt

    from airflow.providers.common.compat.sdk import DAG

    with DAG("mapped_quiet", schedule=None, start_date=dt.datetime(2026, 1, 1)):
        mapped = M3terSubmitMeasurementsOperator.partial(
            task_id="ingest", emit_asset_events=False, uid_namespace="ns"
        ).expand(measurements_file=["a.jsonl", "b.jsonl"])
    assert mapped.partial_kwargs["emit_asset_events"] is False
    with pytest.raises(TypeError, match="emit_asset_event'"):  # a misspelt keyword is still refused
        M3terSubmitMeasurementsOperator.partial(task_id="ingest2", emit_asset_event=False)


def _split_and_ingest(tmp_path, rows, run_id="manual__1"):
    """``M3terSplitMeasurementsOperator`` then the submit operator mapped over its slices, with no
    ``uid_namespace``, as a DAG author would first write it; returns the slice names by map index."""
    from m3ter_provider.operators.m3ter import M3terSplitMeasurementsOperator

    source = tmp_path / "usage.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    split = M3terSplitMeasurementsOperator(task_id="split", source=str(source), slice_count=8)
    context = make_context(split, run_id=run_id)
    context["ti"].xcom_push = lambda **_: None
    slices = split.execute(context)
    for map_index, path in enumerate(slices):  # map indexes follow the non-empty slices
        op = M3terSubmitMeasurementsOperator(task_id="ingest", measurements_file=path)
        op.execute(make_context(op, run_id=run_id, map_index=map_index))
    return [p.rsplit("/", 1)[-1] for p in slices]


def test_mapped_slices_without_a_namespace_keep_each_rows_uid_when_a_slice_fills(emu, tmp_path):
    """A cleared run whose input grew: a slice that was empty fills, every later slice moves to the
    next map index. Keyed on the map index, those rows would get new uids and be billed twice."""
    rows = [measurement(i) for i in range(3)]
    first = _split_and_ingest(tmp_path, rows)
    grown = rows + [measurement(i) for i in range(3, 40)]
    second = _split_and_ingest(tmp_path, grown)
    assert len(second) > len(first) and second[: len(first)] != first  # the map indexes moved
    stored = emu.measurements()
    assert len(stored) == len({m["uid"] for m in stored}) == 40


def test_mapped_files_are_keyed_by_file_and_rows_by_map_index(caplog):
    from m3ter_provider.tasks import task_uid_namespace

    op = M3terSubmitMeasurementsOperator(task_id="ingest", measurements=[])
    mapped = make_context(op, map_index=3)
    assert json.loads(task_uid_namespace(make_context(op))) == ["test_dag", "ingest", "manual__1", -1]
    assert (
        json.loads(task_uid_namespace(mapped, "/d/usage.jsonl.slices/r/part-00002-of-00008.jsonl"))[3]
        == "content slices"
    )
    assert json.loads(task_uid_namespace(mapped, "/data/hour-07.csv"))[3] == "file /data/hour-07.csv"
    assert "uid_namespace" not in caplog.text
    assert json.loads(task_uid_namespace(mapped))[3] == 3
    assert "Mapped task without uid_namespace" in caplog.text
