"""A real scheduler and LocalExecutor: 20 task processes, one token exchange with the worker cache."""

from __future__ import annotations

import pytest

from tests.e2e import load_benchmark

pytestmark = pytest.mark.e2e


def test_twenty_task_processes_share_one_token_with_the_worker_cache():
    bench = load_benchmark("executor_tokens")
    if bench.airflow_major() < 3:
        pytest.skip("Airflow 2 runs LocalExecutor only on Postgres or MySQL; this test uses SQLite")
    with bench.airflow_with_emulator() as (airflow, emulator):
        off = bench.measure_run(airflow, emulator, shared_dir=None)
        on = bench.measure_run(airflow, emulator, shared_dir=str(airflow.home / "m3ter-tokens"))
    assert off["state"] == on["state"] == "success", (off, on)
    assert off["api_calls"] == on["api_calls"] == bench.TASKS
    assert off["token_exchanges"] == bench.TASKS  # every task process exchanged its own
    assert on["token_exchanges"] == 1  # the first exchanged; 19 read its token from the file
