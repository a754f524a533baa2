"""Client-side pacing under m3ter's rate limits.

m3ter answers 429 past a limit (see the emulator's ``testing/limits.py`` for the figures); pacing keeps
a caller under its share so the 429s stay rare, and the transport still retries the ones that come.

- :class:`Pacer`: a token bucket for one process's calls (usage queries, account sync).
- :class:`Limits`, :func:`take`, :func:`hold`: a rate plus a rolling window (m3ter's per-IP limit)
  as plain state, kept by :class:`LocalBucket` (the threads of one process) or :class:`FileBucket`
  (every process on a machine, through a locked file). Ingest uses them:
  :mod:`m3ter_provider.core.ingest.pace`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from m3ter_provider.core._files import flocked, replace_atomically
from m3ter_provider.errors import M3terConfigError

if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable

log = logging.getLogger(__name__)


class Pacer:
    """A token bucket: at most ``burst`` calls at once, then ``rate`` calls a second (``burst=1``
    spaces every call ``1 / rate`` seconds apart). Thread-safe; never sleeps holding its lock.
    (A :class:`LocalBucket` without a window, validated for callers that give their own rate.)

    :param rate: calls per second, a positive number.
    :param burst: calls allowed at once after a quiet spell (at least 1).
    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise M3terConfigError(f"rate {rate!r}: give a positive number of requests per second.")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise M3terConfigError(f"burst {burst!r}: give a whole number of requests, at least 1.")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self._bucket = LocalBucket(Limits(rate=self.rate, burst=burst), clock)

    def wait(self, sleep: Callable[[float], None]) -> float:
        """Take one token, sleeping (with ``sleep``) until one is there; return the seconds slept."""
        return acquire(self._bucket, sleep)


