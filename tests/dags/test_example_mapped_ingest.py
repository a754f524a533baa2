"""The mapped-ingest example: a JSON Lines file split into slices, mapped ingest, counts reconciled."""

from __future__ import annotations

import json
import pathlib

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
