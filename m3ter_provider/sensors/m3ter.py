"""M3terJobSensor: wait for any kind of m3ter job to finish."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowSensorTimeout, BaseSensorOperator, PokeReturnValue

from m3ter_provider.core.jobs import get_kind
from m3ter_provider.core.limits import check_poll_interval, check_timeout
from m3ter_provider.errors import M3terConfigError, M3terJobTimeoutError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.links import M3terConsoleLink, persist_console_link
from m3ter_provider.tasks import M3terHookMixin, default_deferrable, job_from_event

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context


class M3terJobSensor(M3terHookMixin, BaseSensorOperator):
    """Wait until an m3ter job reaches a done state; fail when it reaches a failed state.

    Works in ``poke`` and ``reschedule`` mode, and with ``deferrable=True`` hands the wait to the
    triggerer. The finished job (m3ter's JSON) is the task's XCom result.

    :param kind: the job kind: ``"dataexport"``, ``"billjob"``, ``"statementjob"`` or ``"fileupload"``.
    :param job_id: the job's id, e.g. ``"{{ ti.xcom_pull('export', key='m3ter_job_id') }}"``. (templated)
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param start_from_trigger: start in the triggerer straight away, with no worker slot at all
        (Airflow's ``start_from_trigger``, Airflow 3). ``job_id`` must then be a plain id (no
        template: the trigger gets it as written), e.g. a job started outside Airflow.
    :param m3ter_conn_id: the m3ter connection id.
    """

    template_fields: Sequence[str] = ("job_id",)
    operator_extra_links = (M3terConsoleLink(),)

    def __init__(
        self,
        *,
        kind: str,
        job_id: str,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        deferrable: bool | None = None,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_poll_interval(self.poke_interval, "poke_interval")
        check_timeout(self.timeout)
        self.kind = get_kind(kind).name
        self.job_id = job_id
        self.m3ter_conn_id = m3ter_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.start_from_trigger = bool(start_from_trigger)
        if self.start_from_trigger:
            self.start_trigger_args = self._start_trigger_args()

    def _start_trigger_args(self) -> Any:
        """What Airflow starts the trigger with when the task starts in the triggerer."""
        from airflow.triggers.base import StartTriggerArgs

        from m3ter_provider.tasks import templated

        if templated(self.job_id) or not str(self.job_id or "").strip():
            raise M3terConfigError(
                f"start_from_trigger=True takes a plain job_id, not {self.job_id!r}: the trigger gets it "
                "as written, not rendered. Give the id, or drop start_from_trigger (deferrable=True "
                "still waits in the triggerer, after a moment on a worker)."
            )
        timeout = _seconds(self.timeout)
        return StartTriggerArgs(
            trigger_cls="m3ter_provider.triggers.m3ter.M3terJobTrigger",
            trigger_kwargs={
                "kind": self.kind,
                "job_id": str(self.job_id).strip(),
                "m3ter_conn_id": self.m3ter_conn_id,
                "poll_interval": check_poll_interval(self.poke_interval, "poke_interval"),
            },
            next_method="execute_complete",
            next_kwargs=None,
            timeout=None if timeout is None else timedelta(seconds=timeout),
        )

    def _job_id(self) -> str:
        job_id = str(self.job_id or "").strip()
        if not job_id or job_id == "None":
            raise M3terConfigError(
                f"job_id rendered to {self.job_id!r}: "
                f"point it at the id of an m3ter {get_kind(self.kind).title}."
            )
        return job_id

    def poke(self, context: Context) -> PokeReturnValue | bool:
        job_kind = get_kind(self.kind)
        job_id = self._job_id()
        persist_console_link(context, self.hook.console_url, self.kind, job_id)
        job = self.hook.get_job(job_kind, job_id)
        status = job_kind.status(job)
        outcome = job_kind.outcome(job)
        self.log.info("m3ter %s %s is %s.", job_kind.title, job_id, status)
        if outcome == "failed":
            raise job_kind.failed_error(job_id, job)
        return PokeReturnValue(is_done=True, xcom_value=job) if outcome == "done" else False

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        answer = self.poke(context)
        if isinstance(answer, PokeReturnValue) and answer.is_done:
            return answer.xcom_value
        # the trigger module loads Airflow's trigger base (pydantic): only when deferring
        from m3ter_provider.triggers.m3ter import M3terJobTrigger

        timeout = _seconds(self.timeout)
        self.defer(
            trigger=M3terJobTrigger(
                kind=self.kind,
                job_id=self._job_id(),
                m3ter_conn_id=self.m3ter_conn_id,
                poll_interval=check_poll_interval(self.poke_interval, "poke_interval"),
                end_time=None if timeout is None else time.time() + timeout,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: return the finished job, or fail with the trigger's message."""
        try:
            return job_from_event(event, self.kind, self.job_id)[1]
        except M3terJobTimeoutError as exc:
            raise AirflowSensorTimeout(str(exc)) from None


def _seconds(value: Any) -> float | None:
    """Seconds from a number or a ``timedelta`` (BaseSensorOperator accepts both); None stays None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)
