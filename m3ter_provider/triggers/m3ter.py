"""M3terJobTrigger: wait for an m3ter job in the triggerer, so no worker slot is held.

Every call to m3ter runs the hook's synchronous methods on a worker thread, so the trigger shares
the client's one retry policy (what is retryable, back-off, Retry-After, re-authentication after a
refused token) and the process-wide token cache with every task, and nothing that can block (a
token exchange, a retry's back-off sleep, a lock) ever runs on the triggerer's event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import math
import os
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from m3ter_provider.core._text import plural
from m3ter_provider.core.jobs import JobKind, get_kind
from m3ter_provider.core.limits import check_poll_interval
from m3ter_provider.core.retry import RETRY_STATUSES
from m3ter_provider.errors import M3terConfigError, M3terError, M3terRequestError, M3terTransportError
from m3ter_provider.hooks.m3ter import M3terHook

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

T = TypeVar("T")

#: each request a trigger makes waits at most this long for m3ter (the connection's timeout if shorter)
REQUEST_TIMEOUT = 20.0
#: worker threads shared by every m3ter trigger in a triggerer (not the loop's default executor, so
#: a hanging m3ter cannot starve other providers' triggers of threads)
MAX_THREADS = 16

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = concurrent.futures.ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="m3ter-trigger")
    return _pool


def _forget_pool_in_child() -> None:
    """A forked child has none of the pool's threads: start a new pool there when needed."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_pool_in_child)


class _DeadlinePassed(Exception):
    """``end_time`` came while a call to m3ter was still under way (or before it could start)."""


class _Abandoned(BaseException):
    """Raised in a worker thread's retry back-off once the trigger stopped waiting for its call.

    A ``BaseException``, like a thread's interruption: no error handler in the client mistakes it
    for m3ter's answer, and threads waiting for a token exchange it cut short exchange themselves.
    """


def _retry_pause(abandoned: threading.Event, seconds: float) -> None:
    """The client's back-off between retries, on a worker thread: cut short once abandoned."""
    if abandoned.wait(seconds):
        raise _Abandoned


def is_transient(exc: BaseException) -> bool:
    """Whether polling again may succeed after the client gave up on a call: no answer, a rate
    limit or an m3ter-side error (a token endpoint's 503 included). Refusals (401, 403 after a
    fresh token) and 4xx answers are not."""
    if isinstance(exc, M3terTransportError):
        return True
    if isinstance(exc, M3terRequestError) and exc.status is not None:
        return exc.status >= 500 or exc.status in RETRY_STATUSES
    return False


