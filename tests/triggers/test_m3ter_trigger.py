"""M3terJobTrigger against the emulator: one final event, transient errors retried, tokens shared."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.providers.common.compat.sdk import BaseHook

from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.triggers.m3ter import M3terJobTrigger
from tests.operators.helpers import set_connection

EXPORT_ROUTE = "GET /organizations/{orgId}/dataexports/jobs/{id}"


def run(trigger: M3terJobTrigger) -> list:
    """Drive ``trigger.run()`` to its end and return every event it yielded."""

    async def collect() -> list:
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def start_export(hook: M3terHook | None = None) -> str:
    hook = hook or M3terHook()
    return hook.start_data_export("USAGE", start_date="2026-01-01T00:00:00Z", end_date="2026-01-02T00:00:00Z")


def trigger_for(job_id: str, kind: str = "dataexport", **kwargs) -> M3terJobTrigger:
    kwargs.setdefault("poll_interval", 0.05)
    return M3terJobTrigger(kind=kind, job_id=job_id, **kwargs)


def test_serialize_round_trips():
    import importlib

    trigger = M3terJobTrigger(
        kind="bill_job", job_id="j1", m3ter_conn_id="c", poll_interval=2, end_time=123.5, cancel_on_kill=True
    )
    path, kwargs = trigger.serialize()
    assert path == "m3ter_provider.triggers.m3ter.M3terJobTrigger"
    assert kwargs["kind"] == "billjob"
    json.dumps(kwargs)
    module, _, name = path.rpartition(".")
    assert getattr(importlib.import_module(module), name)(**kwargs).serialize() == (path, kwargs)


def test_one_success_event_with_the_final_job(emu):
    job_id = start_export()
    events = run(trigger_for(job_id))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    assert (payload["kind"], payload["job_id"], payload["job_status"]) == ("dataexport", job_id, "SUCCEEDED")
    assert payload["job"]["id"] == job_id
    json.dumps(payload)


def test_a_failed_job_is_one_error_event_naming_job_and_status(emu):
    emu.fail_next_job("dataexport")
    job_id = start_export()
    [event] = run(trigger_for(job_id))
    assert event.payload["status"] == "error"
    assert event.payload["job_status"] == "FAILED"
    assert job_id in event.payload["message"] and "FAILED" in event.payload["message"]


def test_transient_errors_are_retried_not_fatal(emu, monkeypatch):
    set_connection(monkeypatch, emu, max_retries=0)  # each poll is one request: the trigger repeats it
    job_id = start_export()
    emu.add_fault(EXPORT_ROUTE, status=503, times=2)
    emu.add_fault(EXPORT_ROUTE, status=429, retry_after="0", times=1)
    emu.add_fault(EXPORT_ROUTE, drop=True, times=1)
    emu.add_fault(EXPORT_ROUTE, status=500, times=1)
    [event] = run(trigger_for(job_id, poll_interval=0.01))
    assert event.payload["status"] == "success"
    assert emu.stats()["requests"][EXPORT_ROUTE] >= 6


def test_endless_transient_errors_end_in_one_error_event(emu, monkeypatch):
    set_connection(monkeypatch, emu, max_retries=0)
    job_id = start_export()
    emu.add_fault(EXPORT_ROUTE, status=502, times=None)
    [event] = run(trigger_for(job_id, max_transient_errors=2, poll_interval=0.01))
    assert event.payload["status"] == "error"
    assert (
        "3 transient errors in a row" in event.payload["message"] and "HTTP 502" in event.payload["message"]
    )
    assert emu.stats()["requests"][EXPORT_ROUTE] == 3


def test_an_unreachable_m3ter_is_transient_then_an_error(emu, monkeypatch):
    set_connection(monkeypatch, emu, max_retries=0)
    M3terHook().get_token()  # cached: only the polls meet the closed port
    emu.stop()
    [event] = run(trigger_for("job-1", max_transient_errors=1, poll_interval=0.01))
    assert event.payload["status"] == "error"
    assert "2 transient errors in a row" in event.payload["message"]
    assert "answer from m3ter (connection refused)" in event.payload["message"]


def test_an_unreachable_token_endpoint_is_transient_too(emu, monkeypatch):
    set_connection(monkeypatch, emu, max_retries=0)
    emu.stop()
    [event] = run(trigger_for("job-1", max_transient_errors=1, poll_interval=0.01))
    assert event.payload["status"] == "error"
    assert "2 transient errors in a row" in event.payload["message"]
    assert "/oauth/token" in event.payload["message"]
    assert "answer from m3ter (connection refused)" in event.payload["message"]


def test_an_unknown_job_is_an_error_at_once(emu):
    [event] = run(trigger_for("no-such-job"))
    assert event.payload["status"] == "error"
    assert "HTTP 404" in event.payload["message"] and "no-such-job" in event.payload["message"]
    assert emu.stats()["requests"][EXPORT_ROUTE] == 1


def test_the_cached_token_is_reused(emu):
    hook = M3terHook()
    job_id = start_export(hook)
    assert emu.stats()["token_exchanges"] == 1
    run(trigger_for(job_id))
    assert emu.stats()["token_exchanges"] == 1


def test_an_expired_token_is_exchanged_once_and_polling_goes_on(emu):
    job_id = start_export()
    emu.expire_tokens()
    [event] = run(trigger_for(job_id))
    assert event.payload["status"] == "success"
    assert emu.stats()["token_exchanges"] == 2


def test_a_token_refused_again_is_an_error(emu):
    job_id = start_export()
    emu.add_fault(EXPORT_ROUTE, status=403, times=2)
    [event] = run(trigger_for(job_id))
    assert event.payload["status"] == "error"
    assert "HTTP 403" in event.payload["message"]


def test_no_token_or_secret_in_events(emu):
    hook = M3terHook()
    job_id = start_export(hook)
    token = hook.get_token()
    emu.add_fault(EXPORT_ROUTE, status=403, times=2)
    events = run(trigger_for(job_id)) + run(trigger_for(start_export(hook)))
    text = json.dumps([e.payload for e in events])
    assert token not in text and emu.api_secret not in text


def test_end_time_gives_a_timed_out_error_event(emu):
    emu.job_duration = 30
    job_id = start_export()
    [event] = run(trigger_for(job_id, end_time=time.time() + 0.2))
    assert event.payload["status"] == "error" and event.payload["timed_out"] is True
    assert "timed out" in event.payload["message"] and event.payload["job_status"] in ("PENDING", "RUNNING")


def test_a_bad_connection_is_an_error_event(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps({"conn_type": "m3ter", "login": "k"}))
    [event] = run(trigger_for("job-1"))
    assert event.payload["status"] == "error"
    assert "password is empty" in event.payload["message"]


def test_the_connection_is_read_without_the_sync_api_on_airflow_3(emu, monkeypatch):
    if not hasattr(BaseHook, "aget_connection"):
        pytest.skip(
            "this Airflow has no async connection API (2.x, 3.0); the trigger reads it on a thread there"
        )

    def refuse(*args, **kwargs):
        raise AssertionError("the sync get_connection blocks the triggerer's event loop")

    monkeypatch.setattr(M3terHook, "get_connection", classmethod(refuse))
    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.config import M3terSettings

    settings = M3terSettings.from_connection_fields(
        "m3ter_default",
        login=emu.access_key_id,
        password=emu.api_secret,
        host=emu.url,
        extra={"org_id": emu.org_id},
    )
    job = M3terClient(settings).request(
        "POST", "dataexports/adhoc", json={"sourceType": "OPERATIONAL", "operationalDataTypes": ["ACCOUNTS"]}
    )
    [event] = run(trigger_for(job["jobId"]))
    assert event.payload["status"] == "success"


def test_on_kill_cancels_a_bill_job_only_when_asked(emu):
    emu.job_duration = 30
    hook = M3terHook()
    job = hook.start_bill_job({"billDate": "2026-02-01"})
    asyncio.run(trigger_for(job["id"], kind="billjob").on_kill())
    assert hook.get_job("billjob", job["id"])["status"] != "CANCELLED"
    asyncio.run(trigger_for(job["id"], kind="billjob", cancel_on_kill=True).on_kill())
    assert hook.get_job("billjob", job["id"])["status"] == "CANCELLED"


TOKEN_ROUTE = "POST /oauth/token"


def test_a_token_endpoint_503_is_transient_not_fatal(emu, monkeypatch):
    set_connection(monkeypatch, emu, max_retries=0)
    job_id = start_export()
    emu.expire_tokens()  # the next poll is refused (403) and must exchange again...
    emu.add_fault(TOKEN_ROUTE, status=503, times=2)  # ...while the token endpoint is unwell
    [event] = run(trigger_for(job_id, poll_interval=0.01))
    assert event.payload["status"] == "success"
    assert emu.stats()["token_exchanges"] == 2
    assert emu.stats()["requests"][TOKEN_ROUTE] == 4


@pytest.fixture
def fresh_secrets_masker():
    """Airflow's secrets masker recompiles one regex of every secret it masks on each new one, holding
    the GIL (~0.26 s with 300 secrets): a long test session masks hundreds of tokens, and a worker
    thread masking its new token would then stall every thread, this test's event loop included.
    Measure the trigger, not the session's masker: start it empty, restore it after."""
    import importlib

    from m3ter_provider._compat import airflow_mask_secret

    getter = airflow_mask_secret.__globals__.get("_secrets_masker")  # 3.3, 2.11: beside mask_secret
    for module in ("airflow.sdk._shared.secrets_masker", "airflow._shared.secrets_masker"):  # 3.1, 3.2
        if getter is None:
            try:
                getter = getattr(importlib.import_module(module), "_secrets_masker", None)
            except ImportError:
                continue
    assert getter is not None, "where does this Airflow keep its secrets masker?"
    masker = getter()
    saved = {name: getattr(masker, name) for name in ("patterns", "replacer") if hasattr(masker, name)}
    masker.patterns = set()
    masker.replacer = None
    yield
    for name, value in saved.items():
        setattr(masker, name, value)


