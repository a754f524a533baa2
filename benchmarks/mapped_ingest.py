"""Mapped ingest under a real scheduler and LocalExecutor: wall time, requests, token exchanges, rows stored.

Runs ``example_dags/example_m3ter_mapped_ingest.py`` (split one JSON Lines file into slices, ingest
them with mapped tasks in the ``m3ter_ingest`` pool, reconcile the counts) with the machinery of
``benchmarks/executor_tokens.py``: the m3ter emulator in this process, ``airflow api-server``,
``dag-processor`` and ``scheduler`` with ``LocalExecutor`` in a throwaway AIRFLOW_HOME, the worker
token cache on (``AIRFLOW__M3TER__TOKEN_CACHE_DIR``). One DAG run per ``core.parallelism`` value;
the emulator is reset between them. Optionally a share of ingest calls is answered 429 with a
Retry-After (``--storm``): every row must still be stored exactly once.

    python benchmarks/mapped_ingest.py [--rows 1000000] [--slices 8] [--parallelism 1 4] [--storm 0.2]

Airflow 3 only (Airflow 2.11 refuses LocalExecutor on SQLite).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import pathlib
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
DAG_FILE = HERE.parent / "example_dags" / "example_m3ter_mapped_ingest.py"
DAG_ID = "example_m3ter_mapped_ingest"
INGEST = "POST /organizations/{orgId}/measurements"
INGEST_ROUTE = "/organizations/{orgId}/measurements"


def _load(name: str, path: pathlib.Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


executor_tokens = _load("executor_tokens", HERE / "executor_tokens.py")


def install_429_storm(emulator: Any, share: float, seed: int = 1) -> dict[str, int]:
    """Answer ``share`` of ingest calls with 429 and ``Retry-After: 1``; count them in the returned dict."""
    from m3ter_provider.testing.control import FaultBook, make_fault

    rng = random.Random(seed)
    counts = {"429": 0}

    class Storm(FaultBook):
        def take(self, method: str, template: str) -> Any:
            planned = super().take(method, template)
            if planned is not None or template != INGEST_ROUTE or rng.random() >= share:
                return planned
            counts["429"] += 1
            return make_fault(template, status=429, retry_after="1")

    emulator._app.faults = Storm()  # the emulator's planned-fault book, with a random share of 429s
    return counts


def trigger(airflow: Any, conf: dict) -> str:
    run_id = f"bench-{secrets.token_hex(4)}"
    response = airflow.post(
        f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None, "conf": conf}
    )
    response.raise_for_status()
    return run_id


def run_state(airflow: Any, run_id: str) -> str | None:
    response = airflow.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    return response.json().get("state") if response.ok else None


def reconciled(airflow: Any, run_id: str) -> dict | None:
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/reconcile/xcomEntries/return_value"
    response = airflow.get(path)
    return response.json().get("value") if response.ok else None


def ingest_retries(airflow: Any, run_id: str) -> int:
    """Task retries of the mapped ingest tasks (a 429 the hook absorbed costs none)."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?task_id=ingest_slice&limit=1000"
    instances = airflow.get(path).json()["task_instances"]
    return sum(max(ti["try_number"] - 1, 0) for ti in instances)


