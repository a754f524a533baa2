"""Splitting measurements by content: a row keeps its slice whatever the order or size of the input,
repeats stay together, and mapped slices ingested with one namespace store every real event once."""

from __future__ import annotations

import collections
import json
import pathlib
import random
import tracemalloc

import pytest

from m3ter_provider.core.ingest import schema
from m3ter_provider.core.ingest.slices import MAX_SLICES, check_slice_count, slice_of, split_by_content
from m3ter_provider.core.ingest.sources import chunks_of
from m3ter_provider.errors import M3terConfigError, M3terValidationError
from tests.testing.helpers import know_meters


def row(i: int, **extra) -> dict:
    base = {
        "account": f"acct-{i % 13}",
        "meter": "api_calls",
        "ts": f"2026-01-{i % 28 + 1:02d}T{i % 24:02d}:00:00Z",
        "measure": {"calls": i % 50},
    }
    base.update(extra)
    return base


def rows_with_repeats(n: int, rng: random.Random) -> list[dict]:
    """``n`` rows where about a third repeat an earlier one (the same content, a real second event)."""
    rows: list[dict] = []
    for i in range(n):
        rows.append(dict(rng.choice(rows)) if rows and rng.random() < 0.3 else row(i))
    return rows


def write_jsonl(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def canonical(r: dict) -> bytes:
    """A row's canonical line, as the uids and the split see it (a uid-less row: no uid key)."""
    structs, _label = next(chunks_of([r]))
    return schema.encoder().encode(structs[0])


def read_slices(parts) -> list[bytes]:
    return [line for part in parts for line in pathlib.Path(part.path).read_bytes().splitlines()]


def placement(parts) -> dict[bytes, int]:
    """Each distinct canonical line -> the slice holding it (fails if one line is in two slices)."""
    where: dict[bytes, int] = {}
    for part in parts:
        for line in pathlib.Path(part.path).read_bytes().splitlines():
            assert where.setdefault(line, part.index) == part.index, "a content in two slices"
    return where


# ---------------------------------------------------------------- the assignment
@pytest.mark.parametrize("seed", range(5))
def test_reordering_growing_or_shrinking_the_input_never_moves_a_row(tmp_path, seed):
    rng = random.Random(seed)
    rows = rows_with_repeats(1500, rng)
    first = split_by_content(write_jsonl(tmp_path / "a.jsonl", rows), 7, tmp_path / "a")
    before = placement(first)
    changed = rows[: rng.randrange(1000, 1500)] + [row(10_000 + i) for i in range(400)] + rows[:50]
    rng.shuffle(changed)
    second = split_by_content(write_jsonl(tmp_path / "b.jsonl", changed), 7, tmp_path / "b")
    after = placement(second)
    common = before.keys() & after.keys()
    assert len(common) > 500  # most rows are in both inputs
    assert all(before[line] == after[line] for line in common)
    # every row is written once, repeats included: the slices hold exactly the input
    assert sum(p.rows for p in second) == len(changed)
    assert collections.Counter(read_slices(second)) == collections.Counter(map(canonical, changed))


def test_repeats_land_together_and_each_row_is_written_once(tmp_path):
    rows = [row(1)] * 5 + [row(2)] * 3 + [row(i) for i in range(3, 200)]
    parts = split_by_content(rows, 4, tmp_path)  # an iterable of dicts works too
    counts = {
        part.index: collections.Counter(pathlib.Path(part.path).read_bytes().splitlines()) for part in parts
    }
    holding = [index for index, lines in counts.items() if lines[canonical(row(1))]]
    assert len(holding) == 1 and counts[holding[0]][canonical(row(1))] == 5
    assert sum(lines[canonical(row(2))] for lines in counts.values()) == 3
    assert sum(p.rows for p in parts) == len(rows) == sum(sum(c.values()) for c in counts.values())


def test_the_slice_is_the_content_hash_modulo_the_count_and_equal_content_is_equal(tmp_path):
    # the same measurement written differently (key order, offset, an int for a float) is one content
    a = {"ts": "2026-01-31T13:00:00+01:00", "meter": "m", "account": "a", "measure": {"x": 1}}
    b = {"account": "a", "meter": "m", "ts": "2026-01-31T12:00:00Z", "measure": {"x": 1.0}}
    assert canonical(a) == canonical(b)
    parts = split_by_content([a, b], 16, tmp_path)
    assert [(p.index, p.rows) for p in parts] == [(slice_of(canonical(a), 16), 2)]


def test_a_slice_file_splits_to_itself(tmp_path):
    """Slices hold canonical lines: re-reading one gives the same content (and so the same uids)."""
    rows = rows_with_repeats(300, random.Random(9))
    parts = split_by_content(rows, 3, tmp_path / "once")
    for part in parts:
        [again] = split_by_content(pathlib.Path(part.path), 1, tmp_path / f"twice{part.index}")
        assert pathlib.Path(again.path).read_bytes() == pathlib.Path(part.path).read_bytes()


def test_empty_slices_are_not_returned_nor_left_behind(tmp_path):
    parts = split_by_content([row(1)], 8, tmp_path / "out")
    assert len(parts) == 1 and parts[0].rows == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == [pathlib.Path(parts[0].path).name]
    assert pathlib.Path(parts[0].path).name.endswith("-of-00008.jsonl")


def test_csv_input_is_split_into_json_lines(tmp_path):
    source = tmp_path / "usage.csv"
    source.write_text("account,meter,ts,measure.calls\n" + "acme,api_calls,2026-01-31T12:00:00Z,3\n" * 2)
    [part] = split_by_content(source, 1, tmp_path / "out")
    assert part.rows == 2
    assert [json.loads(line)["measure"] for line in read_slices([part])] == [{"calls": 3.0}] * 2


def test_a_bad_row_fails_the_split_naming_it(tmp_path):
    source = write_jsonl(tmp_path / "usage.jsonl", [row(1), row(2, ts="yesterday")])
    with pytest.raises(M3terValidationError, match=r"usage.jsonl line 2: 'ts' is invalid"):
        split_by_content(source, 4, tmp_path / "out")


@pytest.mark.parametrize("count", [0, -1, MAX_SLICES + 1, 2.0, "8", True, None])
def test_a_bad_slice_count_is_refused(tmp_path, count):
    with pytest.raises(M3terConfigError, match="slice_count"):
        split_by_content([row(1)], count, tmp_path)
    assert check_slice_count(8) == 8


def test_splitting_keeps_memory_flat(tmp_path):
    """Memory holds one block of the input (1 MiB of rows) at a time: 80,000 rows cost no more
    than 25,000 rows (both several blocks), give or take 1 MB (measured: ~16.5 MB for each)."""

    def peak(n: int) -> int:
        source = tmp_path / f"in{n}.jsonl"
        with source.open("w") as out:
            for i in range(n):
                out.write(json.dumps(row(i, metadata={"row": str(i)})) + "\n")
        tracemalloc.start()
        try:
            parts = split_by_content(source, 8, tmp_path / f"out{n}")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert sum(p.rows for p in parts) == n

    small, large = peak(25_000), peak(80_000)
    assert large < small + 1_000_000, (small, large)


# ---------------------------------------------------------------- against the emulator
def test_mapped_slices_with_one_namespace_store_each_real_event_once_across_a_changed_rerun(
    m3ter_conn, tmp_path
):
    """Run 1: 6,100 rows (with repeats) in 4 slices. Run 2, the same run cleared: the input reordered,
    600 rows appended (some repeating earlier ones), and split into 3 slices this time. m3ter holds
    exactly the 6,700 real events."""
    from m3ter_provider.hooks.m3ter import M3terHook

    know_meters(m3ter_conn, "api_calls")  # m3ter refuses (after a 200) measurements of unknown Meters
    rng = random.Random(13)
    rows = rows_with_repeats(6_100, rng)
    hook = M3terHook()

    def run(rows: list[dict], slices: int, name: str) -> int:
        parts = split_by_content(write_jsonl(tmp_path / f"{name}.jsonl", rows), slices, tmp_path / name)
        sent = 0
        for part in parts:
            result = hook.submit_measurements(pathlib.Path(part.path), uid_namespace="dag/ingest_slice/run-1")
            sent += result["measurements"]
        return sent

    assert run(rows, 4, "first") == 6_100
    assert len(m3ter_conn.measurements()) == 6_100
    grown = rows + [row(20_000 + i) for i in range(500)] + [dict(r) for r in rng.sample(rows, 100)]
    rng.shuffle(grown)
    assert run(grown, 3, "cleared") == 6_700
    stored = m3ter_conn.measurements()
    assert len(stored) == 6_700 == len({m["uid"] for m in stored})
    want = collections.Counter(canonical(r) for r in grown)
    got = collections.Counter(
        canonical({k: v for k, v in m.items() if k in schema.KNOWN_FIELDS and k != "uid"}) for m in stored
    )
    assert got == want  # the multiset of stored measurements is the multiset of real events
