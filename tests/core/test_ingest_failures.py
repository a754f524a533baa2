"""read_ingest_failures / check_ingest_failures against the emulator and against odd Event shapes."""

from __future__ import annotations

import datetime as dt
import logging

import pytest

from m3ter_provider.core.ingest.failures import (
    M3terIngestCheckError,
    M3terIngestRejectedError,
    check_ingest_failures,
    check_wait,
    read_ingest_failures,
)
from m3ter_provider.errors import M3terAPIError, M3terConfigError
from m3ter_provider.testing import M3terEmulator

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)


def _event(i: int, when: dt.datetime, data: dict | None) -> dict:
    return {"id": f"e{i}", "eventName": "ingest.validation.failure",
            "eventTime": when.isoformat().replace("+00:00", "Z"), "m3terEvent": data}  # fmt: skip


class FakeHook:
    """Events as m3ter lists them (newest first), a detail file per Event; counts what was read."""

    def __init__(self, events: list[dict], details: dict[str, dict] | None = None) -> None:
        self.events = events
        self.details = details or {}
        self.yielded = 0
        self.downloads = 0

    def paginate(self, path: str, *, params=None, page_size=None):
        assert (path, params) == ("events", {"eventName": "ingest.validation.failure"})
        for event in self.events:
            self.yielded += 1
            yield event

    def get(self, path: str, *, params=None):
        assert path == "measurements/failedIngest/getDownloadUrl"
        return {"url": f"https://files.example/{params['file']}"}

    def download(self, url: str, destination) -> dict:
        import json

        self.downloads += 1
        with open(destination, "w", encoding="utf-8") as handle:
            json.dump(self.details[url.rsplit("/", 1)[-1]], handle)
        return {"destination": str(destination), "bytes": 1}


def test_the_window_stops_the_scan_of_a_newest_first_list() -> None:
    events = [_event(i, NOW - dt.timedelta(hours=i), {"eventData": {"uid": f"u{i}", "errorType": "X"}})
              for i in range(50)]  # fmt: skip
    hook = FakeHook(events)
    found = read_ingest_failures(hook, start=NOW - dt.timedelta(hours=2, minutes=30))
    assert [f.uid for f in found] == ["u0", "u1", "u2"]
    assert hook.yielded == 4  # the first Event older than the window ends the scan
    windowed = read_ingest_failures(
        FakeHook(events), start=NOW - dt.timedelta(hours=5), end=NOW - dt.timedelta(hours=3)
    )
    assert [f.uid for f in windowed] == ["u3", "u4", "u5"]


def test_an_oldest_first_list_is_scanned_to_its_end() -> None:
    """m3ter's spec does not say in which order it lists Events: an old Event first is no proof."""
    events = [_event(i, NOW - dt.timedelta(hours=i), {"eventData": {"uid": f"u{i}", "errorType": "X"}})
              for i in reversed(range(10))]  # fmt: skip
    hook = FakeHook(events)
    found = read_ingest_failures(hook, start=NOW - dt.timedelta(hours=2, minutes=30))
    assert sorted(f.uid for f in found) == ["u0", "u1", "u2"] and hook.yielded == 10


def test_event_times_of_any_precision_are_read() -> None:
    events = [_event(0, NOW, {"eventData": {"uid": "u0"}}), _event(1, NOW, {"eventData": {"uid": "u1"}})]
    events[0]["eventTime"] = "2026-01-01T11:59:59.1234567Z"
    events[1]["eventTime"] = "2026-01-01T08:00:00.5+00:00"
    found = read_ingest_failures(FakeHook(events), start=NOW - dt.timedelta(hours=1), fetch_details=False)
    assert [f.uid for f in found] == ["u0"]


