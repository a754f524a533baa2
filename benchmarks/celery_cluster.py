"""The mapped-ingest example and the deferrable pair on a real CeleryExecutor cluster, with faults.

Starts the cluster of ``benchmarks/cluster.py`` (Redis, PostgreSQL, api-server, scheduler,
dag-processor, triggerer, two Celery workers each on its own loopback address and token cache) and
the m3ter emulator with m3ter's rate limits on (ingest: 50 requests/s per Organization, 5,000
requests per 5 minutes per source IP), then:

- ``load``: runs ``example_m3ter_mapped_ingest`` on ``--rows`` measurements; with ``--kill`` one
  Celery worker is SIGKILLed (with its task processes) while its ingest task is part-way through its
  slice: the scheduler fails that task after the heartbeat timeout and its retry runs on the other
  worker. Reports stored and distinct measurements, 429s, token exchanges per worker, requests per
  worker, and the rate achieved;
- ``deferrable``: runs ``m3ter_cluster_deferrable`` (a data export and a bill job, both deferred to
  the triggerer), restarts the triggerer while both wait, and counts the jobs m3ter saw started.

    python benchmarks/celery_cluster.py [--rows 1000000] [--slices 8] [--runs clean kill] [--json]

The connection carries ``ingest_machines: 2`` (each worker paces at ``ingest_rate`` / 2 once the
pacing of the ``ingest_rate`` extra is in the hook). Airflow 3 only; needs ``redis-server``,
PostgreSQL's binaries and the ``cluster`` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import pathlib
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
INGEST = "POST /organizations/{orgId}/measurements"
EXPORT_START = "POST /organizations/{orgId}/dataexports/adhoc"
BILL_JOB_START = "POST /organizations/{orgId}/billjobs"
DEFERRABLE_DAG = "m3ter_cluster_deferrable"
ASSETS_DAG = "m3ter_cluster_assets"
#: m3ter's ingest limits the emulator enforces: per Organization, and per source IP sustained
ORG_LIMIT = 50.0
IP_LIMIT = 5_000 / 300


_spec = importlib.util.spec_from_file_location("m3ter_bench_cluster", HERE / "cluster.py")
cluster = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = cluster  # (its dataclasses look their module up there)
_spec.loader.exec_module(cluster)
mapped_ingest = cluster.load_script("mapped_ingest")
MAPPED_DAG = mapped_ingest.DAG_ID


@contextlib.contextmanager
def started_cluster(keep: bool = False) -> Iterator[Any]:
    """The cluster, with the mapped-ingest example and the deferrable pair parsed and the pool made."""
    dags = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-cluster-dags-"))
    shutil.copy(mapped_ingest.DAG_FILE, dags / mapped_ingest.DAG_FILE.name)
    shutil.copy(HERE / "dags" / "m3ter_cluster.py", dags / "m3ter_cluster.py")
    output = dags / "output"
    try:
        with cluster.celery_cluster(
            dags,
            keep=keep,
            conn_extra={"ingest_machines": 2},
            env={"M3TER_CLUSTER_OUTPUT": str(output)},
        ) as running:
            airflow = running.airflow
            dag_module = mapped_ingest._load("example_m3ter_mapped_ingest", mapped_ingest.DAG_FILE)
            airflow.run("pools", "set", dag_module.POOL, str(dag_module.POOL_SLOTS), "m3ter ingest")
            for dag_id in (MAPPED_DAG, DEFERRABLE_DAG, ASSETS_DAG):
                airflow.wait_for(f"DAG {dag_id}", lambda d=dag_id: airflow.get(f"/api/v2/dags/{d}").ok, 300)
            # the usage asset and its alias link made once, before parallel tasks race to make them
            run_id = trigger(airflow, ASSETS_DAG)
            state = airflow.wait_for(
                f"run {run_id}",
                lambda: (s := run_state(airflow, ASSETS_DAG, run_id)) in ("success", "failed") and s,
                300,
            )
            if state != "success":
                raise RuntimeError(f"{ASSETS_DAG} {state}: {api_server_errors(running)}")
            yield running
    finally:
        shutil.rmtree(dags, ignore_errors=True)


def api_server_errors(running: Any, most: int = 5) -> list[str]:
    """The api-server's last error lines (a task it set to failed says why there), for a report."""
    log = running.airflow.home / "api-server.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    found = [
        line[:400] for line in lines if "[error" in line or line.startswith(("sqlalchemy.exc", "psycopg2"))
    ]
    return found[-most:]