def measure(
    airflow: Any, emulator: Any, *, parallelism: int, conf: dict, storm: float, timeout: float
) -> dict[str, Any]:
    """One DAG run at ``parallelism`` with a fresh emulator state and a fresh worker token cache."""
    emulator.reset()
    # limits off: the run's requests are counted exactly (sent = accepted + the storm's 429s), which
    # an unplanned 429 from m3ter's 50 requests/s limit would break
    emulator.set_limits(enabled=False)
    storm_counts = install_429_storm(emulator, storm) if storm else {"429": 0}
    cache = airflow.home / f"m3ter-tokens-p{parallelism}"
    airflow.start(
        "scheduler",
        "scheduler",
        AIRFLOW__CORE__PARALLELISM=str(parallelism),
        AIRFLOW__M3TER__TOKEN_CACHE_DIR=str(cache),
    )
    try:
        started = time.monotonic()
        run_id = trigger(airflow, conf)
        state = airflow.wait_for(
            f"run {run_id}",
            lambda: (s := run_state(airflow, run_id)) in ("success", "failed") and s,
            timeout,
        )
        seconds = time.monotonic() - started
    finally:
        airflow.stop("scheduler")
    stats = emulator.stats()
    rows = {m["metadata"]["row"] for m in emulator.measurements()}
    return {
        "parallelism": parallelism,
        "state": state,
        "rows": conf["rows"],
        "slices": conf["slices"],
        "seconds": round(seconds, 1),
        "ingest_requests": stats["requests"].get(INGEST, 0),
        "answered_429": storm_counts["429"],
        "token_exchanges": stats["token_exchanges"],
        "stored": stats["measurements_stored"],
        "distinct_rows_stored": len(rows),
        "duplicates_refused": stats["measurements_duplicates"],
        "reconciled": reconciled(airflow, run_id),
        "task_retries": ingest_retries(airflow, run_id),
    }


def run(
    rows: int, slices: int, parallelisms: list[int], storm: float = 0.0, timeout: float = 3600
) -> list[dict[str, Any]]:
    """Start Airflow and the emulator, write the input once, measure one DAG run per parallelism."""
    results = []
    dag_module = _load("example_m3ter_mapped_ingest", DAG_FILE)
    dags = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-mapped-dags-"))
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    with executor_tokens.airflow_with_emulator(dag_id=DAG_ID, dags_folder=dags) as (airflow, emulator):
        airflow.run("pools", "set", dag_module.POOL, str(dag_module.POOL_SLOTS), "m3ter ingest")
        source = airflow.home / "input" / "measurements.jsonl"
        dag_module.write_demo_rows(source, rows)
        conf = {"input": str(source), "rows": rows, "slices": slices}
        try:
            for parallelism in parallelisms:
                results.append(
                    measure(
                        airflow, emulator, parallelism=parallelism, conf=conf, storm=storm, timeout=timeout
                    )
                )
        finally:  # the input and slices can be large; Airflow's logs stay for a look
            shutil.rmtree(source.parent, ignore_errors=True)
            shutil.rmtree(dags, ignore_errors=True)
    return results


def change_input(source: pathlib.Path, added: int, repeats: int, seed: int = 7) -> collections.Counter:
    """Reorder ``source``'s lines, append ``added`` new demo rows and ``repeats`` copies of existing
    lines (real second events); return how many times each ``metadata.row`` is now in the input."""
    rng = random.Random(seed)
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    extra = source.parent / "added.jsonl"
    _load("example_m3ter_mapped_ingest", DAG_FILE).write_demo_rows(extra, len(lines) + added)
    lines += extra.read_text(encoding="utf-8").splitlines(keepends=True)[len(lines) :]
    extra.unlink()
    lines += rng.sample(lines, repeats)
    rng.shuffle(lines)
    source.write_text("".join(lines), encoding="utf-8")
    return collections.Counter(json.loads(line)["metadata"]["row"] for line in lines)


def clear_run(airflow: Any, run_id: str) -> None:
    """Clear every task of the run, as a user does from the UI, which runs it again."""
    response = airflow.post(
        f"/api/v2/dags/{DAG_ID}/clearTaskInstances",
        {"dry_run": False, "dag_run_id": run_id, "only_failed": False, "reset_dag_runs": True},
    )
    response.raise_for_status()


def unsuccessful_tasks(airflow: Any, run_id: str) -> list[str]:
    """``task[map index]: state (try n)`` of each task instance of the run that did not succeed."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=1000"
    response = airflow.get(path)
    if not response.ok:
        return [f"task instances unreadable: HTTP {response.status_code}"]
    return [
        f"{ti['task_id']}[{ti.get('map_index', -1)}]: {ti.get('state')} (try {ti.get('try_number')})"
        for ti in response.json().get("task_instances", [])
        if ti.get("state") != "success"
    ]


def asset_events(airflow: Any, run_id: str) -> list[dict]:
    """The asset events the run's tasks emitted (uri and extra), oldest first."""
    path = f"/api/v2/assets/events?source_dag_id={DAG_ID}&source_run_id={run_id}&order_by=timestamp"
    response = airflow.get(path)
    if not response.ok:
        return [{"unreadable": response.status_code}]
    return [
        {"uri": event.get("uri"), "extra": event.get("extra")}
        for event in response.json().get("asset_events", [])
    ]