def test_the_event_loop_never_stalls_while_the_token_endpoint_is_slow(emu, fresh_secrets_masker):
    """A 403 forces re-auth while the token endpoint takes 1 s (and another thread is exchanging too):
    a ticker on the event loop never waits anywhere near the 1 s a blocking call would hold it
    (0.5 s allows for GIL hand-overs between the emulator's threads on a loaded 2-core machine)."""
    import threading

    hook = M3terHook()
    job_id = start_export(hook)
    emu.expire_tokens()
    emu.add_fault(TOKEN_ROUTE, delay=1.0, times=3)
    other = threading.Thread(target=hook.request, args=("GET", "organizationconfig"))

    async def main() -> tuple[list, float, int]:
        loop = asyncio.get_running_loop()
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = loop.time()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = loop.time()
                gaps.append(now - last)
                last = now

        ticking = asyncio.create_task(ticker())
        other.start()  # a task thread meets the 403 first and starts the slow exchange
        events = [event async for event in trigger_for(job_id, poll_interval=0.05).run()]
        done.set()
        await ticking
        return events, max(gaps), len(gaps)

    events, max_gap, ticks = asyncio.run(main())
    other.join(30)
    assert [e.payload["status"] for e in events] == ["success"]
    assert emu.stats()["token_exchanges"] >= 2  # the re-auth happened during the run
    assert ticks > 20
    assert max_gap < 0.5, f"the event loop stalled for {max_gap:.3f} s"


