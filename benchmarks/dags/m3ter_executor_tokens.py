"""20 parallel tasks that each call m3ter once: how many token exchanges does one DAG run make?

Run by ``benchmarks/executor_tokens.py`` under a real scheduler and LocalExecutor (every task is its
own process), once without and once with ``[m3ter] token_cache_dir``.
"""

from __future__ import annotations

import datetime as dt

from airflow.providers.common.compat.sdk import DAG, task

TASKS = 20

with DAG(
    dag_id="m3ter_executor_tokens",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_tasks=TASKS,
    tags=["m3ter", "benchmark"],
) as dag:

    @task
    def call_m3ter(index: int) -> dict:
        """One API call through a fresh hook in this task's own process."""
        import os

        from m3ter_provider.hooks.m3ter import M3terHook

        hook = M3terHook()
        hook.get("organizationconfig")
        return {"index": index, "pid": os.getpid(), "exchanges_in_this_process": hook.client.token_exchanges}

    call_m3ter.expand(index=list(range(TASKS)))