def run_ended(airflow: Any, run_id: str, after: str | None = None) -> dict | None:
    """The run when it is final (and ended after ``after``, an earlier end_date), else None."""
    response = airflow.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    run = response.json() if response.ok else {}
    if run.get("state") in ("success", "failed") and run.get("end_date") and run["end_date"] != after:
        return run
    return None


def cleared_run(rows: int, slices: int, added: int, repeats: int, timeout: float = 600) -> dict[str, Any]:
    """Run the DAG on ``rows`` rows; reorder its input, append ``added`` new rows and ``repeats``
    repeated ones; clear the run and let it run again. Returns what m3ter held after each run."""
    dags = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-mapped-dags-"))
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    dag_module = _load("example_m3ter_mapped_ingest", DAG_FILE)
    with executor_tokens.airflow_with_emulator(dag_id=DAG_ID, dags_folder=dags) as (airflow, emulator):
        airflow.run("pools", "set", dag_module.POOL, str(dag_module.POOL_SLOTS), "m3ter ingest")
        source = airflow.home / "input" / "measurements.jsonl"
        dag_module.write_demo_rows(source, rows)
        conf = {"input": str(source), "rows": rows, "slices": slices}
        airflow.start("scheduler", "scheduler")
        try:
            run_id = trigger(airflow, conf)
            first = airflow.wait_for(f"run {run_id}", lambda: run_ended(airflow, run_id), timeout)
            first_unsuccessful = unsuccessful_tasks(airflow, run_id)
            stored_first = len(emulator.measurements())
            expected = change_input(source, added, repeats)
            clear_run(airflow, run_id)
            second = airflow.wait_for(
                f"cleared run {run_id}", lambda: run_ended(airflow, run_id, first["end_date"]), timeout
            )
        finally:
            airflow.stop("scheduler")
            shutil.rmtree(dags, ignore_errors=True)
        stored = emulator.measurements()
        return {
            "first_state": first["state"],
            "first_unsuccessful_tasks": first_unsuccessful,
            "stored_after_first": stored_first,
            "state": second["state"],
            "unsuccessful_tasks": unsuccessful_tasks(airflow, run_id),
            "input_rows": sum(expected.values()),
            "stored": len(stored),
            "distinct_uids": len({m["uid"] for m in stored}),
            "rows_as_expected": collections.Counter(m["metadata"]["row"] for m in stored) == expected,
            "reconciled": reconciled(airflow, run_id),
            "asset_events": asset_events(airflow, run_id),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="measurements (default 1,000,000)")
    parser.add_argument("--slices", type=int, default=8, help="slices, i.e. mapped tasks (default 8)")
    parser.add_argument("--parallelism", type=int, nargs="+", default=[1, 4], help="default: 1 4")
    parser.add_argument("--storm", type=float, default=0.0, help="share of ingest calls answered 429")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop Airflow's processes on the way out
    if executor_tokens.airflow_major() < 3:
        print("mapped_ingest: needs Airflow 3 (Airflow 2 runs LocalExecutor only on Postgres/MySQL).")
        return 2
    results = run(args.rows, args.slices, args.parallelism, args.storm)
    if args.json:
        print(json.dumps(results))
    else:
        print("| parallelism | rows | slices | wall s | ingest requests | 429s | token exchanges | stored |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in results:
            print(
                f"| {r['parallelism']} | {r['rows']:,} | {r['slices']} | {r['seconds']} | "
                f"{r['ingest_requests']:,} | {r['answered_429']:,} | {r['token_exchanges']} | "
                f"{r['distinct_rows_stored']:,} distinct of {r['stored']:,} ({r['state']}) |"
            )
    ok = all(
        r["state"] == "success" and r["distinct_rows_stored"] == r["stored"] == r["rows"] for r in results
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