# ---------------------------------------------------------------------------------------------
# A machine's ingest bucket: a rate (token bucket) and a rolling window (m3ter's per-IP limit),
# shared by the threads of one process or, through a small locked file, by every process on it.


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one bucket allows: ``rate`` requests a second (``burst`` at once) and at most
    ``window_requests`` in any ``window_seconds`` (m3ter's per-IP limit; 0 turns it off).

    :param rate: requests per second, a positive number.
    :param burst: requests allowed at once after a quiet spell.
    :param window_requests: requests allowed in any ``window_seconds`` (0: no window).
    :param window_seconds: the rolling window's length.
    :param slots: the window is counted in ``slots`` slots of ``window_seconds / slots`` each; two
        more are kept, so the span counted is always longer than the window (never undercounts).
    """

    rate: float
    burst: int = 1
    window_requests: int = 0
    window_seconds: float = 300.0
    slots: int = 30

    @property
    def slot_seconds(self) -> float:
        return self.window_seconds / self.slots


@dataclasses.dataclass
class BucketState:
    """The state a bucket keeps (plain numbers, so a file can hold it as JSON)."""

    tokens: float = 0.0
    last: float = 0.0
    #: no request before this time (after a 429)
    hold_until: float = 0.0
    #: requests counted per window slot: ``{slot index: count}``
    slots: dict[int, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def fresh(cls, limits: Limits, now: float) -> BucketState:
        return cls(tokens=float(limits.burst), last=now)

    def as_json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "last": self.last,
            "hold_until": self.hold_until,
            "slots": [[index, count] for index, count in sorted(self.slots.items())],
        }

    @classmethod
    def from_json(cls, data: Any) -> BucketState:
        state = cls(
            tokens=float(data["tokens"]),
            last=float(data["last"]),
            hold_until=float(data["hold_until"]),
            slots={int(index): int(count) for index, count in data["slots"]},
        )
        if not all(math.isfinite(v) for v in (state.tokens, state.last, state.hold_until)):
            raise ValueError("not finite")
        return state


#: waits shorter than this are rounding, not waits (a sleep that short may not move a clock at all)
_EPSILON = 1e-6


def take(state: BucketState, limits: Limits, now: float) -> float:
    """Take one request from ``state`` at ``now``: 0.0 when taken, else the seconds to wait first.

    Changes ``state`` (the refill, and the request when taken). A clock that went backwards (the
    state outlived a reboot) starts the state afresh, window included.
    """
    if now < state.last:
        state.tokens, state.last, state.hold_until, state.slots = 0.0, now, 0.0, {}
    # nothing is saved up while held after a 429: the rate resumes, not a burst
    refill = max(0.0, now - max(state.last, state.hold_until)) * limits.rate
    state.tokens = min(float(limits.burst), state.tokens + refill)
    state.last = now
    waits = [state.hold_until - now]
    if state.tokens < 1 - _EPSILON:
        waits.append((1 - state.tokens) / limits.rate)
    slot = 0
    if limits.window_requests:
        width = limits.slot_seconds
        slot = math.floor(now / width)
        kept = limits.slots + 2  # slots slot-kept+1 .. slot: a span of more than the window
        for index in [i for i in state.slots if i <= slot - kept or i > slot]:
            del state.slots[index]
        if sum(state.slots.values()) >= limits.window_requests:
            waits.append((min(state.slots) + kept) * width - now)
    wait = max(waits)
    if wait > _EPSILON:  # a float's rounding is no reason to wait
        return wait
    state.tokens -= 1
    if limits.window_requests:
        state.slots[slot] = state.slots.get(slot, 0) + 1
    return 0.0


def hold(state: BucketState, limits: Limits, now: float, seconds: float) -> None:
    """After a 429: no request from this bucket for ``seconds``, and no saved-up burst after it."""
    state.hold_until = max(state.hold_until, now + seconds)
    state.tokens = min(state.tokens, 0.0)


class LocalBucket:
    """A :class:`Limits` bucket shared by the threads of one process. Never sleeps holding its lock.

    :param limits: what it allows.
    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._state = BucketState.fresh(limits, clock())
        self._lock = threading.Lock()

    def try_take(self) -> float:
        """0.0 when a request was taken, else the seconds to wait before asking again."""
        with self._lock:
            return take(self._state, self.limits, self.clock())

    def throttled(self, seconds: float) -> None:
        with self._lock:
            hold(self._state, self.limits, self.clock(), seconds)

    @property
    def state(self) -> BucketState:
        with self._lock:
            return dataclasses.replace(self._state, slots=dict(self._state.slots))


class FileBucket:
    """A :class:`Limits` bucket shared by every process on one machine through a small file.

    The state (a few numbers, JSON) lives in ``<path>``; ``<path>.lock`` is locked with
    ``fcntl.flock`` around each read-change-write, never while sleeping. A holder killed mid-way
    releases the lock with its death (the kernel drops ``flock`` locks of a dead process); the
    state is replaced atomically (``os.replace``), so a half-written file is never read, and an
    unreadable one starts afresh with an empty bucket. The clock must be one every process on the
    machine shares (``time.monotonic`` is system-wide on Linux and macOS). POSIX only.

    :param path: the state file; its directory must exist (the worker token cache directory).
    :param limits: what it allows (the callers on one machine should agree on them).
    :param clock: monotonic seconds, the same in every process (injectable for tests).
    """

    def __init__(self, path: str, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.limits = limits
        self.clock = clock

    def __repr__(self) -> str:
        return f"FileBucket({self.path!r}, rate={self.limits.rate:g})"

    def try_take(self) -> float:
        """0.0 when a request was taken, else the seconds to wait before asking again."""
        with self._locked():
            state, readable = self._read()
            wait = take(state, self.limits, self.clock())
            if wait == 0 or not readable:  # a wait changes nothing the next read cannot recompute
                self._write(state)
            return wait

    def throttled(self, seconds: float) -> None:
        with self._locked():
            state, _ = self._read()
            hold(state, self.limits, self.clock(), seconds)
            self._write(state)

    @property
    def state(self) -> BucketState:
        with self._locked():
            return self._read()[0]

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return flocked(self.path + ".lock", self._recreate_directory)

    def _recreate_directory(self) -> None:  # removed by a tmp cleaner
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)

    def _read(self) -> tuple[BucketState, bool]:
        """The saved state and whether it was readable (a missing file is: a full bucket)."""
        try:
            with open(self.path, "rb") as handle:
                return BucketState.from_json(json.loads(handle.read())), True
        except FileNotFoundError:
            return BucketState.fresh(self.limits, self.clock()), True
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Ignoring an unreadable ingest pacing file %s: starting it afresh.", self.path)
            return BucketState(tokens=0.0, last=self.clock()), False

    def _write(self, state: BucketState) -> None:
        raw = json.dumps(state.as_json()).encode()
        replace_atomically(self.path, raw, suffix=".pace", recreate_directory=self._recreate_directory)


class Bucket(Protocol):
    """What :class:`LocalBucket` and :class:`FileBucket` share."""

    limits: Limits

    def try_take(self) -> float: ...

    def throttled(self, seconds: float) -> None: ...


class Pace(Protocol):
    """What the transport asks before each attempt of a paced request, and tells after a 429."""

    def before_attempt(self) -> None:
        """Wait (sleeping, no lock held) until the request may be sent."""

    def throttled(self, retry_after: float | None) -> None:
        """m3ter answered 429 (with ``Retry-After`` seconds, or None): slow every caller down."""


def acquire(bucket: Bucket, sleep: Callable[[float], None]) -> float:
    """Take one request from ``bucket``, sleeping (with ``sleep``, no lock held) until it is there;
    return the seconds slept."""
    slept = 0.0
    while True:
        wait = bucket.try_take()
        if wait <= 0:
            return slept
        sleep(wait)
        slept += wait
