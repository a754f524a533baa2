"""Long-running job simulation: statuses advance with elapsed time over ``job_duration`` seconds."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .common import ApiError, new_id, utcnow


@dataclass(frozen=True)
class Timeline:
    """A job kind's status field and values, as the spec's enums spell them."""

    status_field: str
    running: tuple[str, ...]  # in order, each for an equal share of the duration
    done: str
    failed: str
    cancelled: str | None = None
    not_started: str | None = None  # before the timeline starts (file upload: before the PUT)

    @property
    def final(self) -> tuple[str, ...]:
        """Statuses a job never leaves."""
        return tuple(s for s in (self.done, self.failed, self.cancelled) if s)


TIMELINES: dict[str, Timeline] = {
    "dataexport": Timeline("status", ("PENDING", "RUNNING"), "SUCCEEDED", "FAILED"),
    "billjob": Timeline(
        "status", ("PENDING", "INITIALIZING", "RUNNING"), "COMPLETE", "CANCELLED", "CANCELLED"
    ),
    "statementjob": Timeline("statementJobStatus", ("PENDING", "RUNNING"), "COMPLETE", "FAILED", "CANCELLED"),
    "fileupload": Timeline("status", ("running",), "succeeded", "failed", not_started="notUploaded"),
}
JOB_KINDS = tuple(TIMELINES)


@dataclass
class Job:
    """One job of any kind; ``result`` holds what its completion produced."""

    kind: str
    id: str
    seq: int
    request: dict
    created: datetime
    duration: float
    fails: bool
    started: float | None  # monotonic time the timeline started, None while not started
    final: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def timeline(self) -> Timeline:
        """This kind's timeline."""
        return TIMELINES[self.kind]

    def progress(self, now: float) -> float:
        """Fraction of the duration elapsed (inf once due, 0 before the start)."""
        if self.started is None:
            return 0.0
        if self.duration <= 0:
            return math.inf
        return (now - self.started) / self.duration

    def status(self, now: float) -> str:
        """The status a client sees at monotonic time ``now`` (settle due jobs first)."""
        if self.final:
            return self.final
        if self.started is None:
            return self.timeline.not_started or self.timeline.running[0]
        running = self.timeline.running
        index = min(int(self.progress(now) * len(running)), len(running) - 1)
        return running[index]

    @property
    def active(self) -> bool:
        """Not finished yet."""
        return self.final is None


class JobBoard:
    """Every job, failure plans, and settlement of jobs whose time has come."""

    def __init__(
        self,
        job_duration: float,
        on_settle: Callable[[Job], None],
        clock: Callable[[], float] = time.monotonic,
        sequence: Callable[[], int] | None = None,
    ) -> None:
        self.job_duration = float(job_duration)
        self._on_settle = on_settle
        self.clock = clock
        self._next_seq = sequence or itertools.count().__next__
        self.jobs: dict[str, Job] = {}
        self.fail_next: dict[str, int] = {}

    def reset(self) -> None:
        """Forget every job and failure plan."""
        self.jobs.clear()
        self.fail_next.clear()

    def plan_failures(self, kind: str, times: int = 1) -> None:
        """Make the next ``times`` created jobs of ``kind`` end failed (bill jobs: CANCELLED)."""
        if kind not in TIMELINES:
            raise ValueError(f"unknown job kind {kind!r}: expected one of {', '.join(JOB_KINDS)}")
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError("times must be a positive integer")
        self.fail_next[kind] = self.fail_next.get(kind, 0) + times

    def create(self, kind: str, request: dict, *, start: bool = True) -> Job:
        """Register a new job; its timeline starts now unless ``start`` is False."""
        fails = self.fail_next.get(kind, 0) > 0
        if fails:
            self.fail_next[kind] -= 1
        job = Job(
            kind=kind,
            id=new_id(),
            seq=self._next_seq(),
            request=request,
            created=utcnow(),
            duration=max(0.0, float(self.job_duration)),
            fails=fails,
            started=None,
        )
        self.jobs[job.id] = job
        if start:
            self.start(job)
        return job

    def start(self, job: Job) -> None:
        """Start ``job``'s timeline now."""
        job.started = self.clock()
        job.started_at = utcnow()

    def status(self, job: Job) -> str:
        """``job``'s current status."""
        return job.status(self.clock())

    def get(self, kind: str, job_id: str, label: str) -> Job:
        """A job of ``kind`` by id; 404 naming ``label`` when unknown."""
        job = self.jobs.get(job_id)
        if job is None or job.kind != kind:
            raise ApiError(404, f"{label} with id {job_id!r} not found")
        return job

    def of_kind(self, kind: str) -> list[Job]:
        """Jobs of ``kind`` in creation order."""
        return sorted((job for job in self.jobs.values() if job.kind == kind), key=lambda job: job.seq)

    def cancel(self, job: Job) -> None:
        """Cancel an active job; 400 when it already finished or its kind cannot be cancelled."""
        cancelled = job.timeline.cancelled
        if cancelled is None:
            raise ApiError(400, f"a {job.kind} job cannot be cancelled")
        if not job.active:
            raise ApiError(400, f"job {job.id} has already finished with status {job.final}")
        job.final = cancelled
        job.finished_at = utcnow()

    def advance(self) -> None:
        """Settle, in creation order, every active job whose duration has elapsed."""
        now = self.clock()
        for job in sorted(self.jobs.values(), key=lambda j: j.seq):
            if job.active and job.started is not None and job.progress(now) >= 1:
                job.final = job.timeline.failed if job.fails else job.timeline.done
                job.finished_at = utcnow()
                self._on_settle(job)