def test_events_without_uid_or_reason_are_completed_from_their_file() -> None:
    events = [_event(0, NOW, {"eventData": {"getDownloadUrl": "https://api/x/getDownloadUrl?file=f0.json"}}),
              _event(1, NOW, '{"file": "f1.json", "errorType": "MissingField", "uid": "u1"}')]  # fmt: skip
    details = {
        "f0.json": {"errorType": "UndefinedMeter", "message": "no meter", "measurement": {"uid": "u0"}}
    }
    hook = FakeHook(events, details)
    found = read_ingest_failures(hook, start=NOW - dt.timedelta(minutes=1), uids={"u0", "u1"})
    assert [(f.uid, f.error_type, f.message) for f in found] == [
        ("u0", "UndefinedMeter", "no meter"), ("u1", "MissingField", None)
    ]  # fmt: skip
    assert hook.downloads == 1


def test_check_polls_until_the_wait_is_over_then_warns(caplog) -> None:
    late = [_event(0, NOW, {"eventData": {"uid": "u0", "errorType": "UndefinedMeter"}})]
    hook = FakeHook([])
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds
        hook.events = late  # m3ter recorded the failure while we waited

    with caplog.at_level(logging.WARNING):
        summary = check_ingest_failures(hook, uids=["u0", "u1"], start=NOW, mode="warn", wait=25,
                                        poll_interval=10, sleep=sleep, clock=lambda: clock[0])  # fmt: skip
    assert sleeps == [10, 10, 5] and summary["rejected"] == 1
    assert "rejected 1 of 2 measurements" in caplog.text


def test_fail_mode_stops_waiting_at_the_first_failures() -> None:
    hook = FakeHook([_event(0, NOW, {"eventData": {"uid": "u0", "errorType": "UndefinedMeter"}})])
    sleeps: list[float] = []
    with pytest.raises(M3terIngestRejectedError, match="UndefinedMeter"):
        check_ingest_failures(hook, uids=["u0"], start=NOW, mode="fail", wait=600, sleep=sleeps.append)
    assert sleeps == []


def test_the_hook_reads_the_emulators_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    from m3ter_provider.hooks.m3ter import M3terHook

    with M3terEmulator() as emu:
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", emu.airflow_conn_json())
        emu.seed("meters", [{"code": "calls", "name": "Calls", "dataFields": [], "derivedFields": []}])
        hook = M3terHook()
        start = dt.datetime.now(dt.timezone.utc)
        rows = [{"uid": f"u{i}", "account": "acme", "meter": "calls" if i % 3 else "nope",
                 "ts": "2026-01-01T00:00:00Z"} for i in range(9)]  # fmt: skip
        hook.submit_measurements(rows)
        failures = hook.get_ingest_failures(start=start)
        assert sorted(f["uid"] for f in failures) == ["u0", "u3", "u6"]
        assert {f["error_type"] for f in failures} == {"UndefinedMeter"}
        assert hook.get_ingest_failures(start=start, uids=["u3", "u4"])[0]["uid"] == "u3"
        assert hook.get_ingest_failures(start=start + dt.timedelta(hours=1)) == []


def test_a_spool_picks_its_own_uids_out_of_candidates() -> None:
    """The check matches Events to a submission by streaming its spool, not by holding its uids."""
    from m3ter_provider.core.ingest import spool_measurements

    rows = [{"account": "acme", "meter": "calls", "ts": "2026-01-01T00:00:00Z", "measure": {"n": i}}
            for i in range(2500)] + [{"uid": 'quo"te', "account": "acme", "meter": "calls",
                                      "ts": "2026-01-01T00:00:00Z"}]  # fmt: skip
    with spool_measurements(rows, uid_namespace="ns", max_items=1000) as spool:
        assert len(spool) == 3 and spool.measurements == 2501
        first, last = _uids_of(spool.body(0))[0], _uids_of(spool.body(2))[-2]
        assert spool.uids_among({first, last, "someone-else", 'quo"te'}) == {first, last, 'quo"te'}
        assert spool.uids_among(set()) == set()


def _uids_of(body: bytes) -> list[str]:
    import json

    return [m.get("uid") for m in json.loads(body)["measurements"]]


