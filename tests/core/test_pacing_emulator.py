"""Ingest pacing against the rate-limited emulator over real HTTP: mapped-task-like loads sharing one
machine's bucket stay under the Organization's limit; unpaced, the same load is refused often and
still stored exactly once; a 429 holds the shared bucket."""

from __future__ import annotations

import threading

import pytest

from m3ter_provider.core.client import M3terClient
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.ingest.pace import TaskPace, ingest_pace
from m3ter_provider.core.pacing import Limits, LocalBucket
from m3ter_provider.testing import M3terEmulator
from tests.testing.helpers import know_meters

INGEST = "POST /organizations/{orgId}/measurements"
TASKS = 4
ROWS_PER_TASK = 1_000
ROWS_PER_REQUEST = 20  # 50 requests a task, 200 in all
#: the emulator's Organization-wide ingest limit here (m3ter's is 50), and the connection's share of it
LIMIT = 40
INGEST_RATE = 30


@pytest.fixture
def emulator():
    with M3terEmulator() as emu:  # m3ter's limits on
        emu.set_limits(ingest_per_second=LIMIT)
        know_meters(emu, "api_calls")
        yield emu


def clients(emu: M3terEmulator, count: int, pace_directory: str | None, **extra) -> list[M3terClient]:
    settings = M3terSettings.from_connection_fields(
        "m3ter_default",
        login=emu.access_key_id,
        password=emu.api_secret,
        host=emu.url,
        extra={"org_id": emu.org_id, "max_retries": 12, **extra},
    )
    # one client per mapped task, each with its own session; all on one machine (one source IP)
    return [M3terClient(settings, pace_directory=pace_directory) for _ in range(count)]


def mapped_load(tasks: list[M3terClient]) -> list[dict]:
    """Each client ingests its own slice from its own thread, as mapped tasks on one worker would."""
    results: list[dict] = [{} for _ in tasks]
    errors: list[BaseException] = []

    def run(index: int, client: M3terClient) -> None:
        rows = [
            {
                "account": f"acct-{index}",
                "meter": "api_calls",
                "ts": "2026-01-31T12:00:00Z",
                "measure": {"calls": float(i)},
            }
            for i in range(ROWS_PER_TASK)
        ]
        try:
            results[index] = client.submit_measurements(
                rows, uid_namespace=f"run/slice-{index}", concurrency=4, max_items=ROWS_PER_REQUEST
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


def ingest_counts(emu: M3terEmulator) -> tuple[int, int, int]:
    stats = emu.stats()
    requests, refused = stats["requests"].get(INGEST, 0), stats["rate_limited"].get(INGEST, 0)
    return requests, refused, stats["measurements_stored"]


def test_paced_tasks_sharing_a_machine_bucket_store_everything_with_under_1_percent_429s(
    emulator, tmp_path, caplog
):
    caplog.set_level("INFO")
    tasks = clients(emulator, TASKS, str(tmp_path), ingest_rate=INGEST_RATE)
    results = mapped_load(tasks)
    requests, refused, stored = ingest_counts(emulator)
    assert stored == TASKS * ROWS_PER_TASK
    assert sum(r["measurements"] for r in results) == TASKS * ROWS_PER_TASK
    assert requests - refused == TASKS * ROWS_PER_TASK // ROWS_PER_REQUEST
    assert refused * 100 < requests, f"{refused} of {requests} ingest requests answered 429"
    assert "ingest paced at 30 requests/s: ingest_rate 30 / ingest_machines 1" in caplog.text
    assert "one pace shared by this machine's task processes" in caplog.text
    assert caplog.text.count("Ingest pacing: ") == TASKS
    assert len(list(tmp_path.glob("*.pace"))) == 1  # one bucket for the machine


def test_unpaced_the_same_load_is_refused_often_and_still_stored_exactly_once(emulator, tmp_path):
    tasks = clients(emulator, TASKS, str(tmp_path), ingest_rate="off")
    mapped_load(tasks)
    requests, refused, stored = ingest_counts(emulator)
    assert stored == TASKS * ROWS_PER_TASK  # the 429s were retried; uids made the retries safe
    assert requests - refused == TASKS * ROWS_PER_TASK // ROWS_PER_REQUEST
    assert refused * 100 >= requests, f"only {refused} of {requests} ingest requests answered 429"
    assert not list(tmp_path.glob("*.pace"))


def test_without_a_directory_the_tasks_of_one_process_share_its_bucket(emulator):
    tasks = clients(emulator, TASKS, None, ingest_rate=INGEST_RATE)
    mapped_load(tasks)
    requests, refused, stored = ingest_counts(emulator)
    assert stored == TASKS * ROWS_PER_TASK
    assert refused * 100 < requests, f"{refused} of {requests} ingest requests answered 429"


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.mark.parametrize(("retry_after", "held"), [(3, 3.0), (None, 1.0)])
def test_a_429_holds_the_shared_bucket_for_retry_after_else_a_second(emulator, retry_after, held):
    emulator.add_fault(INGEST, status=429, retry_after=retry_after, times=1)
    clock = FakeClock()
    (client,) = clients(emulator, 1, None)
    client.sleep = clock.sleep
    bucket = LocalBucket(Limits(rate=10), clock=clock)
    pace = TaskPace(ingest_pace(10, 1), bucket, clock.sleep, clock=clock)
    start = clock.now
    body = b'{"measurements":[{"uid":"u1","account":"a","meter":"api_calls","ts":"2026-01-31T12:00:00Z"}]}'
    client.send("POST", client.url("measurements", ingest_api=True), body=body, idempotent=True, pace=pace)
    assert (pace.attempts, pace.throttled_count) == (2, 1)
    assert bucket.state.hold_until == pytest.approx(start + held)  # every task on the machine waits
    assert clock.now >= start + held  # and the retry was sent after the hold
    assert emulator.stats()["statuses"][INGEST] == {"429": 1, "200": 1}
