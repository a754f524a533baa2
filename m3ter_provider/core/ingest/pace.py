"""How fast one submission sends measurements, and why: the machine's share and the task's own limit.

m3ter allows 50 ingest requests a second per Organization (every caller together) and 5,000 ingest
requests per 5 minutes per source IP (16.7 a second sustained). The connection says what this
Airflow deployment may use (extra ``ingest_rate``, default 45 requests/s) and over how many machines
it is spread (extra ``ingest_machines``, default 1). Each machine then paces at
``ingest_rate / ingest_machines`` requests a second, and never sends more than 5,000 requests in any
5 minutes: a 1M-measurement load (1,000 requests) goes at the full share; a sustained one settles at
16.7 requests/s per machine. A task's ``max_requests_per_second`` lowers its own pace, never raises it.

The machine's bucket is shared by every task process on the machine through a small file in the
worker token cache directory (``[m3ter] token_cache_dir``) when one is set, else by the threads of
one process. Every attempt (retries too) takes a request from it; a 429 holds it for the
``Retry-After`` m3ter sent, or a second, so every task on the machine backs off together.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from m3ter_provider.core._text import plural
from m3ter_provider.core.limits import IP_INGEST_REQUESTS, IP_INGEST_WINDOW_SECONDS
from m3ter_provider.core.pacing import Bucket, FileBucket, Limits, LocalBucket, acquire

if TYPE_CHECKING:
    from collections.abc import Callable

    from m3ter_provider.core.config import M3terSettings

#: how long a 429 without ``Retry-After`` holds the machine's bucket: m3ter's per-Organization
#: limit is a 1-second window, empty again a second later
THROTTLE_HOLD_SECONDS = 1.0


def _num(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".")


@dataclasses.dataclass(frozen=True)
class IngestPace:
    """One submission's pace.

    :param machine_rate: requests/s of the machine's shared bucket (None: the connection's
        ``ingest_rate`` is off).
    :param task_rate: this task's own limit (``max_requests_per_second``) when it is lower than
        ``machine_rate``, or pacing is otherwise off; else None.
    :param reason: why, for the task log.
    """

    machine_rate: float | None
    task_rate: float | None
    reason: str

    @property
    def rate(self) -> float | None:
        """The requests/s this task sends at most (None: not paced)."""
        rates = [r for r in (self.machine_rate, self.task_rate) if r is not None]
        return min(rates) if rates else None

    def describe(self) -> str:
        """``ingest paced at 22.5 requests/s: ingest_rate 45 / ingest_machines 2``."""
        if self.rate is None:
            return f"ingest not paced: {self.reason}"
        return f"ingest paced at {_num(self.rate)} requests/s: {self.reason}"


def ingest_pace(
    ingest_rate: float, ingest_machines: int, max_requests_per_second: float | None = None
) -> IngestPace:
    """The arithmetic: the machine's share ``ingest_rate / ingest_machines``, lowered by the task's
    ``max_requests_per_second`` (never raised). ``ingest_rate`` 0 turns the machine's pacing off.

    The per-IP window (5,000 requests per 300 s) is not in the rate: it is a second limit of the
    machine's bucket, so a short load bursts at the share and a sustained one settles at 16.7/s.
    """
    if not ingest_rate:
        if max_requests_per_second is None:
            return IngestPace(
                None, None, "the connection's ingest_rate is off (m3ter's 429s are retried with backoff)"
            )
        return IngestPace(
            None,
            max_requests_per_second,
            f"max_requests_per_second {_num(max_requests_per_second)} (the connection's ingest_rate is off)",
        )
    share = ingest_rate / ingest_machines
    why = f"ingest_rate {_num(ingest_rate)} / ingest_machines {ingest_machines}"
    sustained = IP_INGEST_REQUESTS / IP_INGEST_WINDOW_SECONDS
    window = (
        f"; at most {IP_INGEST_REQUESTS:,} requests per {IP_INGEST_WINDOW_SECONDS:g} s from this machine "
        f"(m3ter's per-IP limit, {_num(sustained)}/s sustained)"
    )
    if max_requests_per_second is not None and max_requests_per_second < share:
        return IngestPace(
            share,
            max_requests_per_second,
            f"max_requests_per_second {_num(max_requests_per_second)} (the machine's share is "
            f"{_num(share)}: {why}){window}",
        )
    if max_requests_per_second is not None:
        why += f" (max_requests_per_second {_num(max_requests_per_second)} does not raise it)"
    return IngestPace(share, None, why + window)


# ---------------------------------------------------------------------------------------------
# the machine's bucket: one per Organization and ingest URL on this machine

_LOCAL: dict[tuple[str, str, float, int], LocalBucket] = {}
_LOCAL_LOCK = threading.Lock()


def _forget_in_child() -> None:
    global _LOCAL_LOCK
    _LOCAL.clear()
    _LOCAL_LOCK = threading.Lock()  # a fork may copy it held by a thread the child does not have


os.register_at_fork(after_in_child=_forget_in_child)


def machine_limits(rate: float, window_requests: int = IP_INGEST_REQUESTS) -> Limits:
    """The machine bucket's limits: ``rate`` requests/s one at a time, and m3ter's per-IP window."""
    return Limits(
        rate=rate, burst=1, window_requests=window_requests, window_seconds=IP_INGEST_WINDOW_SECONDS
    )


def bucket_file_name(org_id: str, ingest_url: str, host: str | None = None) -> str:
    """``<hash>.pace``: one per Organization, ingest URL and machine (a volume several pods mount
    keeps one bucket per pod, since each pod has its own IP)."""
    key = json.dumps([org_id, ingest_url, host or socket.gethostname()])
    return hashlib.sha256(key.encode()).hexdigest()[:32] + ".pace"


def machine_bucket(
    settings: M3terSettings,
    rate: float,
    directory: str | None,
    *,
    window_requests: int = IP_INGEST_REQUESTS,
    clock: Callable[[], float] = time.monotonic,
) -> Bucket:
    """The bucket every task on this machine shares for ``settings``' Organization: a file in
    ``directory`` (the worker token cache directory), or, without one, this process's."""
    limits = machine_limits(rate, window_requests)
    if directory:
        path = os.path.join(directory, bucket_file_name(settings.org_id, settings.ingest_url))
        return FileBucket(path, limits, clock=clock)
    key = (settings.org_id, settings.ingest_url, rate, window_requests)
    with _LOCAL_LOCK:
        bucket = _LOCAL.get(key)
        if bucket is None:
            bucket = _LOCAL[key] = LocalBucket(limits, clock=clock)
        return bucket


