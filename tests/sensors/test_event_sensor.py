"""M3terEventSensor: poke, reschedule and deferrable waits for an m3ter Event."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from m3ter_provider.errors import M3terConfigError, M3terError
from m3ter_provider.sensors.events import M3terEventSensor
from tests.operators.helpers import make_context

BILL = "billing.bill.updated"


class DagRun:
    def __init__(self, start_date):
        self.start_date = start_date


def test_poke_finds_the_first_event_after_the_run_started(emu):
    emu.add_event(BILL, {"n": 0})  # before the run: not the one waited for
    started = dt.datetime.now(dt.timezone.utc)
    sensor = M3terEventSensor(task_id="wait", event_name=BILL, poke_interval=1)
    context = make_context(sensor, dag_run=DagRun(started))
    assert sensor.poke(context) is False
    first = emu.add_event(BILL, {"n": 1})
    emu.add_event(BILL, {"n": 2})
    answer = sensor.poke(context)
    assert answer.is_done and answer.xcom_value["id"] == first["id"]


def test_start_after_and_filters_are_honoured(emu):
    start = emu.add_event(BILL, {})
    emu.add_event(BILL, {}, account_id="other")
    mine = emu.add_event(BILL, {}, account_id="mine")
    sensor = M3terEventSensor(
        task_id="wait", event_name=BILL, start_after=start["eventTime"], filters={"account_id": "mine"}
    )
    assert sensor.poke(make_context(sensor)).xcom_value["id"] == mine["id"]


def test_poke_mode_execute_returns_the_event(emu):
    start = emu.add_event(BILL, {})
    wanted = emu.add_event(BILL, {"n": 1})
    sensor = M3terEventSensor(
        task_id="wait", event_name=BILL, start_after=start["eventTime"], poke_interval=1
    )
    assert sensor.execute(make_context(sensor))["id"] == wanted["id"]


def test_deferrable_defers_to_a_fire_once_trigger_and_resumes_with_its_event(emu):
    start = emu.add_event(BILL, {})
    sensor = M3terEventSensor(
        task_id="wait", event_name=BILL, start_after=start["eventTime"], deferrable=True, poke_interval=1
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(make_context(sensor))
    trigger = deferred.value.trigger
    assert trigger.fire_once and trigger.event_name == BILL
    wanted = emu.add_event(BILL, {"n": 1})

    async def run() -> list:
        return [event async for event in trigger.run()]

    (event,) = asyncio.run(run())
    assert sensor.execute_complete(make_context(sensor), event.payload)["id"] == wanted["id"]


def test_an_error_event_fails_the_task_with_its_message():
    sensor = M3terEventSensor(task_id="wait", event_name=BILL)
    with pytest.raises(M3terError, match="refused"):
        sensor.execute_complete({}, {"status": "error", "message": "m3ter refused"})


def test_bad_arguments_fail_at_parse_time():
    with pytest.raises(M3terConfigError, match="event_name is required"):
        M3terEventSensor(task_id="wait", event_name="")
    with pytest.raises(M3terConfigError, match="unknown Events filter"):
        M3terEventSensor(task_id="wait", event_name=BILL, filters={"nope": 1})


def test_start_from_trigger_hands_airflow_the_trigger_to_start(emu):
    import importlib

    start = emu.add_event(BILL, {})
    sensor = M3terEventSensor(
        task_id="wait",
        event_name=BILL,
        start_after=start["eventTime"],
        start_from_trigger=True,
        poke_interval=2,
    )
    args = sensor.start_trigger_args
    assert sensor.start_from_trigger and args.next_method == "execute_complete"
    module, _, name = args.trigger_cls.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**args.trigger_kwargs)  # as the triggerer does
    wanted = emu.add_event(BILL, {"n": 1})

    async def run() -> list:
        return [event async for event in trigger.run()]

    (event,) = asyncio.run(run())
    assert sensor.execute_complete(make_context(sensor), event.payload)["id"] == wanted["id"]


def test_start_from_trigger_refuses_templates():
    with pytest.raises(M3terConfigError, match="start_from_trigger=True takes plain values"):
        M3terEventSensor(task_id="wait", event_name=BILL, start_after="{{ ds }}", start_from_trigger=True)
