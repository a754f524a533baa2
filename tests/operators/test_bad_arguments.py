"""Arguments that used to pass DAG parsing and fail (or misbehave) only when the task ran: refused
when the operator, sensor or trigger is constructed, with an error naming the argument and the fix."""

from __future__ import annotations

import datetime as dt
import math

import pytest

from m3ter_provider.errors import M3terConfigError
from m3ter_provider.operators.m3ter import (
    M3terBillJobOperator,
    M3terDataExportOperator,
    M3terOperator,
    M3terSubmitMeasurementsOperator,
)
from m3ter_provider.sensors.m3ter import M3terJobSensor

EXPORT = {"source_type": "OPERATIONAL", "operational_data_types": ["BILLS"]}


@pytest.mark.parametrize("page_size", [-1, 0, "10", 2.5, True])
def test_a_bad_page_size_is_refused_when_the_dag_is_parsed(page_size):
    with pytest.raises(M3terConfigError, match=r"page_size .*: give a whole number of items per page"):
        M3terOperator(task_id="list", endpoint="accounts", paginate=True, page_size=page_size)
    assert M3terOperator(task_id="ok", endpoint="accounts", paginate=True, page_size=50).page_size == 50


@pytest.mark.parametrize("file_format", ["xlsx", "json", "", "orc", 3])
def test_an_unknown_measurements_file_format_is_refused_when_the_dag_is_parsed(file_format):
    with pytest.raises(M3terConfigError, match=r"file_format .*: use 'jsonl', 'csv' or 'parquet'"):
        M3terSubmitMeasurementsOperator(task_id="push", measurements_file="u.x", file_format=file_format)


@pytest.mark.parametrize("file_format", ["jsonl", "CSV", ".ndjson", "JSONLines", None])
def test_known_measurements_file_formats_pass(file_format):
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements_file="u.jsonl", file_format=file_format)
    assert op.file_format == file_format


@pytest.mark.parametrize("export_file_format", ["PARQUET", "json", "", None])
def test_an_unknown_export_file_format_is_refused_when_the_dag_is_parsed(export_file_format):
    with pytest.raises(M3terConfigError, match=r"export_file_format .*: use 'CSV' or 'JSONL'"):
        M3terDataExportOperator(task_id="export", export_file_format=export_file_format, **EXPORT)
    op = M3terDataExportOperator(task_id="ok", export_file_format="jsonl", **EXPORT)
    assert op.export_file_format == "JSONL"


@pytest.mark.parametrize("poll_interval", [0, -1, math.nan, "10", math.inf])
def test_a_bad_poll_interval_is_refused_by_the_job_operators(poll_interval):
    bill = {"bill_date": "2026-01-31"}
    for operator, kwargs in ((M3terDataExportOperator, EXPORT), (M3terBillJobOperator, bill)):
        with pytest.raises(M3terConfigError, match=r"^poll_interval "):
            operator(task_id="job", poll_interval=poll_interval, **kwargs)


@pytest.mark.parametrize("timeout", [0, -5, math.nan, "60"])
def test_a_bad_timeout_is_refused_by_the_job_operators(timeout):
    with pytest.raises(M3terConfigError, match=r"^timeout "):
        M3terDataExportOperator(task_id="export", timeout=timeout, **EXPORT)


@pytest.mark.parametrize("poke_interval", [0, 0.0, dt.timedelta(0)])
def test_a_sensor_that_would_poll_without_pause_is_refused(poke_interval):
    with pytest.raises(M3terConfigError, match=r"^poke_interval "):
        M3terJobSensor(task_id="wait", kind="billjob", job_id="j", poke_interval=poke_interval)


def test_a_sensor_with_a_nan_timeout_is_refused():
    # Airflow's own sensor check refuses it first: a ValueError (as M3terConfigError is) on Airflow 3,
    # an AirflowException on 2.11
    from airflow.exceptions import AirflowException

    with pytest.raises((ValueError, AirflowException), match="timeout"):
        M3terJobSensor(task_id="wait", kind="billjob", job_id="j", timeout=math.nan)


@pytest.mark.parametrize(
    ("poll_interval", "end_time"), [(0, None), (math.nan, None), ("5", None), (5, math.nan)]
)
def test_the_trigger_refuses_bad_intervals_and_end_times(poll_interval, end_time):
    from m3ter_provider.triggers.m3ter import M3terJobTrigger

    with pytest.raises(M3terConfigError, match=r"^(poll_interval|end_time) "):
        M3terJobTrigger(kind="billjob", job_id="j", poll_interval=poll_interval, end_time=end_time)


@pytest.mark.parametrize("namespace", ["", "  ", 5])
def test_a_blank_uid_namespace_is_refused(namespace):
    with pytest.raises(M3terConfigError, match="uid_namespace"):
        M3terSubmitMeasurementsOperator(task_id="push", measurements=[], uid_namespace=namespace)