def test_the_hook_checks_its_own_submission_and_not_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """hook.submit_measurements(check_ingest_failures=...) from a @task: only this call's refusals."""
    from m3ter_provider.hooks.m3ter import M3terHook

    with M3terEmulator() as emu:
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", emu.airflow_conn_json())
        emu.seed("meters", [{"code": "calls", "name": "Calls", "dataFields": [], "derivedFields": []}])
        hook = M3terHook()
        other = [{"account": "acme", "meter": "nope", "ts": "2026-01-01T00:00:00Z"}]
        hook.submit_measurements(other, uid_namespace="another task")  # refused too, same window
        rows = [{"account": "acme", "meter": "calls" if i % 3 else "nope",
                 "ts": f"2026-01-01T00:00:0{i}Z"} for i in range(9)]  # fmt: skip
        summary = hook.submit_measurements(rows, check_ingest_failures="warn", ingest_failures_wait=0)
        assert summary["measurements"] == 9 and summary["rejected"] == 3
        assert {r["error_type"] for r in summary["rejections"]} == {"UndefinedMeter"}
        unchecked = hook.submit_measurements(rows[:1])
        assert unchecked["rejected"] is None


EVENTS_ROUTE = "GET /organizations/{orgId}/events"


@pytest.mark.parametrize("status", [403, 503])
def test_events_m3ter_will_not_serve_are_a_warning_in_warn_mode(monkeypatch, caplog, status) -> None:
    from m3ter_provider.hooks.m3ter import M3terHook

    with M3terEmulator() as emu:
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", emu.airflow_conn_json().replace(
            '"org_id"', '"max_retries": 0, "org_id"'))  # fmt: skip
        emu.add_fault(EVENTS_ROUTE, status=status, times=None)
        with caplog.at_level(logging.WARNING):
            summary = check_ingest_failures(M3terHook(), uids=["u0"], start=NOW, mode="warn", wait=0)
        assert summary == {"rejected": None, "duplicates": None, "rejections": []}
        assert "measurements were sent" in caplog.text and f"HTTP {status}" in caplog.text
        with pytest.raises(
            M3terIngestCheckError, match=rf"measurements were sent.*could not read.*HTTP {status}"
        ):
            check_ingest_failures(M3terHook(), uids=["u0"], start=NOW, mode="fail", wait=0)


def test_a_later_read_that_fails_keeps_the_earlier_result_in_warn_mode(caplog) -> None:
    hook = FakeHook([_event(0, NOW, {"eventData": {"uid": "u0", "errorType": "UndefinedMeter"}})])

    def sleep(seconds: float) -> None:
        def refused(*args, **kwargs):
            raise M3terAPIError("refused", method="GET", path="/events", status=403)

        hook.paginate = refused

    with caplog.at_level(logging.WARNING):
        summary = check_ingest_failures(hook, uids=["u0"], start=NOW, mode="warn", wait=30, sleep=sleep)
    assert summary["rejected"] == 1
    assert "last successful read" in caplog.text


@pytest.mark.parametrize("wait", [float("nan"), float("inf"), -1, 3601, "soon", True, None])
def test_a_wait_that_is_not_finite_and_capped_is_refused_by_name(wait) -> None:
    hook = FakeHook([])
    with pytest.raises(M3terConfigError, match=r"ingest_failures_wait .*finite number from 0 to 3600"):
        check_ingest_failures(hook, uids=["u0"], start=NOW, mode="warn", wait=wait)
    assert hook.yielded == 0
    assert check_wait(3600) == 3600.0 and check_wait(0) == 0.0


def test_a_presigned_download_url_never_becomes_the_failures_file() -> None:
    url = "https://files.example/failed.json?X-Amz-Signature=abc&X-Amz-Credential=def"
    hook = FakeHook([_event(0, NOW, {"eventData": {"uid": "u0", "errorType": "X", "getDownloadUrl": url}})])
    [failure] = read_ingest_failures(hook, start=NOW)
    assert failure.file is not None and "abc" not in failure.file and "Signature" not in failure.file
    assert failure.file.startswith("https://files.example/failed.json")
