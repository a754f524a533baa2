"""M3terSplitMeasurementsOperator: slices by content, their row counts, and arguments checked at parse."""

from __future__ import annotations

import json
import pathlib

import pytest

from m3ter_provider.errors import M3terConfigError, M3terValidationError
from m3ter_provider.operators.m3ter import M3terSplitMeasurementsOperator, M3terSubmitMeasurementsOperator
from tests.operators.helpers import make_context, measurement


def write(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_split_returns_slice_paths_and_pushes_their_row_counts(tmp_path):
    rows = [measurement(i % 40) for i in range(100)]  # 40 contents, most repeated
    op = M3terSplitMeasurementsOperator(task_id="split", source=str(write(tmp_path / "u.jsonl", rows)))
    context = make_context(op, run_id="manual__2026-01-01T00:00:00+00:00")
    paths = op.execute(context)
    counts = context["ti"].xcom["rows"]
    assert 1 < len(paths) <= 8 and len(counts) == len(paths) and sum(counts) == 100
    assert all("u.jsonl.slices/manual__2026-01-01T00_00_00_00_00/" in p for p in paths)
    assert [len(pathlib.Path(p).read_text().splitlines()) for p in paths] == counts


def test_a_rendered_slice_count_and_a_destination_are_used(tmp_path):
    source = write(tmp_path / "u.jsonl", [measurement(i) for i in range(50)])
    op = M3terSplitMeasurementsOperator(
        task_id="split", source=str(source), slice_count="{{ params.n }}", destination=str(tmp_path / "out")
    )
    op.slice_count = "3"  # what Airflow hands over once the template is rendered
    paths = op.execute(make_context(op))
    assert len(paths) <= 3 and all(p.startswith(str(tmp_path / "out")) and "-of-00003" in p for p in paths)


def test_a_bad_row_fails_the_split_before_anything_is_sent(tmp_path, m3ter_conn):
    source = write(tmp_path / "u.jsonl", [measurement(1), {"account": "a", "meter": "m"}])
    op = M3terSplitMeasurementsOperator(task_id="split", source=str(source))
    with pytest.raises(M3terValidationError, match=r"u.jsonl line 2: 'ts' is required"):
        op.execute(make_context(op))
    assert m3ter_conn.stats()["requests"] == {}


@pytest.mark.parametrize("slice_count", [0, -2, 257, "eight", 2.5])
def test_a_bad_slice_count_is_refused_when_the_dag_is_parsed(slice_count):
    with pytest.raises(M3terConfigError, match="slice_count"):
        M3terSplitMeasurementsOperator(task_id="split", source="u.jsonl", slice_count=slice_count)


def test_a_bad_format_or_no_source_is_refused_when_the_dag_is_parsed():
    with pytest.raises(M3terConfigError, match="file_format"):
        M3terSplitMeasurementsOperator(task_id="split", source="u.dat", file_format="xml")
    with pytest.raises(M3terConfigError, match="source is required"):
        M3terSplitMeasurementsOperator(task_id="split", source="")


def test_slices_ingested_with_one_namespace_store_each_row_once_whatever_the_split(tmp_path, emu):
    rows = [measurement(i % 30) for i in range(90)]  # each content three times: three real events
    stored = 0
    for count, name in ((4, "a"), (7, "b")):  # a cleared run that split into another count
        source = write(tmp_path / f"{name}.jsonl", rows[::-1] if name == "b" else rows)
        split = M3terSplitMeasurementsOperator(task_id="split", source=str(source), slice_count=count)
        for index, path in enumerate(split.execute(make_context(split))):
            op = M3terSubmitMeasurementsOperator(
                task_id="ingest", measurements_file=path, uid_namespace="d/r"
            )
            op.execute(make_context(op, map_index=index))
        stored = emu.stats()["measurements_stored"]
        assert stored == 90
