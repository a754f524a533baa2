"""The mapped-ingest example: a JSON Lines file split by content into slices, mapped ingest, counts
reconciled; a cleared run with a changed input stores each real row once."""

from __future__ import annotations

import collections
import datetime as dt
import json
import pathlib
import random

import pytest

from tests.dags.test_example_dags import emulator, run_example  # noqa: F401 - emulator is a fixture

DAG_ID = "example_m3ter_mapped_ingest"
ROWS = 3_000
SLICES = 4


def _params(tmp_path: pathlib.Path, **more) -> dict:
    return {"input": str(tmp_path / "usage.jsonl"), "rows": ROWS, "slices": SLICES, **more}


@pytest.mark.e2e
def test_mapped_ingest_generates_splits_ingests_and_reconciles(emulator, tmp_path):  # noqa: F811
    _, xcoms = run_example(DAG_ID, conf=_params(tmp_path))
    summary = xcoms[("reconcile", "return_value")]
    assert summary["sent"] == summary["accepted"] == ROWS and summary["slices"] == SLICES
    stored = emulator.measurements()
    assert len(stored) == ROWS == len({m["uid"] for m in stored})  # each row stored once
    assert sorted(int(m["metadata"]["row"]) for m in stored) == list(range(ROWS))
    requests = emulator.stats()["requests"]["POST /organizations/{orgId}/measurements"]
    assert requests == summary["requests"] >= SLICES  # every slice sent its own batches
    assert len(emulator.entities("meters")) == 1  # created on the first run
    slices = xcoms[("split", "return_value")]
    assert len(slices) == SLICES and sum(xcoms[("split", "rows")]) == ROWS
    assert not any(pathlib.Path(name).exists() for name in slices)  # removed once reconciled


@pytest.mark.e2e
def test_mapped_ingest_reads_an_existing_input_through_object_storage(emulator, tmp_path):  # noqa: F811
    rows = [
        {
            "account": "acme",
            "meter": "example_mapped_requests",
            "ts": "2026-01-01T00:00:00Z",
            "measure": {"requests": i},
        }
        for i in range(250)
    ]
    source = tmp_path / "given.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")  # a trailing blank line
    conf = _params(tmp_path, input=f"file://{source}", slices=3)
    _, xcoms = run_example(DAG_ID, conf=conf)
    assert xcoms[("reconcile", "return_value")]["accepted"] == 250
    assert len(emulator.measurements()) == 250
    assert all(name.startswith("file://") for name in xcoms[("split", "return_value")])


def _rows(count: int, rng: random.Random, start: int = 0) -> list[dict]:
    """``count`` rows for the example's Meter; about one in five repeats an earlier row (a real
    second event with the same content)."""
    rows: list[dict] = []
    for i in range(start, start + count):
        if rows and rng.random() < 0.2:
            rows.append(dict(rng.choice(rows)))
            continue
        rows.append(
            {
                "account": f"acct-{i % 40}",
                "meter": "example_mapped_requests",
                "ts": f"2026-01-{i % 28 + 1:02d}T{i % 24:02d}:00:00Z",
                "measure": {"requests": i % 9 + 1},
                "where": {"region": f"r{i % 7}"},
            }
        )
    return rows


def _content(row: dict) -> str:
    """A row's content as sent or as stored (no uid; numbers as m3ter stores them: floats)."""
    fields = {k: row[k] for k in ("account", "meter", "ts", "where")}
    fields["measure"] = {k: float(v) for k, v in row["measure"].items()}
    return json.dumps(fields, sort_keys=True)


@pytest.mark.e2e
def test_a_cleared_run_whose_input_was_reordered_and_grew_stores_each_real_row_once(emulator, tmp_path):  # noqa: F811
    """Issue 13: 6,100 rows stored; the run cleared after its input was reordered and 600 late rows
    appended (some repeating earlier ones): 6,700 stored, not 11,285."""
    rng = random.Random(2026)
    rows = _rows(6_100, rng)
    source = tmp_path / "usage.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    when = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)
    run, xcoms = run_example(DAG_ID, conf=_params(tmp_path, input=str(source)), logical_date=when)
    assert xcoms[("reconcile", "return_value")]["accepted"] == 6_100
    assert len(emulator.measurements()) == 6_100

    late = _rows(500, rng, start=100_000) + [dict(r) for r in rng.sample(rows, 100)]
    grown = rows + late
    rng.shuffle(grown)
    source.write_text("".join(json.dumps(r) + "\n" for r in grown))
    again, xcoms = run_example(DAG_ID, conf=_params(tmp_path, input=str(source)), logical_date=when)
    assert again.run_id == run.run_id  # the same run, cleared: the same uid namespace
    assert xcoms[("reconcile", "return_value")]["accepted"] == 6_700
    stored = emulator.measurements()
    assert len(stored) == 6_700 == len({m["uid"] for m in stored})
    # what m3ter holds is exactly the real events: the multiset of contents of the grown input
    assert collections.Counter(map(_content, stored)) == collections.Counter(map(_content, grown))