class M3terJobTrigger(BaseTrigger):
    """Poll an m3ter job until it is final, then fire one event.

    The event's payload is ``{"status": "success" | "error", "kind", "job_id", "job_status",
    "message", "job"}``: ``success`` when the job reached a done state, ``error`` when it failed, was
    cancelled, passed ``end_time`` (then ``"timed_out": True``) or could not be read. Each poll is
    one hook call on a worker thread, retried by the client's retry policy; when that gives up on
    an error that may pass (no answer, 429, 5xx, also at the token endpoint) the trigger polls
    again after ``poll_interval``, up to ``max_transient_errors`` times in a row. ``end_time`` is
    honoured even while polls fail or hang: a poll under way when it comes is abandoned.

    :param kind: the job kind: ``"dataexport"``, ``"billjob"``, ``"statementjob"`` or ``"fileupload"``.
    :param job_id: the job's id.
    :param m3ter_conn_id: the m3ter connection id.
    :param poll_interval: seconds between two polls.
    :param end_time: a UNIX timestamp after which the trigger stops waiting (``None``: no limit).
    :param max_transient_errors: failed polls in a row (after the client's retries) before giving up.
    :param cancel_on_kill: cancel the job when a user kills the deferred task (bill and statement
        jobs; Airflow 3.3+ calls ``on_kill`` on triggers).
    """

    def __init__(
        self,
        kind: str,
        job_id: str,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        poll_interval: float = 10.0,
        end_time: float | None = None,
        max_transient_errors: int = 10,
        cancel_on_kill: bool = False,
    ) -> None:
        super().__init__()
        self.kind = get_kind(kind).name
        self.job_id = str(job_id)
        self.m3ter_conn_id = m3ter_conn_id
        self.poll_interval = check_poll_interval(poll_interval)
        if end_time is not None and (
            isinstance(end_time, bool)
            or not isinstance(end_time, (int, float))
            or not math.isfinite(end_time)
        ):
            raise M3terConfigError(f"end_time {end_time!r}: give a UNIX timestamp (a finite number) or None.")
        self.end_time = None if end_time is None else float(end_time)
        self.max_transient_errors = int(max_transient_errors)
        self.cancel_on_kill = bool(cancel_on_kill)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kind": self.kind,
                "job_id": self.job_id,
                "m3ter_conn_id": self.m3ter_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_transient_errors": self.max_transient_errors,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _event(self, status: str, message: str, job: Any = None, **extra: Any) -> TriggerEvent:
        job_kind = get_kind(self.kind)
        return TriggerEvent(
            {
                "status": status,
                "kind": self.kind,
                "job_id": self.job_id,
                "job_status": job_kind.status(job) if isinstance(job, dict) else None,
                "message": message,
                "job": job if isinstance(job, dict) else None,
                **extra,
            }
        )

    # ------------------------------------------------------------ off the event loop
    #: the clock ``end_time`` is read on, and how the trigger waits between polls (tests replace them)
    _clock: Callable[[], float] = staticmethod(time.time)
    _sleep: Callable[[float], Any] = staticmethod(asyncio.sleep)

    def _remaining(self) -> float | None:
        return None if self.end_time is None else self.end_time - self._clock()

    async def _call(
        self, func: Callable[..., T], *args: Any, bounded: bool = True, at_deadline: bool = False
    ) -> T:
        """Run a blocking hook call on a worker thread; give up on it when ``end_time`` comes.

        :param at_deadline: the one poll at ``end_time`` itself: it gets up to ``poll_interval``
            (at most ``REQUEST_TIMEOUT``) seconds of its own.
        """
        remaining = self._remaining() if bounded else None
        if at_deadline and remaining is not None:
            remaining = max(remaining, 0.0) + min(self.poll_interval, REQUEST_TIMEOUT)
        if remaining is not None and remaining <= 0:
            raise _DeadlinePassed
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(_executor(), functools.partial(context.run, func, *args))
        try:
            return await asyncio.wait_for(future, remaining)
        except asyncio.TimeoutError:
            raise _DeadlinePassed from None

    async def _hook(self, abandoned: threading.Event) -> M3terHook:
        hook = M3terHook(m3ter_conn_id=self.m3ter_conn_id)
        remaining = self._remaining()
        try:
            client = await asyncio.wait_for(hook.aget_client(request_timeout=REQUEST_TIMEOUT), remaining)
        except asyncio.TimeoutError:
            raise _DeadlinePassed from None
        client.sleep = functools.partial(_retry_pause, abandoned)
        return hook

    # ------------------------------------------------------------ the trigger
    async def run(self) -> AsyncIterator[TriggerEvent]:
        job_kind = get_kind(self.kind)
        name = f"m3ter {job_kind.title} {self.job_id}"
        job: dict[str, Any] | None = None
        last_error: str | None = None
        #: set when the trigger stops waiting: a worker thread still retrying stops at its next pause
        abandoned = threading.Event()
        try:
            hook = await self._hook(abandoned)
            errors_in_row = 0
            last_status: str | None = None
            at_deadline = False
            while True:
                try:
                    job = await self._call(hook.get_job, job_kind, self.job_id, at_deadline=at_deadline)
                except M3terError as exc:
                    if not is_transient(exc):
                        raise
                    errors_in_row += 1
                    last_error = str(exc)
                    if errors_in_row > self.max_transient_errors:
                        yield self._event(
                            "error",
                            f"Gave up polling {name} after "
                            f"{plural(errors_in_row, 'transient error')} in a row; "
                            f"the last: {exc}",
                            job,
                        )
                        return
                    self.log.warning(
                        "Polling %s: %s; polling again in %.1f s.", name, exc, self.poll_interval
                    )
                else:
                    errors_in_row, last_error = 0, None
                    last_status, final = self._read(job_kind, name, job, last_status)
                    if final is not None:
                        yield final
                        return
                at_deadline = await self._pause(at_deadline)
        except _DeadlinePassed:
            yield self._timed_out(name, job, last_error)
        except M3terError as exc:
            yield self._event("error", f"Polling {name} failed: {exc}", job)
        except Exception as exc:
            yield self._event("error", f"Polling {name} failed: {type(exc).__name__}: {exc}", job)
        finally:
            abandoned.set()

    def _read(
        self, job_kind: JobKind, name: str, job: dict[str, Any], last_status: str | None
    ) -> tuple[str | None, TriggerEvent | None]:
        """Log a status change; return the job's status and, when it is final, the event to send."""
        status = job_kind.status(job)
        if status != last_status:
            self.log.info("%s is %s.", name, status)
        outcome = job_kind.outcome(job)
        if outcome == "done":
            return status, self._event("success", f"{name} finished {status}.", job)
        if outcome == "failed":
            return status, self._event("error", f"{name} ended {status}.", job)
        return status, None

    async def _pause(self, at_deadline: bool) -> bool:
        """Sleep until the next poll; return whether that poll is the last one (at ``end_time``).

        :raises _DeadlinePassed: ``end_time`` has passed (or the poll at it was made).
        """
        remaining = self._remaining()
        if remaining is None:
            await self._sleep(self.poll_interval)
            return False
        if remaining <= 0 or at_deadline:
            raise _DeadlinePassed
        # the last sleep ends at end_time, where one more poll may still find the job final
        await self._sleep(min(self.poll_interval, remaining))
        return remaining <= self.poll_interval

    def _timed_out(self, name: str, job: dict[str, Any] | None, last_error: str | None) -> TriggerEvent:
        status = get_kind(self.kind).status(job) if job is not None else None
        state = f"still {status}" if status else "not known to be final"
        message = f"{name} was {state} when the wait timed out."
        if last_error:
            message += f" The last poll failed: {last_error}"
        return self._event("error", message, job, timed_out=True)

    async def on_kill(self) -> None:
        """Cancel the job when a user kills the deferred task (only with ``cancel_on_kill``)."""
        job_kind = get_kind(self.kind)
        if not self.cancel_on_kill or job_kind.cancel_path is None:
            return
        hook = M3terHook(m3ter_conn_id=self.m3ter_conn_id)
        await hook.aget_client(request_timeout=REQUEST_TIMEOUT)
        self.log.info("Cancelling m3ter %s %s.", job_kind.title, self.job_id)
        await self._call(hook.cancel_job, job_kind, self.job_id, bounded=False)
