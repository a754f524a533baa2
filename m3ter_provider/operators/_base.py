"""The base of operators that start an m3ter job, wait for it (or defer) and summarise it (what the
sensor shares with them lives in :mod:`m3ter_provider.tasks`)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import BaseOperator

from m3ter_provider._compat import ResumableJobMixin
from m3ter_provider.core.limits import check_poll_interval, check_timeout
from m3ter_provider.errors import (
    M3terAPIError,
    M3terError,
    M3terJobFailedError,
)
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.hooks.permanent import fails_fast
from m3ter_provider.links import JOB_ID_XCOM_KEY, M3terConsoleLink, persist_console_link
from m3ter_provider.tasks import M3terHookMixin, default_deferrable, job_from_event

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from m3ter_provider.core.jobs import JobKind

log = logging.getLogger(__name__)

#: what get_job_status answers for a job m3ter no longer knows (then a retry starts a new one)
JOB_NOT_FOUND = "NOT_FOUND"
#: what it answers for a finished export whose file m3ter no longer serves (then too)
FILE_EXPIRED = "FILE_EXPIRED"
#: statuses of a stored job a retry must not follow: it starts a new job instead
UNFOLLOWABLE = frozenset({JOB_NOT_FOUND, FILE_EXPIRED})


def _variables() -> Any:
    """Airflow's ``Variable`` (the Task SDK's on Airflow 3, the metadata DB model on 2.x)."""
    from airflow.providers.common.compat.sdk import Variable

    return Variable


class TryRecord:
    """The job a task instance started, kept in an Airflow Variable so that it survives a retry.

    Airflow below 3.3 has no task state store, and clears a task's XCom when a new try starts; an
    Airflow Variable is the store that outlives a try there, on 2.11 and 3.0-3.2 alike. One Variable
    per task instance (``dag_id``, ``task_id``, ``run_id``, ``map_index``, hashed into the key: a
    Variable key holds 250 characters) holds the job id and a fingerprint of the request that
    created it. It is written right after m3ter answered the POST (before anything else can fail),
    read by the next try, and deleted when the task succeeds. A record is followed only by the same
    task instance with the same request: the id came from this task's own POST, so no other job,
    however alike, is ever taken for it.
    """

    PREFIX = "m3ter_provider.job."

    def __init__(self, context: Context, kind: JobKind, request: Any = None) -> None:
        ti = context["ti"]
        self.instance = [ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1)]
        digest = hashlib.sha256(json.dumps(self.instance).encode()).hexdigest()[:40]
        self.key = f"{self.PREFIX}{kind.name}.{digest}"
        self.kind = kind
        self.fingerprint = hashlib.sha256(
            json.dumps(request, sort_keys=True, default=str).encode()
        ).hexdigest()

    def get(self) -> str | None:
        """The id of the job an earlier try of this task instance started with the same request."""
        raw = _variables().get(self.key, None)  # a read that fails fails the try: before any POST
        try:
            record = json.loads(raw) if raw else None
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("instance") != self.instance:
            return None
        job_id = str(record.get("job_id") or "") or None
        if job_id and record.get("request") != self.fingerprint:
            log.warning(
                "An earlier try's m3ter %s %s was started with another request: not followed.",
                self.kind.title,
                job_id,
            )
            return None
        return job_id

    def set(self, job_id: str) -> None:
        """Record the job this try just started (a failure is logged: the job runs already)."""
        value = json.dumps({"job_id": job_id, "instance": self.instance, "request": self.fingerprint})
        dag_id, task_id, run_id, _ = self.instance
        description = (
            f"airflow-provider-m3ter: the m3ter {self.kind.title} of task {task_id!r}, run {run_id!r} "
            f"of DAG {dag_id!r}, for its retries to follow; deleted when the task succeeds."
        )
        try:
            _variables().set(self.key, value, description=description)
        except Exception as exc:  # failing this try now would only make the retry start another job
            log.warning(
                "Could not record m3ter %s %s for a retry to follow (%s): a retry would start another.",
                self.kind.title,
                job_id,
                exc,
            )

    def delete(self) -> None:
        """Forget the job once the task succeeded (a failure is logged)."""
        try:
            _variables().delete(self.key)
        except Exception as exc:
            log.warning("Could not delete Airflow Variable %s (%s).", self.key, exc)


class M3terJobOperatorBase(M3terHookMixin, ResumableJobMixin, BaseOperator):
    """Start one m3ter job, push its id to XCom at once, wait for it (or defer) and return a summary.

    On Airflow 3.3+ the job id is also kept in the task's state store (``ResumableJobMixin``), so a
    retry follows the job this task instance started (still running: wait for it; finished: use
    it) instead of starting another; only a failed job is started afresh. Where the context has no
    task state store (Airflow below 3.3), an operator with ``record_tries`` keeps the id in an
    Airflow Variable instead (:class:`TryRecord`), with the same retry behaviour; without it a
    retry there starts a new job. A retry never adopts a job it did not start, and ``on_kill``
    cancels only the job this task follows.
    """

    job_kind: ClassVar[JobKind]
    #: keep the job id in an Airflow Variable where there is no task state store (Airflow < 3.3)
    record_tries: ClassVar[bool] = False
    external_id_key = JOB_ID_XCOM_KEY
    operator_extra_links = (M3terConsoleLink(),)

    def __init__(
        self,
        *,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        wait_for_completion: bool = True,
        poll_interval: float = 10.0,
        timeout: float | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        poll_interval = check_poll_interval(poll_interval)
        timeout = check_timeout(timeout)
        self.m3ter_conn_id = m3ter_conn_id
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self._reset()

    def _reset(self) -> None:
        self._record: TryRecord | None = None
        self._job_id: str | None = None
        self._final_job: dict[str, Any] | None = None
        self._result: dict[str, Any] | None = None

    # ------------------------------------------------------------ what subclasses define
    def _start_job(self, context: Context) -> str:
        raise NotImplementedError

    def _summary(self, context: Context, job_id: str, job: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _request(self) -> Any:
        """What the job is started with: a retry follows a recorded job only for the same request."""
        return None

    # ------------------------------------------------------------ ResumableJobMixin
    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        self._reset()
        record = self._try_record(context)
        if record is None:
            return self.execute_resumable(context)
        self._record = record
        result = self._execute_recorded(context, record)
        record.delete()
        return result

    def _try_record(self, context: Context) -> TryRecord | None:
        """The Variable record where this operator keeps one and Airflow has no task state store."""
        if not self.record_tries or context.get("task_state_store") is not None:
            return None
        return TryRecord(context, self.job_kind, self._request())

    def _execute_recorded(self, context: Context, record: TryRecord) -> dict[str, Any]:
        """``execute_resumable``'s decision, with the job id read from the Variable record."""
        job_id = record.get()
        if job_id:
            status = self.get_job_status(job_id, context)
            if self.is_job_active(status):
                self.log.info("Reconnecting to m3ter %s %s (%s).", self.job_kind.title, job_id, status)
                return self.poll_until_complete(job_id, context)
            if self.is_job_succeeded(status):
                self.log.info("m3ter %s %s finished already: not started again.", self.job_kind.title, job_id)
                return self.get_job_result(job_id, context)
            self.log.warning("m3ter %s %s ended %s: starting a new one.", self.job_kind.title, job_id, status)
        job_id = self.submit_job(context)
        self.poll_until_complete(job_id, context)
        return self.get_job_result(job_id, context)

    def submit_job(self, context: Context) -> str:
        job_id = self._start_job(context)
        if self._record is not None:
            self._record.set(job_id)
        self._follow(context, job_id)
        return job_id

    def get_job_status(self, external_id: Any, context: Context) -> str:
        try:
            job = self.hook.get_job(self.job_kind, str(external_id))
        except M3terAPIError as exc:
            if exc.status == 404:
                self.log.warning("m3ter no longer knows %s %s.", self.job_kind.title, external_id)
                return JOB_NOT_FOUND
            raise
        status = self.job_kind.status(job) or ""
        if self.job_kind.outcome(job) != "failed":
            self._follow(context, str(external_id))
            self._final_job = job if self.job_kind.outcome(job) == "done" else None
        return status

    def is_job_active(self, status: str) -> bool:
        return status not in UNFOLLOWABLE and self._outcome(status) == "running"

    def is_job_succeeded(self, status: str) -> bool:
        return status not in UNFOLLOWABLE and self._outcome(status) == "done"

    def poll_until_complete(self, external_id: Any, context: Context) -> dict[str, Any]:
        job_id = str(external_id)
        if self.wait_for_completion and self._final_job is None:
            if self.deferrable:
                job = self.hook.get_job(self.job_kind, job_id)
                outcome = self.job_kind.outcome(job)
                if outcome == "running":
                    # the trigger module loads Airflow's trigger base (pydantic): only when deferring
                    from m3ter_provider.triggers.m3ter import M3terJobTrigger

                    self.log.info(
                        "Deferring: the triggerer waits for m3ter %s %s.", self.job_kind.title, job_id
                    )
                    self.defer(
                        trigger=M3terJobTrigger(
                            kind=self.job_kind.name,
                            job_id=job_id,
                            m3ter_conn_id=self.m3ter_conn_id,
                            poll_interval=self.poll_interval,
                            end_time=None if self.timeout is None else time.time() + self.timeout,
                            cancel_on_kill=self.job_kind.cancel_path is not None,
                        ),
                        method_name="execute_complete",
                    )
                if outcome == "failed":
                    raise self._failed(
                        job_id,
                        self.job_kind.status(job),
                        f"m3ter {self.job_kind.title} {job_id} ended {self.job_kind.status(job)}.",
                    )
                self._final_job = job
            else:
                try:
                    self._final_job = self.hook.wait_for_job(
                        self.job_kind, job_id, poll_interval=self.poll_interval, timeout=self.timeout
                    )
                except M3terJobFailedError as exc:
                    raise self._failed(job_id, exc.status, str(exc)) from None
        # Also the task's result when the mixin reconnects to a job a previous try started.
        return self.get_job_result(job_id, context)

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        if self._result is None:
            job_id = str(external_id)
            job = self._final_job if self._final_job is not None else self.hook.get_job(self.job_kind, job_id)
            self._result = self._summary(context, job_id, job)
        return self._result

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger fired: fail with its message, or finish like the sync path."""
        self._reset()
        try:
            job_id, job = job_from_event(event, self.job_kind)
        except M3terJobFailedError as exc:
            raise self._failed(exc.job_id, exc.status, str(exc)) from None
        self._job_id = job_id
        self._final_job = job
        result = self.get_job_result(job_id, context)
        record = self._try_record(context)
        if record is not None:
            record.delete()
        return result

    def on_kill(self) -> None:
        """Cancel the job this task is following, where m3ter can cancel its kind (bill jobs)."""
        if self._job_id and self.job_kind.cancel_path is not None and self._final_job is None:
            self.log.info("Cancelling m3ter %s %s.", self.job_kind.title, self._job_id)
            try:
                self.hook.cancel_job(self.job_kind, self._job_id)
            except M3terError as exc:
                self.log.warning("Could not cancel m3ter %s %s: %s", self.job_kind.title, self._job_id, exc)

    # ------------------------------------------------------------ helpers
    def _outcome(self, status: str) -> str:
        return self.job_kind.outcome({self.job_kind.status_field: status})

    def _follow(self, context: Context, job_id: str) -> None:
        """Remember the job and push its id and Console link to XCom as soon as it is known."""
        if self._job_id == job_id:
            return
        self._job_id = job_id
        context["ti"].xcom_push(key=JOB_ID_XCOM_KEY, value=job_id)
        persist_console_link(context, self.hook.console_url, self.job_kind.name, job_id)
        self.log.info("Following m3ter %s %s.", self.job_kind.title, job_id)

    def _failed(self, job_id: str, status: Any, message: str) -> M3terJobFailedError:
        return M3terJobFailedError(
            f"{message} Look the job up in the m3ter Console ({self.hook.console_url}).",
            kind=self.job_kind.name,
            job_id=job_id,
            status=None if status is None else str(status),
        )
