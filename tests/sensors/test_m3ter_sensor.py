"""M3terJobSensor: every job kind, poke / reschedule / deferrable, failures named clearly."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from airflow.providers.common.compat.sdk import AirflowSensorTimeout, PokeReturnValue, TaskDeferred

from m3ter_provider.errors import M3terConfigError, M3terJobFailedError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.links import CONSOLE_LINK_XCOM_KEY
from m3ter_provider.sensors.m3ter import M3terJobSensor
from tests.operators.helpers import make_context, measurement


def sensor(kind: str, job_id: str, **kwargs) -> M3terJobSensor:
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    return M3terJobSensor(task_id="wait", kind=kind, job_id=job_id, **kwargs)


def start_export() -> str:
    return M3terHook().start_data_export(
        "USAGE", start_date="2026-01-01T00:00:00Z", end_date="2026-01-02T00:00:00Z"
    )


def start_bill_job(emu) -> str:
    [account] = emu.seed("accounts", [{"code": "acme", "name": "Acme", "emailAddress": "a@example.com"}])
    return M3terHook().start_bill_job({"accountIds": [account["id"]], "billDate": "2026-02-01"})["id"]


def start_statement_job(emu) -> str:
    hook = M3terHook()
    bill_job = hook.wait_for_job("billjob", start_bill_job(emu), poll_interval=0.05)
    return hook.post("statementjobs", json={"billId": bill_job["billIds"][0]})["id"]


def start_file_upload() -> str:
    content = json.dumps({"measurements": [measurement(i) for i in range(3)]}).encode()
    answer = M3terHook().post(
        "fileuploads/measurements/generateUploadUrl",
        json={"fileName": "usage.json", "contentType": "application/json", "contentLength": len(content)},
    )
    requests.put(answer["url"], data=content, headers=answer["headers"], timeout=5).raise_for_status()
    return answer["jobId"]


def test_poke_says_running_done_or_fails(emu):
    emu.job_duration = 0.5
    job_id = start_export()
    wait = sensor("dataexport", job_id)
    context = make_context(wait)
    assert wait.poke(context) is False
    assert context["ti"].xcom[CONSOLE_LINK_XCOM_KEY].startswith("https://console.m3ter.com")
    emu.job_duration = 0
    done = sensor("dataexport", start_export())
    answer = done.poke(make_context(done))
    assert (
        isinstance(answer, PokeReturnValue) and answer.is_done and answer.xcom_value["status"] == "SUCCEEDED"
    )

    emu.fail_next_job("dataexport")
    failed = sensor("dataexport", start_export())
    with pytest.raises(M3terJobFailedError, match=r"data export .* ended FAILED"):
        failed.poke(make_context(failed))


@pytest.mark.parametrize("kind", ["dataexport", "billjob", "statementjob", "fileupload"])
def test_every_job_kind_is_waited_for(emu, kind):
    job_id = {
        "dataexport": start_export,
        "billjob": lambda: start_bill_job(emu),
        "statementjob": lambda: start_statement_job(emu),
        "fileupload": start_file_upload,
    }[kind]()
    wait = sensor(kind, job_id)
    job = wait.execute(make_context(wait))
    assert job["id"] == job_id


def test_a_cancelled_bill_job_fails_the_sensor(emu):
    emu.fail_next_job("billjob")
    wait = sensor("billjob", start_bill_job(emu))
    with pytest.raises(M3terJobFailedError, match="ended CANCELLED"):
        wait.execute(make_context(wait))


@pytest.mark.e2e  # uses the migrated metadata DB (airflow db migrate in a subprocess)
def test_reschedule_mode_gives_the_slot_back_between_pokes(emu, airflow_db):  # Airflow 2 asks its DB
    job_id = start_export()
    wait = sensor("dataexport", job_id, mode="reschedule", poke_interval=5)
    from airflow.exceptions import AirflowRescheduleException  # Airflow 2.11 and 3.x alike

    with pytest.raises(AirflowRescheduleException):  # the task is rescheduled
        wait.execute(make_context(wait))
    M3terHook().wait_for_job("dataexport", job_id, poll_interval=0.05)
    later = sensor("dataexport", job_id, mode="reschedule", poke_interval=5)  # a poke holds no state
    assert later.execute(make_context(later))["id"] == job_id


def test_deferrable_sensor_defers_then_returns_the_job(emu):
    job_id = start_export()
    wait = sensor("dataexport", job_id, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        wait.execute(make_context(wait))
    trigger = deferred.value.trigger
    assert (trigger.kind, trigger.job_id, trigger.poll_interval) == ("dataexport", job_id, 0.05)
    assert trigger.end_time is not None

    async def collect() -> list:
        return [event async for event in trigger.run()]

    [event] = asyncio.run(collect())
    job = wait.execute_complete(make_context(wait), event.payload)
    assert job["status"] == "SUCCEEDED"


def test_deferrable_sensor_does_not_defer_for_a_finished_job(emu):
    emu.job_duration = 0
    wait = sensor("dataexport", start_export(), deferrable=True)
    assert wait.execute(make_context(wait))["status"] == "SUCCEEDED"


def test_error_and_timeout_events_fail_clearly():
    wait = sensor("billjob", "b-1", deferrable=True)
    event = {
        "status": "error",
        "kind": "billjob",
        "job_id": "b-1",
        "job_status": "CANCELLED",
        "message": "m3ter bill job b-1 ended CANCELLED.",
    }
    with pytest.raises(M3terJobFailedError, match="b-1 ended CANCELLED") as caught:
        wait.execute_complete({}, event)
    assert (caught.value.job_id, caught.value.status) == ("b-1", "CANCELLED")
    with pytest.raises(AirflowSensorTimeout, match="timed out"):
        wait.execute_complete({}, {**event, "timed_out": True, "message": "b-1 ... the wait timed out."})


def test_job_id_is_templated_and_checked(emu):
    job_id = start_export()
    wait = sensor("data_export", "{{ params.job }}", params={"job": job_id})
    context = make_context(wait, params={"job": job_id})
    wait.render_template_fields(context)
    assert wait.job_id == job_id and wait.kind == "dataexport"

    empty = sensor("dataexport", "{{ params.job }}", params={})
    context = make_context(empty, params={})
    empty.render_template_fields(context)
    with pytest.raises(M3terConfigError, match="job_id rendered to ''"):
        empty.poke(context)


def test_an_unknown_kind_fails_when_the_dag_is_parsed():
    with pytest.raises(M3terConfigError, match="unknown m3ter job kind 'invoice'"):
        sensor("invoice", "x")


def test_start_from_trigger_hands_airflow_the_trigger_to_start(emu):
    import importlib

    job_id = start_export()
    waiting = M3terJobSensor(
        task_id="wait", kind="dataexport", job_id=job_id, start_from_trigger=True, poke_interval=1, timeout=60
    )
    args = waiting.start_trigger_args
    assert waiting.start_from_trigger and args.next_method == "execute_complete"
    assert args.timeout.total_seconds() == 60 and args.trigger_kwargs["job_id"] == job_id
    module, _, name = args.trigger_cls.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**args.trigger_kwargs)  # as the triggerer does

    async def run() -> list:
        return [event async for event in trigger.run()]

    (event,) = asyncio.run(run())
    assert waiting.execute_complete(make_context(waiting), event.payload)["id"] == job_id


def test_start_from_trigger_takes_a_plain_job_id():
    with pytest.raises(M3terConfigError, match="start_from_trigger=True takes a plain job_id"):
        M3terJobSensor(
            task_id="wait", kind="billjob", job_id="{{ ti.xcom_pull('run') }}", start_from_trigger=True
        )
