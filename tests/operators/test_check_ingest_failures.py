"""check_ingest_failures: measurements m3ter accepts and then refuses are reported, exactly those."""

from __future__ import annotations

import json

import pytest

from m3ter_provider.core.ingest.failures import M3terIngestRejectedError
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.operators.m3ter import M3terSubmitMeasurementsOperator
from tests.operators.helpers import make_context, measurement


def _mixed_rows() -> list[dict]:
    """6 good rows and 3 bad ones: two for a Meter that does not exist, one near-miss Account code."""
    rows = [measurement(i) for i in range(6)]
    rows.insert(2, measurement(100, meter="no_such_meter"))
    rows.insert(5, measurement(101, meter="no_such_meter"))
    rows.append({**measurement(102), "account": "ACME", "uid": "near-miss"})
    return rows


def _seed_acme(emu) -> None:
    emu.seed("accounts", [{"code": "acme", "name": "Acme"}])


def test_fail_mode_reports_exactly_the_bad_rows(emu):
    _seed_acme(emu)
    op = M3terSubmitMeasurementsOperator(
        task_id="push", measurements=_mixed_rows(), check_ingest_failures="fail", ingest_failures_wait=0
    )
    with pytest.raises(M3terIngestRejectedError) as caught:
        op.execute(make_context(op))
    message = str(caught.value)
    assert "rejected 3 of 9 measurements" in message
    assert message.count("UndefinedMeter") == 2 and message.count("InvalidAccountCode") == 1
    assert "near-miss" in message
    assert emu.stats()["measurements_stored"] == 6


def test_warn_mode_returns_the_rejections(emu):
    _seed_acme(emu)
    rows = _mixed_rows()
    op = M3terSubmitMeasurementsOperator(
        task_id="push", measurements=rows, check_ingest_failures="warn", ingest_failures_wait=0
    )
    result = op.execute(make_context(op))  # warns (the wording is checked in tests/core)
    assert result["measurements"] == 9 and result["rejected"] == 3 and result["duplicates"] == 0
    stored = {m["uid"] for m in emu.measurements()}
    sent_uids = {r["uid"] for r in result["rejections"]}
    assert len(stored) == 6 and not stored & sent_uids
    assert sorted(r["meter"] for r in result["rejections"]) == ["api_calls", "no_such_meter", "no_such_meter"]
    json.dumps(result)


def test_only_this_submissions_uids_count(emu):
    _seed_acme(emu)
    other = M3terSubmitMeasurementsOperator(
        task_id="other", measurements=[measurement(7, meter="no_such_meter")], check_ingest_failures="off"
    )
    assert other.execute(make_context(other))["rejected"] is None  # off: not checked
    good = M3terSubmitMeasurementsOperator(
        task_id="push", measurements=[measurement(i) for i in range(3)], check_ingest_failures="fail",
        ingest_failures_wait=0,
    )  # fmt: skip
    result = good.execute(make_context(good))
    assert (result["rejected"], result["rejections"]) == (0, [])


def test_a_rerun_resending_ingested_uids_is_not_a_rejection(emu):
    _seed_acme(emu)
    op = M3terSubmitMeasurementsOperator(
        task_id="push", measurements=[measurement(i) for i in range(4)], check_ingest_failures="fail",
        ingest_failures_wait=0,
    )  # fmt: skip
    op.execute(make_context(op))
    again = op.execute(make_context(op))  # same task instance: same uids, m3ter counts them once
    assert (again["rejected"], again["duplicates"]) == (0, 4)
    assert emu.stats()["measurements_stored"] == 4


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"check_ingest_failures": "loud"}, "off, warn, fail"),
    ({"check_ingest_failures": "warn", "ingest_failures_wait": -1}, "ingest_failures_wait"),
])  # fmt: skip
def test_bad_options_are_refused_when_the_dag_is_parsed(kwargs, match):
    with pytest.raises(M3terConfigError, match=match):
        M3terSubmitMeasurementsOperator(task_id="push", measurements=[measurement(0)], **kwargs)
