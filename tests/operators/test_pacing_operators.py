"""Ingest pacing through the Airflow face: the hook's log line and shared bucket file, the submit
operator's and the SQL transfer's templated ``max_requests_per_second``."""

from __future__ import annotations

import pytest

from m3ter_provider.core.tokens.cache import TOKEN_CACHE
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators.m3ter import M3terSubmitMeasurementsOperator
from m3ter_provider.transfers.sql_to_m3ter import SqlToM3terMeasurementsOperator
from tests.operators.helpers import make_context, measurement, set_connection

INGEST = "POST /organizations/{orgId}/measurements"


def logged(caplog, capsys) -> str:
    return caplog.text + capsys.readouterr().out  # Airflow 3 task loggers write through structlog


@pytest.fixture
def no_shared_store():
    yield
    TOKEN_CACHE.set_shared_store(None)


def test_the_hook_logs_its_pace_and_shares_a_bucket_file_beside_the_tokens(
    emu, monkeypatch, tmp_path, caplog, capsys, no_shared_store
):
    caplog.set_level("INFO")
    set_connection(monkeypatch, emu, ingest_rate=45, ingest_machines=2)
    directory = tmp_path / "tokens"
    monkeypatch.setenv("AIRFLOW__M3TER__TOKEN_CACHE_DIR", str(directory))
    result = M3terHook().submit_measurements([measurement(i) for i in range(2500)], uid_namespace="ns")
    assert result["requests"] == 3
    assert emu.stats()["measurements_stored"] == 2500
    text = logged(caplog, capsys)
    assert "ingest paced at 22.5 requests/s: ingest_rate 45 / ingest_machines 2" in text
    assert "one pace shared by this machine's task processes" in text
    assert "of 3 requests waited for the pace" in text  # counted, and said once
    assert len(list(directory.glob("*.pace"))) == 1


def test_without_a_token_cache_dir_the_log_says_the_pace_is_the_process_own(emu, monkeypatch, caplog, capsys):
    caplog.set_level("INFO")
    monkeypatch.delenv("AIRFLOW__M3TER__TOKEN_CACHE_DIR", raising=False)
    M3terHook().submit_measurements([measurement(0)], uid_namespace="ns")
    text = logged(caplog, capsys)
    assert "ingest paced at 45 requests/s: ingest_rate 45 / ingest_machines 1" in text
    assert "this process's own pace: set [m3ter] token_cache_dir" in text


def test_pacing_off_is_logged_and_the_load_still_lands(emu, monkeypatch, caplog, capsys):
    caplog.set_level("INFO")
    set_connection(monkeypatch, emu, ingest_rate="off")
    M3terHook().submit_measurements([measurement(i) for i in range(1500)], uid_namespace="ns")
    text = logged(caplog, capsys)
    assert "ingest not paced: the connection's ingest_rate is off" in text
    assert "Ingest pacing:" not in text
    assert emu.stats()["measurements_stored"] == 1500


def test_the_operator_renders_max_requests_per_second_and_lowers_the_pace(emu, monkeypatch, caplog, capsys):
    caplog.set_level("INFO")
    set_connection(monkeypatch, emu, ingest_machines=2)
    op = M3terSubmitMeasurementsOperator(
        task_id="push",
        measurements=[measurement(i) for i in range(3)],
        max_requests_per_second="{{ params.rate }}",
        params={"rate": 7},
    )
    assert "max_requests_per_second" in op.template_fields
    context = make_context(op, params={"rate": 7})
    op.render_template_fields(context)
    assert op.max_requests_per_second == "7"
    assert op.execute(context)["measurements"] == 3
    text = logged(caplog, capsys)
    assert (
        "ingest paced at 7 requests/s: max_requests_per_second 7 (the machine's share is 22.5: "
        "ingest_rate 45 / ingest_machines 2)" in text
    )


def test_a_bad_rate_fails_at_parse_or_once_rendered_before_anything_is_sent(emu):
    with pytest.raises(M3terConfigError, match="max_requests_per_second 0: give this task's most"):
        M3terSubmitMeasurementsOperator(
            task_id="push", measurements=[measurement(0)], max_requests_per_second=0
        )
    op = M3terSubmitMeasurementsOperator(
        task_id="push", measurements=[measurement(0)], max_requests_per_second="{{ params.rate }}"
    )
    op.max_requests_per_second = "fast"  # what a template rendered
    with pytest.raises(M3terConfigError, match="max_requests_per_second 'fast'"):
        op.execute(make_context(op))
    assert emu.stats()["requests"].get(INGEST, 0) == 0


def test_the_sql_transfer_takes_a_templated_max_requests_per_second():
    assert "max_requests_per_second" in SqlToM3terMeasurementsOperator.template_fields
    kwargs = {"task_id": "load", "sql": "SELECT 1", "sql_conn_id": "warehouse"}
    assert SqlToM3terMeasurementsOperator(**kwargs, max_requests_per_second=5).max_requests_per_second == 5
    SqlToM3terMeasurementsOperator(**kwargs, max_requests_per_second="{{ params.rate }}")
    with pytest.raises(M3terConfigError, match="max_requests_per_second -1"):
        SqlToM3terMeasurementsOperator(**kwargs, max_requests_per_second=-1)