class TaskPace:
    """Paces one submission's requests (every attempt) and counts what pacing did.

    Implements :class:`m3ter_provider.core.pacing.Pace`.

    :param pace: the arithmetic (:func:`ingest_pace`).
    :param machine: the machine's shared bucket, when ``pace.machine_rate`` is set.
    :param sleep: how to wait (the client's, so tests can replace it).
    :param clock: monotonic seconds for the task's own bucket.
    """

    def __init__(
        self,
        pace: IngestPace,
        machine: Bucket | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pace = pace
        self.machine = machine
        self.task = LocalBucket(Limits(rate=pace.task_rate), clock=clock) if pace.task_rate else None
        self.sleep = sleep
        #: attempts sent, attempts that waited for the pace, seconds waited, 429s heard
        self.attempts = 0
        self.waited = 0
        self.slept = 0.0
        self.throttled_count = 0
        self._lock = threading.Lock()

    def before_attempt(self) -> None:
        slept = 0.0
        if self.task is not None:
            slept += acquire(self.task, self.sleep)
        if self.machine is not None:
            slept += acquire(self.machine, self.sleep)
        with self._lock:
            self.attempts += 1
            if slept > 0:
                self.waited += 1
                self.slept += slept

    def throttled(self, retry_after: float | None) -> None:
        seconds = THROTTLE_HOLD_SECONDS if retry_after is None else retry_after
        for bucket in (self.task, self.machine):
            if bucket is not None:
                bucket.throttled(seconds)
        with self._lock:
            self.throttled_count += 1

    def summary(self) -> str:
        """``Ingest pacing: 12 of 1,000 requests waited for the pace (3.1 s in all); 0 answered 429.``"""
        with self._lock:
            return (
                f"Ingest pacing: {self.waited:,} of {plural(self.attempts, 'request')} waited for the pace "
                f"({self.slept:.1f} s in all); m3ter answered 429 to {self.throttled_count:,}."
            )


def task_pace(
    client_settings: M3terSettings,
    *,
    max_requests_per_second: float | None,
    directory: str | None,
    sleep: Callable[[float], None],
) -> TaskPace | None:
    """The pace of one submission from the connection's settings and the task's own limit; None when
    nothing paces it."""
    pace = ingest_pace(client_settings.ingest_rate, client_settings.ingest_machines, max_requests_per_second)
    if pace.rate is None:
        return None
    machine = machine_bucket(client_settings, pace.machine_rate, directory) if pace.machine_rate else None
    return TaskPace(pace, machine, sleep)
