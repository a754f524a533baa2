"""A real CeleryExecutor cluster (``-m cluster``): Redis, PostgreSQL, api-server, scheduler,
dag-processor, triggerer and two Celery workers, each worker on its own loopback address and token
cache as on a machine of its own (``benchmarks/cluster.py``), against the rate-limited emulator.

- 50,000 measurements through the mapped-ingest example while one worker is SIGKILLed part-way
  through an ingest task: its tasks are retried on the other worker and exactly 50,000 are stored;
- a deferrable export and a bill job wait in the triggerer, which is restarted mid-wait: both
  finish, each job started once.

Needs Airflow 3, ``redis-server``, PostgreSQL's binaries and the ``cluster`` extra; skipped with the
reason when one is missing, unless ``M3TER_REQUIRE_CLUSTER=1`` (.ci/run) makes that a failure.
"""

from __future__ import annotations

import os

import pytest

from tests.e2e import load_benchmark

pytestmark = pytest.mark.cluster

ROWS = 50_000
SLICES = 8
#: added to each ingest answer (m3ter is not on loopback), so a slice takes long enough to be killed in
LATENCY = 0.2


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("celery_cluster")


@pytest.fixture(scope="module")
def running(bench):
    reason = bench.cluster.missing()
    if reason:
        if os.environ.get("M3TER_REQUIRE_CLUSTER") == "1":
            pytest.fail(f"M3TER_REQUIRE_CLUSTER=1 but {reason}")
        pytest.skip(reason)
    # M3TER_CLUSTER_KEEP=1 leaves the cluster's folder (every component's log) for a look
    with bench.started_cluster(keep=os.environ.get("M3TER_CLUSTER_KEEP") == "1") as cluster:
        yield cluster


def test_a_worker_killed_mid_load_loses_and_doubles_nothing(bench, running):
    result = bench.mapped_load(running, ROWS, SLICES, kill="worker-a", latency=LATENCY, timeout=900)
    report = {k: v for k, v in result.items() if k != "ingest_tasks"}
    print(report)
    killed = result["killed"]
    assert killed, f"worker-a was never seen part-way through an ingest task: {report}"
    assert killed["ingest_requests_of_the_worker_at_kill"] > 0 and killed["stored_at_kill"] < ROWS
    assert result["state"] == "success", report
    # exactly once: every row stored, none twice (a retried slice re-sends the uids m3ter has)
    assert result["stored"] == result["distinct_uids"] == ROWS
    assert result["reconciled"]["sent"] == result["reconciled"]["accepted"] == ROWS
    # the killed worker's requests m3ter had received were stored; the retry sent them again: refused
    assert result["duplicates_refused"] > 0
    # the killed worker's tasks were retried, and finished on the other worker
    finals = {ti["map_index"]: ti for ti in result["ingest_tasks"]}
    for index in killed["map_indexes"]:
        assert finals[index]["try_number"] >= 2 and finals[index]["hostname"] == "worker-b", finals[index]
    # each worker is a machine of its own: its own address at m3ter, one token exchange each
    workers = result["workers"]
    assert workers["worker-a"]["requests"] > 0 and workers["worker-b"]["requests"] > 0
    assert workers["worker-a"]["token_exchanges"] == workers["worker-b"]["token_exchanges"] == 1
    assert result["token_exchanges"] == 2
    # every ingest request is attributed to a worker, and the 429s counted (none expected at this size)
    ingest_by_worker = sum(w["ingest_requests"] for w in workers.values())
    assert ingest_by_worker == result["ingest_requests"]
    assert result["answered_429"] == sum(w["rate_limited"] for w in workers.values())
    assert result["share_429"] < 0.01, result  # the workers pace themselves (ingest_machines: 2)


def test_the_triggerer_restarted_mid_wait_finishes_both_jobs_started_once(bench, running):
    result = bench.triggerer_restart(running, job_seconds=30, timeout=600)
    print(result)
    # the triggerer went down while m3ter was still working on both jobs
    at_restart = result["jobs_at_restart"]
    assert set(at_restart) == {"dataexport", "billjob"}, result
    [export_status], [bill_job_status] = at_restart["dataexport"], at_restart["billjob"]
    assert export_status in ("PENDING", "RUNNING"), result
    assert bill_job_status in ("PENDING", "INITIALIZING", "RUNNING"), result
    assert result["state"] == "success", result
    assert {task: ti["state"] for task, ti in result["tasks"].items()} == {
        "export_accounts": "success",
        "run_bill_job": "success",
    }
    # each job created once (a POST refused for a stale token created none), and finished
    assert result["jobs"] == {"dataexport": ["SUCCEEDED"], "billjob": ["COMPLETE"]}, result
    assert result["exports_started"] == result["bill_jobs_started"] == 1, result
