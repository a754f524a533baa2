"""M3terEventTrigger against the emulator's Events API: each Event delivered once, across restarts."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from m3ter_provider.core.events import Watermark, read_new_events
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.triggers.events import M3terEventTrigger

BILL = "billing.bill.updated"


class MemoryStateStore:
    """The asset state store accessor's async surface (aget/aset), kept across trigger instances."""

    def __init__(self) -> None:
        self.values: dict = {}
        self.writes = 0

    async def aget(self, key, default=None):
        return self.values.get(key, default)

    async def aset(self, key, value):
        self.writes += 1
        self.values[key] = value


class _Stopped(Exception):
    """The test stops the trigger while it waits between polls (as a triggerer shutting down)."""


def collect(trigger: M3terEventTrigger, count: int, timeout: float = 20.0) -> list[dict]:
    """Run the trigger until it fired ``count`` events and went back to waiting, then stop it there.

    Like the triggerer, the test keeps iterating after each event (so the trigger stores its
    watermark), and stops it only in its pause between polls.
    """
    payloads: list[dict] = []

    async def pause(seconds: float) -> None:
        if len(payloads) >= count:
            raise _Stopped
        await asyncio.sleep(0.05)

    trigger._sleep = pause

    async def consume() -> None:
        async for event in trigger.run():
            payloads.append(event.payload)

    async def go() -> None:
        await asyncio.wait_for(consume(), timeout)  # asyncio.timeout() needs Python 3.11

    with contextlib.suppress(_Stopped):
        asyncio.run(go())
    return payloads


def trigger(**kwargs) -> M3terEventTrigger:
    kwargs.setdefault("event_name", BILL)
    kwargs.setdefault("poll_interval", 1)
    return M3terEventTrigger(**kwargs)


def test_events_after_start_after_are_delivered_oldest_first_and_others_not(emu):
    old = emu.add_event(BILL, {"n": 0})
    new = [emu.add_event(BILL, {"n": i}) for i in (1, 2, 3)]
    emu.add_event("ingest.validation.failure", {"n": 99})
    payloads = collect(trigger(start_after=old["eventTime"]), 3)
    assert [p["event_id"] for p in payloads] == [e["id"] for e in new]
    assert [p["event"]["m3terEvent"]["eventData"]["n"] for p in payloads] == [1, 2, 3]
    assert {p["status"] for p in payloads} == {"success"}


def test_a_restarted_trigger_resumes_from_the_stored_watermark(emu):
    store = MemoryStateStore()
    start = emu.add_event(BILL, {"n": 0})
    first = [emu.add_event(BILL, {"n": i}) for i in (1, 2)]
    a = trigger(start_after=start["eventTime"])
    a.asset_state_store = store
    assert [p["event_id"] for p in collect(a, 2)] == [e["id"] for e in first]

    later = [emu.add_event(BILL, {"n": i}) for i in (3, 4)]
    b = trigger(start_after=start["eventTime"])  # the triggerer re-creates it from the same kwargs
    b.asset_state_store = store
    assert [p["event_id"] for p in collect(b, 2)] == [e["id"] for e in later]  # 1 and 2 not again
    assert store.writes >= 4


def test_without_a_state_store_a_restart_resumes_from_start_after_or_from_now(emu):
    start = emu.add_event(BILL, {"n": 0})
    seen = emu.add_event(BILL, {"n": 1})
    assert [p["event_id"] for p in collect(trigger(start_after=start["eventTime"]), 1)] == [seen["id"]]
    # documented fallback: no store, start_after given: from start_after again (at least once)
    assert [p["event_id"] for p in collect(trigger(start_after=start["eventTime"]), 1)] == [seen["id"]]


def test_fire_once_ends_after_the_first_event(emu):
    start = emu.add_event(BILL, {})
    emu.add_event(BILL, {"n": 1})
    emu.add_event(BILL, {"n": 2})

    async def all_events() -> list:
        return [event async for event in trigger(start_after=start["eventTime"], fire_once=True).run()]

    (event,) = asyncio.run(all_events())
    assert event.payload["event"]["m3terEvent"]["eventData"] == {"n": 1}


def test_filters_reach_m3ter(emu):
    start = emu.add_event(BILL, {})
    emu.add_event(BILL, {"n": 1}, account_id="acct-1")
    wanted = emu.add_event(BILL, {"n": 2}, account_id="acct-2")
    payloads = collect(trigger(start_after=start["eventTime"], filters={"account_id": "acct-2"}), 1)
    assert [p["event_id"] for p in payloads] == [wanted["id"]]


def test_a_refused_connection_fires_one_error(emu, monkeypatch):
    import json

    conn = json.loads(emu.airflow_conn_json())
    conn["password"] = "wrong"
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))
    (payload,) = collect(trigger(), 1)
    assert payload["status"] == "error" and BILL in payload["message"]
    assert "wrong" not in payload["message"]


def test_a_backlog_over_several_pages_is_read_once_oldest_first(emu):
    start = emu.add_event(BILL, {})
    made = [emu.add_event(BILL, {"n": i})["id"] for i in range(250)]
    client = M3terHook().client
    events, watermark = read_new_events(client, BILL, Watermark.after(start["eventTime"]))
    assert [e["id"] for e in events] == made
    assert emu.stats()["requests"]["GET /organizations/{orgId}/events"] == 3  # pages of 100
    for event in events:
        watermark = watermark.advanced(Watermark.after(event["eventTime"]).time, event["id"])
    again, _ = read_new_events(client, BILL, Watermark.from_json(watermark.to_json()))
    assert again == []


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"event_name": ""}, "event_name is required"),
        ({"poll_interval": 0.1}, "poll_interval must be at least 1"),
        ({"filters": {"account": "x"}}, "unknown Events filter 'account'"),
        ({"start_after": "yesterday"}, "start_after 'yesterday' is not an ISO-8601"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs, says):
    with pytest.raises(M3terConfigError, match=says):
        trigger(**kwargs)


def test_serialize_round_trips():
    t = trigger(filters={"account_id": "a"}, start_after="2026-01-01T00:00:00Z")
    path, kwargs = t.serialize()
    assert path == "m3ter_provider.triggers.events.M3terEventTrigger"
    assert M3terEventTrigger(**kwargs).serialize() == (path, kwargs)


def test_it_is_an_event_trigger_an_asset_watcher_accepts():
    sdk = pytest.importorskip("airflow.sdk")
    from airflow.triggers.base import BaseEventTrigger

    t = trigger()
    assert isinstance(t, BaseEventTrigger)
    asset = sdk.Asset("m3ter://emulator-org/bills", watchers=[sdk.AssetWatcher(name="bills", trigger=t)])
    assert asset.watchers[0].trigger is t


def test_the_emulator_control_route_records_an_event_get_events_serves(emu):
    import requests

    made = requests.post(
        f"{emu.url}/_emulator/events",
        json={"eventName": BILL, "eventData": {"newDto": {"id": "b1"}}},
        timeout=10,
    )
    assert made.status_code == 200
    listed = M3terHook().get("events", params={"eventName": BILL})["data"]
    assert [e["id"] for e in listed] == [made.json()["id"]]
    assert listed[0]["m3terEvent"]["eventData"] == {"newDto": {"id": "b1"}}
    bad = requests.post(f"{emu.url}/_emulator/events", json={"eventData": {}}, timeout=10)
    assert bad.status_code == 400 and "eventName" in bad.json()["message"]
