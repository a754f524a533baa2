from __future__ import annotations

import datetime as dt
import json

import pytest

from m3ter_provider.errors import M3terValidationError
from m3ter_provider.ingest import deterministic_uid, prepare_batches, validate_measurement


def m(i=0, **extra):
    row = {"account": "acme", "meter": "api_calls", "ts": "2026-01-31T12:00:00Z", "measure": {"calls": i}}
    row.update(extra)
    return row


def decode(batch):
    return json.loads(batch.body)["measurements"]


def test_batches_respect_the_item_limit_and_keep_order():
    rows = [m(i) for i in range(2500)]
    batches = prepare_batches(rows)
    assert [b.count for b in batches] == [1000, 1000, 500]
    sent = [row for b in batches for row in decode(b)]
    assert [r["measure"]["calls"] for r in sent] == list(range(2500))


def test_batches_respect_the_byte_limit():
    rows = [m(i, metadata={"pad": "x" * 550}) for i in range(3000)]
    batches = prepare_batches(rows)
    assert sum(b.count for b in batches) == 3000
    assert all(len(b.body) < 512_000 for b in batches)
    assert all(b.count <= 1000 for b in batches)
    # packed tightly: each batch but the last could not take one more row
    row_size = len(batches[0].body) // batches[0].count
    assert all(len(b.body) + row_size >= 512_000 - 2 for b in batches[:-1])


def test_body_size_is_exact_at_the_boundary():
    rows = [m(i) for i in range(10)]
    one = len(json.dumps(rows[0], separators=(",", ":")))
    # room for exactly 3 rows: 17 + 3*one + 2 commas + 2 < max_bytes
    limit = 17 + 3 * one + 2 + 2 + 1
    batches = prepare_batches(rows, max_bytes=limit)
    assert [b.count for b in batches] == [3, 3, 3, 1]
    assert all(len(b.body) < limit for b in batches)


def test_a_measurement_too_large_alone_is_refused():
    with pytest.raises(M3terValidationError, match=r"measurement #1 .*too large"):
        prepare_batches([m(0), m(1, metadata={"blob": "y" * 600_000})])


@pytest.mark.parametrize(
    ("row", "text"),
    [
        ({"meter": "m", "ts": "2026-01-01T00:00:00Z"}, "'account' is required"),
        ({"account": "a", "ts": "2026-01-01T00:00:00Z"}, "'meter' is required"),
        ({"account": "a", "meter": "m"}, "'ts' is required"),
        ({"account": "a" * 81, "meter": "m", "ts": "2026-01-01T00:00:00Z"}, "at most 80"),
        ({"account": "a", "meter": "m", "ts": "yesterday"}, "not an RFC 3339"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01"}, "not an RFC 3339"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00"}, "with a UTC offset"),
        ({"account": "a", "meter": "m", "ts": "2026-02-30T00:00:00Z"}, "not an RFC 3339"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "ets": "soon"}, "'ets'"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "uid": "u" * 51}, "'uid'"),
        ({"account": " a", "meter": "m", "ts": "2026-01-01T00:00:00Z"}, "white space"),
        (
            {"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "measure": {"x": "1"}},
            "finite number",
        ),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "who": {"x": 1}}, "string"),
        ({"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "amount": 3}, "unknown field"),
        ("not a dict", "must be a dict"),
    ],
)
def test_bad_measurements_name_position_and_field(row, text):
    with pytest.raises(M3terValidationError, match=text) as err:
        prepare_batches([m(0), row])
    assert "measurement #1" in str(err.value)


@pytest.mark.parametrize(
    "ts", ["2026-01-31T12:00:00Z", "2026-01-31T12:00:00.123456+01:00", "2026-01-31t12:00:00.5-05:30"]
)
def test_rfc3339_timestamps_are_accepted_as_given(ts):
    assert validate_measurement(m(ts=ts), 0)["ts"] == ts


def test_datetimes_are_accepted_when_timezone_aware():
    ts = dt.datetime(2026, 1, 31, 12, tzinfo=dt.timezone.utc)
    assert validate_measurement(m(ts=ts), 0)["ts"] == "2026-01-31T12:00:00Z"
    with pytest.raises(M3terValidationError, match="naive"):
        validate_measurement(m(ts=dt.datetime(2026, 1, 31)), 0)


def test_input_is_not_mutated_and_uids_are_deterministic():
    rows = [m(i) for i in range(3)] + [m(9, uid="mine")]
    first = [r for b in prepare_batches(rows, uid_namespace="dag/task/run/-1") for r in decode(b)]
    again = [r for b in prepare_batches(rows, uid_namespace="dag/task/run/-1") for r in decode(b)]
    other = [r for b in prepare_batches(rows, uid_namespace="dag/task/run2/-1") for r in decode(b)]
    assert all("uid" not in r for r in rows[:3])
    assert [r["uid"] for r in first] == [r["uid"] for r in again]
    assert first[3]["uid"] == "mine"
    assert len({r["uid"] for r in first}) == 4
    assert not {r["uid"] for r in first[:3]} & {r["uid"] for r in other[:3]}
    assert first[0]["uid"] == deterministic_uid("dag/task/run/-1", 0)
    assert len(first[0]["uid"]) <= 50


def test_single_mapping_is_refused():
    with pytest.raises(M3terValidationError, match="list of dicts"):
        prepare_batches(m(0))
