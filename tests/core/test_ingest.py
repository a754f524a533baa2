"""Ingest core: schema validation, content-derived uids, exact-byte packing, the spool, lazy files."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import tracemalloc

import pytest

from m3ter_provider.core import ingest
from m3ter_provider.core.ingest import MeasurementFile, spool_measurements, uid_for
from m3ter_provider.errors import M3terConfigError, M3terValidationError


def m(i=0, **extra):
    row = {"account": "acme", "meter": "api_calls", "ts": "2026-01-31T12:00:00Z", "measure": {"calls": i}}
    row.update(extra)
    return row


def sent(spool):
    """Every measurement in the spool, in order, as m3ter would receive it."""
    return [row for i in range(len(spool)) for row in json.loads(spool.body(i))["measurements"]]


def uids(rows, namespace="ns"):
    with spool_measurements(rows, uid_namespace=namespace) as spool:
        return [row["uid"] for row in sent(spool)]


# ---------------------------------------------------------------- packing
def test_batches_respect_the_item_limit_and_keep_order():
    with spool_measurements([m(i) for i in range(2500)], uid_namespace="ns") as spool:
        assert [spool.count(i) for i in range(len(spool))] == [1000, 1000, 500]
        assert [r["measure"]["calls"] for r in sent(spool)] == list(range(2500))


def test_batches_respect_the_byte_limit_and_are_packed_greedily():
    rows = [m(i, metadata={"pad": "x" * random.randint(100, 900)}) for i in range(3000)]
    with spool_measurements(rows, uid_namespace="ns") as spool:
        bodies = [spool.body(i) for i in range(len(spool))]
        assert sum(spool.count(i) for i in range(len(spool))) == 3000
        assert all(len(body) < 512_000 for body in bodies)
        assert all(spool.count(i) <= 1000 for i in range(len(spool)))
        items = sent(spool)
        start = 0
        for i, body in enumerate(bodies[:-1]):  # each body but the last could not take the next row
            start += spool.count(i)
            following = json.dumps(items[start], separators=(",", ":"), ensure_ascii=False)
            assert len(body) + 1 + len(following.encode()) >= 512_000


def test_body_size_is_exact_at_the_boundary():
    rows = [m(i % 10) for i in range(10)]
    with spool_measurements(rows[:1], uid_namespace="ns") as one:
        item = len(one.body(0)) - len(b'{"measurements":[]}')
    limit = 19 + 3 * item + 2 + 1  # room for exactly 3 rows and 2 commas
    with spool_measurements(rows, uid_namespace="ns", max_bytes=limit) as spool:
        assert [spool.count(i) for i in range(len(spool))] == [3, 3, 3, 1]
        assert all(len(spool.body(i)) < limit for i in range(len(spool)))
        assert len(spool.body(0)) == limit - 1


def test_a_measurement_too_large_alone_is_refused():
    with pytest.raises(M3terValidationError, match=r"measurement #1 .*too large"):
        spool_measurements([m(0), m(1, metadata={"blob": "y" * 600_000})], uid_namespace="ns")


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("row", "text"),
    [
        ({"meter": "m", "ts": "2026-01-01T00:00:00Z"}, "'account' is required"),
        ({"account": "a", "ts": "2026-01-01T00:00:00Z"}, "'meter' is required"),
        ({"account": "a", "meter": "m"}, "'ts' is required"),
        ({"account": "a" * 81, "meter": "m", "ts": "2026-01-01T00:00:00Z"}, "at most 80"),
        ({"account": "", "meter": "m", "ts": "2026-01-01T00:00:00Z"}, "'account'"),
        ({"account": "a", "meter": "m", "ts": "yesterday"}, "not an RFC 3339"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01"}, "not an RFC 3339"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00"}, "no UTC offset"),
        ({"account": "a", "meter": "m", "ts": "2026-02-30T00:00:00Z"}, "not an RFC 3339"),
        ({"account": "a", "meter": "m", "ts": dt.datetime(2026, 1, 1)}, "no UTC offset"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "ets": "soon"}, "'ets'"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "uid": "u" * 51}, "'uid'"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "uid": None}, "'uid'.*null"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "uid": ""}, "'uid'"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "uid": 7}, "'uid'"),
        ({"account": " a", "meter": "m", "ts": "2026-01-01T00:00:00Z"}, "white space"),
        ({"account": "a", "meter": "m\n", "ts": "2026-01-01T00:00:00Z"}, "'meter'.*control"),
        (m(0, measure={"x": "1"}), r"measure\['x'\] is '1'.*finite numbers"),
        (m(0, measure={"x": float("nan")}), r"measure\['x'\] is nan"),
        (m(0, measure={"x": True}), r"measure\['x'\] is True"),
        (m(0, who={"x": 1}), r"who\['x'\] is 1.*strings"),
        (m(0, amount=3), "unknown field 'amount'"),
        ("not a dict", "must be a dict"),
    ],
)
def test_bad_measurements_name_position_field_and_fix(row, text):
    with pytest.raises(M3terValidationError, match=text) as err:
        spool_measurements([m(0), row], uid_namespace="ns")
    assert str(err.value).startswith("measurement #1")


def test_a_bad_row_deep_in_a_generator_is_named_by_its_position():
    def rows():
        yield from (m(i) for i in range(2345))
        yield m(0, ts="2026-01-01T00:00:00")

    with pytest.raises(M3terValidationError, match=r"^measurement #2345: 'ts'"):
        spool_measurements(rows(), uid_namespace="ns")


def test_timestamps_are_normalised_to_utc():
    rows = [
        m(0, ts="2026-01-31T13:30:00.000+01:30"),
        m(1, ts=dt.datetime(2026, 1, 31, 12, tzinfo=dt.timezone.utc)),
    ]
    with spool_measurements(rows, uid_namespace="ns") as spool:
        assert [r["ts"] for r in sent(spool)] == ["2026-01-31T12:00:00Z", "2026-01-31T12:00:00Z"]


def test_timestamps_with_a_zero_offset_that_is_not_utc_are_normalised_too():
    zero = dt.timezone(dt.timedelta(0))  # equal to timezone.utc, but another object
    rows = [m(ts=dt.datetime(2026, 1, 31, 12, tzinfo=zero)), m(ts="2026-01-31T14:00:00+02:00", ets=None)]
    rows.append(m(ets=dt.datetime(2026, 1, 31, 13, tzinfo=zero)))
    with spool_measurements(rows, uid_namespace="ns") as spool:
        assert [r["ts"] for r in sent(spool)] == ["2026-01-31T12:00:00Z"] * 3
        assert sent(spool)[2]["ets"] == "2026-01-31T13:00:00Z"
    assert uids(rows[:1]) == uids(rows[1:2])  # the same instant: the same content, the same uid


def test_spooling_pauses_automatic_gc_but_still_collects_garbage_cycles(monkeypatch):
    import gc
    import weakref

    class Junk:
        pass

    alive = weakref.WeakSet()
    most = 0

    def rows(count):
        nonlocal most
        for i in range(count):
            junk = Junk()
            junk.me = junk  # a cycle: only the cyclic collector frees it
            alive.add(junk)
            most = max(most, len(alive))
            yield m(i)

    monkeypatch.setattr(ingest, "GC_EVERY_CHUNKS", 2)
    assert gc.isenabled()
    with spool_measurements(rows(10_000), uid_namespace="ns") as spool:
        assert spool.measurements == 10_000
    assert gc.isenabled()
    assert most < 3_000  # collected every 2 chunks of 1,000 rows, not only at the end (10,000)
    with pytest.raises(M3terValidationError):
        spool_measurements([m(), {"account": "acme"}], uid_namespace="ns")
    assert gc.isenabled()
    gc.disable()
    try:
        spool_measurements([m()], uid_namespace="ns").close()
        assert not gc.isenabled()  # a caller's choice is kept
    finally:
        gc.enable()


@pytest.mark.parametrize("value", ["text", b"bytes", {"account": "a"}, 42])
def test_a_single_value_is_not_a_list_of_measurements(value):
    with pytest.raises(M3terValidationError, match="list"):
        spool_measurements(value, uid_namespace="ns")


# ---------------------------------------------------------------- uids
def test_every_measurement_gets_a_uid_and_a_given_one_is_kept():
    got = uids([m(0), m(1, uid="mine"), m(2)])
    assert got[1] == "mine"
    assert len(set(got)) == 3 and all(0 < len(uid) <= 50 for uid in got)


def test_uids_follow_content_not_position():
    a, b, c = m(1), m(2), m(3)
    first = dict(zip("AB", uids([a, b]), strict=True))
    again = dict(zip("CAB", uids([c, a, b]), strict=True))  # a late row first, the rest shifted
    assert again["A"] == first["A"] and again["B"] == first["B"]
    assert again["C"] not in first.values()
    shuffled = [m(i) for i in range(500)]
    random.shuffle(shuffled)
    assert sorted(uids(shuffled)) == sorted(uids([m(i) for i in range(500)]))


def test_canonical_content_ignores_key_order_offsets_and_number_types():
    plain = m(0, who={"a": "1", "b": "2"}, measure={"x": 1, "y": 2.5})
    same = {
        "measure": {"y": 2.5, "x": 1.0},
        "who": {"b": "2", "a": "1"},
        "ts": "2026-01-31T14:00:00.000+02:00",
        "meter": "api_calls",
        "account": "acme",
    }
    assert uids([plain]) == uids([same])
    assert uids([plain]) != uids([m(0, who={"a": "1", "b": "3"}, measure={"x": 1, "y": 2.5})])


def test_identical_rows_get_one_uid_per_occurrence_stable_across_runs():
    row = m(7)
    first = uids([row, m(1), row, row])
    assert len(set(first)) == 4
    again = uids([m(2), row, row, m(1), row])  # reordered, one row added
    assert {again[1], again[2], again[4]} == {first[0], first[2], first[3]}
    assert again[3] == first[1]
    assert uid_for("ns", row) == first[0] and uid_for("ns", row, occurrence=1) == first[2]


def test_uids_depend_on_the_namespace():
    rows = [m(i) for i in range(3)]
    assert not set(uids(rows, "run-1")) & set(uids(rows, "run-2"))


def test_occurrence_counting_holds_many_distinct_rows_in_little_memory():
    count = 50_000
    tracemalloc.start()
    assigner = ingest.uids.UidAssigner("ns")
    before = tracemalloc.get_traced_memory()[0]
    for start in range(0, count, 1000):
        structs, _ = next(ingest.sources.chunks_of([m(i) for i in range(start, start + 1000)]))
        assigner.encode(structs)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown / count < 16  # bytes per distinct row (a set of digests would take ~100)


# ---------------------------------------------------------------- files
def test_json_lines_and_csv_files_are_read(tmp_path):
    jsonl = tmp_path / "usage.jsonl"
    jsonl.write_text("\n".join(json.dumps(m(i)) for i in range(5)) + "\n\n")
    csv_file = tmp_path / "usage.csv"
    csv_file.write_text(
        "account,meter,ts,measure.gb,who.region,uid\n"
        "acme,storage,2026-01-01T00:00:00Z,1.5,eu,\n"
        'acme,storage,2026-01-01T01:00:00Z,2,"multi\nline",u-2\n'
    )
    with spool_measurements(jsonl, uid_namespace="ns") as spool:
        assert [r["measure"]["calls"] for r in sent(spool)] == [0, 1, 2, 3, 4]
    with spool_measurements(MeasurementFile(csv_file), uid_namespace="ns") as spool:
        rows = sent(spool)
    assert rows[0]["measure"] == {"gb": 1.5} and rows[0]["who"] == {"region": "eu"}
    assert rows[1]["uid"] == "u-2" and rows[1]["who"] == {"region": "multi\nline"}


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("account,meter,ts,colour\n", ".csv", "unknown column 'colour'"),
        ("account,meter,ts,measure.gb\nacme,m,2026-01-01T00:00:00Z,lots\n", ".csv", "line 2.*'measure.gb'"),
        ("account,meter,ts\nacme,m,2026-01-01T00:00:00Z\nacme,m,later\n", ".csv", "line 3: 'ts'"),
        (json.dumps(m(0)) + "\nnot json\n", ".jsonl", "line 2: not valid JSON"),
        ("[1, 2]\n", ".jsonl", "line 1: .*must be a dict"),
        (json.dumps(m(0)) + "\n\n" + json.dumps(m(1, ts="x")) + "\n", ".jsonl", "line 3: 'ts'"),
        (json.dumps(m(0)) + "\n" + json.dumps(m(1, account=" x")) + "\n", ".jsonl", "line 2: 'account'"),
    ],
)
def test_bad_files_name_the_line_and_field(tmp_path, content, suffix, message):
    path = tmp_path / f"usage{suffix}"
    path.write_text(content)
    with pytest.raises(M3terValidationError, match=message):
        spool_measurements(path, uid_namespace="ns")


def test_a_file_format_is_needed(tmp_path):
    with pytest.raises(M3terConfigError, match="cannot tell the format"):
        MeasurementFile(tmp_path / "usage.txt")
    assert MeasurementFile(tmp_path / "usage.txt", "ndjson").file_format == "jsonl"


def _peak_growth(tmp_path, rows: int) -> int:
    """Peak traced memory while spooling a JSON Lines file of ``rows`` rows (a fresh process)."""
    path = tmp_path / f"usage-{rows}.jsonl"
    with path.open("w") as handle:
        for i in range(rows):
            row = m(i, who={"user": f"user-{i:07d}"}, ts=f"2026-01-01T{i // 3600 % 24:02d}:00:00Z")
            handle.write(json.dumps(row) + "\n")
    script = (
        "import sys, tracemalloc\n"
        "from m3ter_provider.core.ingest import spool_measurements\n"
        "spool_measurements([{'account': 'a', 'meter': 'm', 'ts': '2026-01-01T00:00:00Z'}], "
        "uid_namespace='warm').close()\n"
        "tracemalloc.start()\n"
        "spool = spool_measurements(__import__('pathlib').Path(sys.argv[1]), uid_namespace='ns')\n"
        "assert spool.measurements == int(sys.argv[2]), spool.measurements\n"
        "print(tracemalloc.get_traced_memory()[1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path), str(rows)], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


def test_a_json_lines_file_is_spooled_in_flat_memory(tmp_path):
    # both past the first 1 MiB blocks read, so the peaks differ by what grows with the rows
    small, large = _peak_growth(tmp_path, 20_000), _peak_growth(tmp_path, 100_000)
    # 80,000 more rows may cost the occurrence table's ~7 bytes each, not the rows themselves
    assert (large - small) / 80_000 < 16, (small, large)


def test_msgspec_is_imported_only_when_measurements_are_read():
    # Airflow 3 imports msgspec itself, so check our modules' own top-level imports
    import ast
    import pathlib

    package = pathlib.Path(ingest.__file__).parent.parent
    for path in [*package.glob("ingest/*.py"), *package.glob("operators/*.py"), package / "client.py"]:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [name for name in names if name.split(".")[0] == "msgspec"], path
