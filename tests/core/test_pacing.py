"""Ingest pacing without a server: the arithmetic, the extras, the bucket's counts (fake clocks), the
file-backed bucket shared by processes, a killed holder."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal

import pytest

from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.ingest.pace import (
    TaskPace,
    bucket_file_name,
    ingest_pace,
    machine_bucket,
    task_pace,
)
from m3ter_provider.core.limits import check_max_requests_per_second
from m3ter_provider.core.pacing import BucketState, FileBucket, Limits, LocalBucket, acquire, hold, take
from m3ter_provider.errors import M3terConfigError


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def settings(**extra) -> M3terSettings:
    return M3terSettings.from_connection_fields(
        "m3ter_default", login="key", password="secret", host=None, extra={"org_id": "org", **extra}
    )


# ---------------------------------------------------------------- the arithmetic
def test_each_machine_paces_at_its_share_of_the_organization_rate():
    pace = ingest_pace(45, 2)
    assert (pace.rate, pace.machine_rate, pace.task_rate) == (22.5, 22.5, None)
    assert pace.describe().startswith("ingest paced at 22.5 requests/s: ingest_rate 45 / ingest_machines 2")
    assert "5,000 requests per 300 s" in pace.describe()
    assert "16.67/s sustained" in pace.describe()


def test_a_task_limit_lowers_the_machine_share_and_never_raises_it():
    lower = ingest_pace(45, 2, 5)
    assert (lower.rate, lower.machine_rate, lower.task_rate) == (5, 22.5, 5)
    assert lower.describe().startswith("ingest paced at 5 requests/s: max_requests_per_second 5")
    assert "the machine's share is 22.5" in lower.describe()
    higher = ingest_pace(45, 2, 30)
    assert (higher.rate, higher.task_rate) == (22.5, None)
    assert "max_requests_per_second 30 does not raise it" in higher.describe()


def test_pacing_off_unless_a_task_asks_for_a_limit():
    off = ingest_pace(0, 1)
    assert off.rate is None
    assert off.describe().startswith("ingest not paced: the connection's ingest_rate is off")
    task_only = ingest_pace(0, 3, 4)
    assert (task_only.rate, task_only.machine_rate) == (4, None)


def test_the_connection_defaults_are_45_requests_a_second_on_one_machine():
    default = settings()
    assert (default.ingest_rate, default.ingest_machines) == (45.0, 1)
    assert ingest_pace(default.ingest_rate, default.ingest_machines).rate == 45.0


@pytest.mark.parametrize("value", ["off", "OFF", 0, "0", " off "])
def test_ingest_rate_off_turns_pacing_off(value):
    assert settings(ingest_rate=value).ingest_rate == 0.0
    paced = task_pace(settings(ingest_rate=value), max_requests_per_second=None, directory=None, sleep=print)
    assert paced is None


@pytest.mark.parametrize("value", ["fast", -1, "-3", "nan", "inf", True, [45]])
def test_a_bad_ingest_rate_names_the_field_and_the_fix(value):
    with pytest.raises(M3terConfigError) as caught:
        settings(ingest_rate=value)
    message = str(caught.value)
    assert "the m3ter connection 'm3ter_default'" in message
    assert "extra 'ingest_rate'" in message
    assert "0 or 'off' to turn pacing off" in message


@pytest.mark.parametrize("value", [0, "0", 1.5, "two", -2, True])
def test_a_bad_ingest_machines_names_the_field_and_the_fix(value):
    with pytest.raises(M3terConfigError) as caught:
        settings(ingest_machines=value)
    assert "extra 'ingest_machines'" in str(caught.value)
    assert "whole number of at least 1" in str(caught.value)


def test_extras_under_the_legacy_prefix_and_as_strings():
    legacy = settings(extra__m3ter__ingest_rate="20", extra__m3ter__ingest_machines="4")
    assert (legacy.ingest_rate, legacy.ingest_machines) == (20.0, 4)
    assert settings(ingest_rate=None, ingest_machines="").ingest_rate == 45.0  # a form's empty field


@pytest.mark.parametrize("value", [0, -1, "x", "nan", True, {}])
def test_a_bad_max_requests_per_second_names_the_argument(value):
    with pytest.raises(M3terConfigError, match=r"max_requests_per_second .*number above 0"):
        check_max_requests_per_second(value)


def test_max_requests_per_second_takes_a_rendered_template():
    assert check_max_requests_per_second("7.5") == 7.5
    assert check_max_requests_per_second(None) is None


# ---------------------------------------------------------------- the bucket's counts (fake clock)
def test_the_rate_spaces_requests_and_a_quiet_spell_saves_no_more_than_the_burst():
    clock = FakeClock()
    bucket = LocalBucket(Limits(rate=10, burst=1), clock=clock)
    assert bucket.try_take() == 0
    assert bucket.try_take() == pytest.approx(0.1)
    clock.now += 60  # a minute of quiet: still one request at once
    assert bucket.try_take() == 0
    assert bucket.try_take() > 0
    taken = 0
    start = clock.now
    while clock.now < start + 10:
        acquire(bucket, clock.sleep)
        taken += 1
    assert taken in (100, 101)  # 10 a second for 10 seconds


def test_the_window_lets_a_short_load_burst_and_holds_a_sustained_one_under_its_count():
    """m3ter's per-IP limit, scaled down: at most 50 requests in any 30 s, paced at 10/s."""
    clock = FakeClock(0.0)
    limits = Limits(rate=10, burst=1, window_requests=50, window_seconds=30, slots=30)
    bucket = LocalBucket(limits, clock=clock)
    times = []
    for _ in range(200):
        acquire(bucket, clock.sleep)
        times.append(clock.now)
    # a short load goes at the full rate: the first 50 in 5 seconds
    assert times[49] - times[0] == pytest.approx(4.9)
    # and never more than 50 in any 30-second window
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 30) <= 50
    # sustained: close to the window's allowance (200 requests need more than 3 windows of 30 s; the
    # window counts a slot or two more than 30 s, so it never undercounts, and takes a little longer)
    span = times[-1] - times[0]
    assert 90 < span < 105