def task_instances(airflow: Any, dag_id: str, run_id: str, task_id: str | None = None) -> list[dict]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000"
    response = airflow.get(path + (f"&task_id={task_id}" if task_id else ""))
    response.raise_for_status()
    return response.json()["task_instances"]


def trigger(airflow: Any, dag_id: str, conf: dict | None = None) -> str:
    run_id = f"cluster-{secrets.token_hex(4)}"
    body = {"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}
    airflow.post(f"/api/v2/dags/{dag_id}/dagRuns", body).raise_for_status()
    return run_id


def run_state(airflow: Any, dag_id: str, run_id: str) -> str | None:
    response = airflow.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    return response.json().get("state") if response.ok else None


def _peak_rate(samples: list[tuple[float, int]], span: float = 1.0) -> float:
    """The highest count increase over any ``span`` seconds or more between two samples, per second."""
    peak, start = 0.0, 0
    for t, count in samples:
        while start + 1 < len(samples) and t - samples[start + 1][0] >= span:
            start += 1
        t0, c0 = samples[start]
        if t - t0 >= span:
            peak = max(peak, (count - c0) / (t - t0))
    return peak


def mapped_load(
    running: Any,
    rows: int,
    slices: int = 8,
    *,
    kill: str | None = None,
    latency: float = 0.0,
    timeout: float = 3600,
) -> dict[str, Any]:
    """One run of the mapped-ingest example on ``rows`` demo rows (fresh emulator state); SIGKILL worker
    ``kill`` while one of its ingest tasks is part-way through its slice."""
    airflow, emulator = running.airflow, running.emulator
    source = running.folder / "input" / f"measurements-{rows}.jsonl"
    if not source.exists():
        mapped_ingest._load("example_m3ter_mapped_ingest", mapped_ingest.DAG_FILE).write_demo_rows(
            source, rows
        )
    emulator.reset()
    if latency:  # every ingest request answers after this long (m3ter is not on loopback)
        emulator.add_fault(INGEST, delay=latency, times=None)
    started = time.monotonic()
    run_id = trigger(airflow, MAPPED_DAG, {"input": str(source), "rows": rows, "slices": slices})
    samples: list[tuple[float, int]] = []  # (seconds, ingest requests so far)
    stored_at: list[tuple[float, int]] = []
    killed: dict[str, Any] = {}
    seen = [0]  # the killed worker's ingest requests at the last look
    deadline = started + timeout
    state = None
    while time.monotonic() < deadline:
        stats = emulator.stats()
        now = time.monotonic() - started
        samples.append((now, stats["requests"].get(INGEST, 0)))
        stored_at.append((now, stats["measurements_stored"]))
        if kill and not killed:
            killed = _maybe_kill(running, run_id, kill, stats, rows, seen)
        state = run_state(airflow, MAPPED_DAG, run_id)
        if state in ("success", "failed"):
            break
        airflow.check_alive()
        time.sleep(0.25)
    wall = time.monotonic() - started
    stats = emulator.stats()
    uids = {m["uid"] for m in emulator.measurements()}
    instances = task_instances(airflow, MAPPED_DAG, run_id, "ingest_slice")
    requests = stats["requests"].get(INGEST, 0)
    limited = stats["rate_limited"].get(INGEST, 0)
    first = next((t for t, count in samples if count), 0.0)
    last = next((t for t, count in stored_at if count >= rows), wall)
    ingest_seconds = max(last - first, 1e-9)
    return {
        "scenario": f"kill {kill}" if kill else "clean",
        "state": state,
        "rows": rows,
        "slices": slices,
        "seconds": round(wall, 1),
        "ingest_seconds": round(ingest_seconds, 1),
        "measurements_per_second": round(rows / ingest_seconds),
        "ingest_requests": requests,
        "requests_per_second": round(requests / ingest_seconds, 1),
        "peak_requests_per_second": round(_peak_rate(samples), 1),
        "answered_429": limited,
        "share_429": limited / requests if requests else 0.0,
        "rate_limited_by": stats["rate_limited_by"],
        "token_exchanges": stats["token_exchanges"],
        "workers": running.per_worker(stats),
        "stored": stats["measurements_stored"],
        "distinct_uids": len(uids),
        "duplicates_refused": stats["measurements_duplicates"],
        "reconciled": mapped_ingest.reconciled(airflow, run_id),
        "task_retries": sum(max(ti["try_number"] - 1, 0) for ti in instances),
        "ingest_tasks": [
            {k: ti.get(k) for k in ("map_index", "state", "try_number", "hostname")} for ti in instances
        ],
        "killed": killed,
        "api_server_errors": api_server_errors(running) if state != "success" else [],
        "unsuccessful_tasks": [
            f"{ti['task_id']}[{ti.get('map_index', -1)}]: {ti.get('state')} (try {ti.get('try_number')})"
            for ti in task_instances(airflow, MAPPED_DAG, run_id)
            if ti.get("state") != "success"
        ],
    }


def _maybe_kill(
    running: Any, run_id: str, worker: str, stats: dict, rows: int, seen: list[int]
) -> dict[str, Any]:
    """SIGKILL ``worker`` while it is sending: it has an ingest task running and m3ter received more
    of its ingest requests since the last look (``seen``: the count then). Else nothing, ``{}``."""
    address = running.workers[worker]
    sent = stats["clients"].get(address, {}).get("routes", {}).get(INGEST, 0)
    sending = sent > seen[0]
    seen[0] = sent
    if not sending or stats["measurements_stored"] >= rows * 0.8:
        return {}
    busy = [
        ti["map_index"]
        for ti in task_instances(running.airflow, MAPPED_DAG, run_id, "ingest_slice")
        if ti.get("state") == "running" and ti.get("hostname") == worker
    ]
    if not busy:
        return {}
    running.kill(worker)
    return {
        "worker": worker,
        "map_indexes": busy,
        "stored_at_kill": stats["measurements_stored"],
        "ingest_requests_of_the_worker_at_kill": sent,
    }


def triggerer_restart(running: Any, job_seconds: float = 30, timeout: float = 600) -> dict[str, Any]:
    """Run the deferrable pair; restart the triggerer while both tasks are deferred; count job starts."""
    airflow, emulator = running.airflow, running.emulator
    emulator.reset()
    emulator.job_duration = job_seconds
    try:
        started = time.monotonic()
        run_id = trigger(airflow, DEFERRABLE_DAG)

        def all_deferred() -> list[dict] | None:
            instances = task_instances(airflow, DEFERRABLE_DAG, run_id)
            return (
                instances
                if len(instances) == 2 and all(ti["state"] == "deferred" for ti in instances)
                else None
            )

        airflow.wait_for("both tasks deferred", all_deferred, timeout)
        deferred_after = time.monotonic() - started
        airflow.stop("triggerer")
        stopped_after = time.monotonic() - started
        at_restart = _jobs(emulator)
        airflow.start("triggerer", "triggerer")
        state = airflow.wait_for(
            f"run {run_id}",
            lambda: (s := run_state(airflow, DEFERRABLE_DAG, run_id)) in ("success", "failed") and s,
            timeout,
        )
        seconds = time.monotonic() - started
    finally:
        emulator.job_duration = 1.0
    stats = emulator.stats()
    instances = task_instances(airflow, DEFERRABLE_DAG, run_id)
    return {
        "state": state,
        "seconds": round(seconds, 1),
        "job_seconds": job_seconds,
        "deferred_after": round(deferred_after, 1),
        "triggerer_stopped_after": round(stopped_after, 1),
        # jobs m3ter created: POSTs answered 2xx (a POST refused for a stale token created none)
        "exports_started": _answered_2xx(stats, EXPORT_START),
        "bill_jobs_started": _answered_2xx(stats, BILL_JOB_START),
        # the jobs m3ter holds: status when the triggerer stopped, and at the end
        "jobs_at_restart": at_restart,
        "jobs": _jobs(emulator),
        "job_posts": {route: stats["statuses"].get(route, {}) for route in (EXPORT_START, BILL_JOB_START)},
        "tasks": {ti["task_id"]: {"state": ti["state"], "try_number": ti["try_number"]} for ti in instances},
    }


def _jobs(emulator: Any) -> dict[str, list[str]]:
    """Every job the emulator holds, by kind: their statuses now (one entry per job created)."""
    app = emulator._app  # the emulator's job board (no public view of jobs of every kind)
    with app.lock:
        app.jobs.advance()
        jobs: dict[str, list[str]] = {}
        for job in sorted(app.jobs.jobs.values(), key=lambda j: j.seq):
            jobs.setdefault(job.kind, []).append(app.jobs.status(job))
        return jobs


def _answered_2xx(stats: dict, route: str) -> int:
    return sum(n for status, n in stats["statuses"].get(route, {}).items() if status.startswith("2"))


def table(results: list[dict[str, Any]]) -> str:
    """The benchmark's Markdown table (a and b: the two workers)."""
    lines = [
        f"Ingest limits: {ORG_LIMIT:g} requests/s per Organization, {IP_LIMIT:.1f}/s per source IP "
        "sustained (5,000 per 5 minutes; see --ip-window).",
        "",
        "| run | rows | wall s | ingest s | measurements/s | ingest requests/s, mean (peak 1 s) "
        "| 429s: share (a / b; by limit) | ingest requests a / b | token exchanges a / b "
        "| stored | distinct | task retries |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        a, b = r["workers"]["worker-a"], r["workers"]["worker-b"]
        by_limit = ", ".join(f"{name} {n:,}" for name, n in sorted(r["rate_limited_by"].items())) or "-"
        lines.append(
            f"| {r['scenario']} | {r['rows']:,} | {r['seconds']} | {r['ingest_seconds']} | "
            f"{r['measurements_per_second']:,} | "
            f"{r['requests_per_second']} ({r['peak_requests_per_second']}) | "
            f"{r['answered_429']:,}: {r['share_429']:.2%} ({a['rate_limited']:,} / {b['rate_limited']:,}; "
            f"{by_limit}) | {a['ingest_requests']:,} / {b['ingest_requests']:,} | "
            f"{r['token_exchanges']}: {a['token_exchanges']} / {b['token_exchanges']} | "
            f"{r['stored']:,} | {r['distinct_uids']:,} | {r['task_retries']} |"
        )
    return "\n".join(lines)


def verdict(results: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the runs (empty: all good), including the < 1% 429 target."""
    problems = []
    for r in results:
        name = f"{r['scenario']} ({r['rows']:,} rows)"
        if r["state"] != "success":
            problems.append(f"{name}: run {r['state']}: {r['unsuccessful_tasks']}")
        if not r["stored"] == r["distinct_uids"] == r["rows"]:
            problems.append(f"{name}: {r['stored']:,} stored, {r['distinct_uids']:,} distinct uids")
        if r["share_429"] >= 0.01:
            problems.append(f"{name}: {r['share_429']:.2%} of ingest requests answered 429 (target < 1%)")
        if r["scenario"] != "clean" and not r["killed"]:
            problems.append(f"{name}: the worker was not killed mid-load")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="measurements (default 1,000,000)")
    parser.add_argument("--slices", type=int, default=8, help="slices, i.e. mapped tasks (default 8)")
    parser.add_argument(
        "--runs", nargs="+", default=["clean", "kill"], choices=["clean", "kill", "deferrable"]
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to each ingest answer")
    parser.add_argument(
        "--ip-window",
        type=float,
        default=None,
        help="shorten the per-IP window to this many seconds, its limit scaled to keep 16.7/s sustained "
        "(m3ter: 5,000 per 300 s), so a run of a few minutes meets it",
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster's folder (logs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    reason = cluster.missing()
    if reason:
        print(f"celery_cluster: {reason}")
        return 2
    results, deferrable = [], []
    with started_cluster(keep=args.keep) as running:
        if args.ip_window:
            per_ip = round(IP_LIMIT * args.ip_window)
            running.emulator.set_limits(ip_window=args.ip_window, ingest_per_ip=per_ip)
            print(f"per-IP ingest limit: {per_ip:,} requests per {args.ip_window:g} s", flush=True)
        for run in args.runs:
            if run == "deferrable":
                deferrable.append(triggerer_restart(running))
                continue
            kill = "worker-a" if run == "kill" else None
            if kill and kill not in running.airflow.processes:
                running.start_worker(kill)  # a worker killed by an earlier run
            results.append(mapped_load(running, args.rows, args.slices, kill=kill, latency=args.latency))
            if not args.json:
                print(json.dumps({k: v for k, v in results[-1].items() if k != "ingest_tasks"}), flush=True)
    if args.json:
        print(json.dumps({"loads": results, "deferrable": deferrable}))
    else:
        print(table(results))
        for d in deferrable:
            print(f"deferrable pair, triggerer restarted mid-wait: {json.dumps(d)}")
    problems = verdict(results) + [
        f"deferrable pair: {d}"
        for d in deferrable
        if d["state"] != "success" or d["exports_started"] != 1 or d["bill_jobs_started"] != 1
    ]
    for problem in problems:
        print(f"FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
