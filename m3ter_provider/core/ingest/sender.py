"""Sending spooled bodies to m3ter's ingest API, some in flight at once, and saying what landed."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from typing import TYPE_CHECKING, Any

from m3ter_provider.core._text import plural
from m3ter_provider.core.ingest.pace import ingest_pace, task_pace
from m3ter_provider.errors import M3terIngestError

if TYPE_CHECKING:
    from collections.abc import Callable

    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.ingest.failures import LogSink
    from m3ter_provider.core.ingest.spool import Spool


class Progress:
    """Log long uploads in a few lines: at most one every 10 % or 30 s, and the total at the end."""

    def __init__(self, total: int, logger: LogSink, *, every_seconds: float = 30.0) -> None:
        self.total = total
        self.sent = 0
        self.requests = 0
        self.bytes = 0
        self.log = logger
        self.started = time.monotonic()
        self._next_fraction = 0.1
        self._next_time = self.started + every_seconds
        self._every = every_seconds

    def update(self, count: int, size: int) -> None:
        self.sent += count
        self.requests += 1
        self.bytes += size
        now = time.monotonic()
        if self.sent >= self.total:
            return
        if self.sent / max(self.total, 1) >= self._next_fraction or now >= self._next_time:
            self.log.info(
                "%s of %s measurements sent in %s.",
                f"{self.sent:,}",
                f"{self.total:,}",
                plural(self.requests, "request"),
            )
            while self._next_fraction <= self.sent / max(self.total, 1):
                self._next_fraction += 0.1
            self._next_time = now + self._every

    def done(self) -> None:
        elapsed = time.monotonic() - self.started
        self.log.info(
            "Sent %s to m3ter in %s (%.1f s).",
            plural(self.sent, "measurement"),
            plural(self.requests, "request"),
            elapsed,
        )


def send_spool(
    client: M3terClient,
    spool: Spool,
    *,
    concurrency: int,
    uid_namespace: str,
    log: LogSink,
    max_requests_per_second: float | None = None,
) -> dict[str, Any]:
    """POST every spooled body, ``concurrency`` at a time, at the pace of :mod:`.pace`; stop at the
    first failure.

    :raises M3terIngestError: a request failed after its retries, or anything else went wrong while
        sending (``KeyboardInterrupt`` and other non-``Exception`` exits excepted); it says what
        m3ter accepted and the namespace to resume with.
    """
    url = client.url("measurements", ingest_api=True)
    pace = task_pace(
        client.settings,
        max_requests_per_second=max_requests_per_second,
        directory=client.pace_directory,
        sleep=lambda seconds: client.pace_sleep(seconds),
    )
    if pace is None:
        settings = client.settings
        log.info("%s.", ingest_pace(settings.ingest_rate, settings.ingest_machines, None).describe())
    elif pace.machine is None:
        log.info("%s.", pace.pace.describe())
    elif client.pace_directory:
        log.info("%s (one pace shared by this machine's task processes).", pace.pace.describe())
    else:
        log.info(
            "%s (this process's own pace: set [m3ter] token_cache_dir to share it between the task "
            "processes of a machine, or count each process in ingest_machines).",
            pace.pace.describe(),
        )
    progress = Progress(spool.measurements, log)
    lock = threading.Lock()
    failed = threading.Event()

    def post(index: int) -> None:
        if failed.is_set():
            return
        body = spool.body(index)
        try:
            client.send("POST", url, body=body, idempotent=True, pace=pace)
        except BaseException:
            failed.set()
            raise
        with lock:
            progress.update(spool.count(index), len(body))

    workers = min(concurrency, len(spool))
    if workers <= 1:
        error = _post_in_order(post, len(spool))
    else:
        error = _post_concurrently(client, post, len(spool), workers)
    if pace is not None:
        log.info("%s", pace.summary())
    if error is not None:
        if not isinstance(error, Exception):
            raise error  # KeyboardInterrupt, SystemExit, a task killed by Airflow: not ours to wrap
        # whatever failed underneath (an error of ours, an OSError from the token store, a bug),
        # the caller learns what m3ter accepted and the namespace to resume with
        raise M3terIngestError(
            error,
            accepted_measurements=progress.sent,
            accepted_batches=progress.requests,
            total_measurements=spool.measurements,
            total_batches=len(spool),
            uid_namespace=uid_namespace,
        ) from error
    progress.done()
    return {"measurements": progress.sent, "requests": progress.requests, "bytes": progress.bytes}


def _post_in_order(post: Callable[[int], None], count: int) -> BaseException | None:
    """Post bodies ``0 .. count-1`` one after another; return the first failure (nothing after it is sent)."""
    for index in range(count):
        try:
            post(index)
        except BaseException as exc:
            return exc
    return None


def _post_concurrently(
    client: M3terClient, post: Callable[[int], None], count: int, workers: int
) -> BaseException | None:
    """Post bodies ``0 .. count-1`` from ``workers`` threads; return the first failure (the bodies
    not started yet are cancelled)."""
    try:
        # the token is exchanged (or read from the worker cache) and masked on the calling
        # thread, before any batch thread starts: wrong credentials fail here, once, and no
        # two threads meet a new token together
        client.get_token()
    except BaseException as exc:
        return exc
    error: BaseException | None = None
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="m3ter-ingest") as pool:
        futures = [pool.submit(post, index) for index in range(count)]
        for future in concurrent.futures.as_completed(futures):
            failure = None if future.cancelled() else future.exception()
            if failure is not None and error is None:
                error = failure
                for other in futures:
                    other.cancel()
    return error