def test_a_429_holds_the_bucket_for_retry_after_and_drops_the_saved_burst():
    clock = FakeClock()
    bucket = LocalBucket(Limits(rate=50, burst=5), clock=clock)
    bucket.throttled(3.0)
    assert bucket.try_take() == pytest.approx(3.0)
    clock.now += 3.0
    assert bucket.try_take() == pytest.approx(1 / 50)  # nothing saved up during the hold
    clock.now += 1 / 50
    taken = sum(1 for _ in range(10) if bucket.try_take() == 0)
    assert taken == 1  # then the rate, not a burst of 5


def test_a_clock_that_went_back_starts_the_state_afresh():
    limits = Limits(rate=1, burst=1, window_requests=2, window_seconds=10, slots=10)
    state = BucketState.fresh(limits, 500.0)
    assert take(state, limits, 500.0) == 0
    hold(state, limits, 500.0, 100.0)
    assert take(state, limits, 10.0) > 0  # after a reboot: an empty bucket, no stale hold or window
    assert take(state, limits, 11.0) == 0
    assert state.hold_until == 0.0


# ---------------------------------------------------------------- the file-backed bucket
def _take_many(path: str, limits: Limits, attempts: int, now: float, results) -> None:
    bucket = FileBucket(path, limits, clock=lambda: now)
    results.put(sum(1 for _ in range(attempts) if bucket.try_take() == 0))


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (Limits(rate=1, burst=10), 10),  # a frozen clock: only the burst, shared by both processes
        (Limits(rate=1e6, burst=1000, window_requests=7, window_seconds=300), 7),  # the window, shared
    ],
)
def test_two_processes_share_one_file_bucket(tmp_path, limits, expected):
    path = str(tmp_path / "org.pace")
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_take_many, args=(path, limits, 25, 1000.0, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert results.get(timeout=5) + results.get(timeout=5) == expected  # with a bucket each: 2 x expected
    state = json.loads((tmp_path / "org.pace").read_text())
    assert sum(count for _, count in state["slots"]) == (expected if limits.window_requests else 0)


def _hold_the_lock_and_wait(path: str, ready) -> None:
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    signal.pause()  # killed here, lock held


def test_a_killed_holder_does_not_wedge_the_bucket(tmp_path):
    path = str(tmp_path / "org.pace")
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    holder = context.Process(target=_hold_the_lock_and_wait, args=(path, ready))
    holder.start()
    assert ready.wait(30)
    probe = os.open(path + ".lock", os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the child
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(30)
    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel released it with the holder
    fcntl.flock(probe, fcntl.LOCK_UN)
    os.close(probe)
    clock = FakeClock()
    bucket = FileBucket(path, Limits(rate=5, burst=2), clock=clock)
    assert [bucket.try_take() == 0 for _ in range(3)] == [True, True, False]


def test_a_damaged_state_file_starts_afresh_with_an_empty_bucket(tmp_path, caplog):
    path = tmp_path / "org.pace"
    path.write_text('{"tokens": 3, "last"')  # cut off
    clock = FakeClock()
    bucket = FileBucket(str(path), Limits(rate=10, burst=5), clock=clock)
    assert bucket.try_take() == pytest.approx(0.1)  # nothing saved up: the rate, not a burst of 5
    assert "unreadable ingest pacing file" in caplog.text
    clock.now += 0.1
    assert bucket.try_take() == 0
    assert json.loads(path.read_text())["tokens"] == pytest.approx(0.0)


def test_a_removed_directory_is_made_again(tmp_path):
    directory = tmp_path / "cache"
    bucket = FileBucket(str(directory / "org.pace"), Limits(rate=5), clock=FakeClock())
    assert bucket.try_take() == 0
    assert (directory / "org.pace").exists()


# ---------------------------------------------------------------- which bucket a submission uses
def test_without_a_directory_the_threads_and_clients_of_a_process_share_one_bucket():
    first = machine_bucket(settings(), 45.0, None)
    assert machine_bucket(settings(), 45.0, None) is first
    assert machine_bucket(settings(org_id="other"), 45.0, None) is not first


def test_with_a_directory_the_file_is_named_by_organization_ingest_url_and_machine(tmp_path):
    bucket = machine_bucket(settings(), 45.0, str(tmp_path))
    assert isinstance(bucket, FileBucket)
    assert os.path.basename(bucket.path) == bucket_file_name("org", "https://ingest.m3ter.com")
    assert bucket_file_name("org", "https://ingest.m3ter.com", "pod-a") != bucket_file_name(
        "org", "https://ingest.m3ter.com", "pod-b"
    )
    assert "org" not in os.path.basename(bucket.path)


def test_a_task_limit_gets_its_own_bucket_in_front_of_the_machines():
    clock = FakeClock()
    pace = TaskPace(
        ingest_pace(45, 1, 2),
        LocalBucket(Limits(rate=45), clock=clock),
        clock.sleep,
        clock=clock,
    )
    start = clock.now
    for _ in range(11):
        pace.before_attempt()
    assert clock.now - start == pytest.approx(5.0)  # 2 a second, not the machine's 45
    assert (pace.attempts, pace.waited) == (11, 10)
    assert "10 of 11 requests waited for the pace" in pace.summary()
