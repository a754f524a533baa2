"""A real scheduler and LocalExecutor: 20 task processes, one token exchange with the worker cache."""

from __future__ import annotations

import importlib.util
import pathlib

import pytest

pytestmark = pytest.mark.e2e

_SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "executor_tokens.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("executor_tokens", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_twenty_task_processes_share_one_token_with_the_worker_cache():
    bench = _load_benchmark()
    if bench.airflow_major() < 3:
        pytest.skip("Airflow 2 runs LocalExecutor only on Postgres or MySQL; this test uses SQLite")
    with bench.airflow_with_emulator() as (airflow, emulator):
        off = bench.measure_run(airflow, emulator, shared_dir=None)
        on = bench.measure_run(airflow, emulator, shared_dir=str(airflow.home / "m3ter-tokens"))
    assert off["state"] == on["state"] == "success", (off, on)
    assert off["api_calls"] == on["api_calls"] == bench.TASKS
    assert off["token_exchanges"] == bench.TASKS  # every task process exchanged its own
    assert on["token_exchanges"] == 1  # the first exchanged; 19 read its token from the file