def test_end_time_is_honoured_while_every_poll_fails(emu):
    job_id = start_export()
    emu.add_fault(EXPORT_ROUTE, status=503, times=None)  # the client retries with back-off: slow polls
    [event] = run(trigger_for(job_id, poll_interval=0.2, end_time=time.time() + 1.0))
    assert event.payload["status"] == "error" and event.payload["timed_out"] is True
    assert "timed out" in event.payload["message"]
    # one poll's back-off alone (5 retries) would take longer than the deadline: cut short
    polls = emu.stats()["requests"][EXPORT_ROUTE]
    assert polls < 7
    time.sleep(1.0)  # the abandoned worker thread stops retrying (at most its request under way lands)
    assert emu.stats()["requests"][EXPORT_ROUTE] <= polls + 1


def test_end_time_is_honoured_while_a_poll_hangs(emu):
    job_id = start_export()
    emu.add_fault(EXPORT_ROUTE, delay=3.0, times=1)
    started = time.monotonic()
    [event] = run(trigger_for(job_id, end_time=time.time() + 0.5))
    assert event.payload["timed_out"] is True and event.payload["job"] is None
    assert time.monotonic() - started < 3.0  # did not wait for the hanging poll
    assert emu.stats()["requests"][EXPORT_ROUTE] == 1


def test_old_serialized_kwargs_still_build_the_trigger():
    kwargs = {
        "kind": "dataexport",
        "job_id": "j1",
        "m3ter_conn_id": "c",
        "poll_interval": 10.0,
        "end_time": None,
        "max_transient_errors": 10,
        "cancel_on_kill": False,
    }
    assert M3terJobTrigger(**kwargs).serialize()[1] == kwargs


def test_the_wait_lasts_until_end_time_and_polls_once_more_there(emu):
    """poll_interval=60, 100 s to wait: polls at 0, 60 and 100 s (a fake clock), then times out."""
    emu.job_duration = 3600
    job_id = start_export()
    now = [5000.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    trigger = trigger_for(job_id, poll_interval=60, end_time=now[0] + 100)
    trigger._clock = lambda: now[0]
    trigger._sleep = fake_sleep
    [event] = run(trigger)
    assert event.payload["timed_out"] is True and event.payload["job_status"] in ("PENDING", "RUNNING")
    assert sleeps == [60, 40]
    assert emu.stats()["requests"][EXPORT_ROUTE] == 3


def test_a_job_final_at_the_end_time_poll_is_a_success(emu):
    emu.job_duration = 1.0
    job_id = start_export()
    now = [5000.0]

    async def fake_sleep(seconds: float) -> None:
        now[0] += seconds
        if now[0] >= 5100:
            await asyncio.sleep(1.5)  # the job is final by the poll at end_time

    trigger = trigger_for(job_id, poll_interval=60, end_time=now[0] + 100)
    trigger._clock = lambda: now[0]
    trigger._sleep = fake_sleep
    [event] = run(trigger)
    assert event.payload["status"] == "success", event.payload
    assert emu.stats()["requests"][EXPORT_ROUTE] == 3
