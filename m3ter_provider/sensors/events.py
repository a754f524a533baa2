"""M3terEventSensor: wait inside a DAG for an m3ter Event (``GET /events``)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseSensorOperator, PokeReturnValue

from m3ter_provider.errors import M3terError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.sensors.m3ter import _seconds
from m3ter_provider.tasks import M3terHookMixin, default_deferrable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context


class M3terEventSensor(M3terHookMixin, BaseSensorOperator):
    """Wait until m3ter records an Event named ``event_name`` (matching the filters) after a time.

    Works in ``poke`` and ``reschedule`` mode, and with ``deferrable=True`` waits in the triggerer
    (:class:`~m3ter_provider.triggers.events.M3terEventTrigger`, firing once). The task's XCom result
    is the first matching Event (m3ter's JSON), the oldest after ``start_after``.

    :param event_name: m3ter's ``eventName``, e.g. ``billing.bill.updated``. (templated)
    :param filters: ``GET /events`` filters: ``account_id``, ``resource_id``, ``event_type``,
        ``notification_code``, ``include_actioned``. (templated)
    :param start_after: only Events after this ISO-8601 time (default: when the DAG run started,
        so a retry or a reschedule still sees an Event that came meanwhile). (templated)
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``).
    :param start_from_trigger: start in the triggerer straight away, with no worker slot at all
        (Airflow's ``start_from_trigger``). The arguments must then be plain values (no templates),
        and ``start_after`` defaults to the trigger's first poll instead of the DAG run's start.
    :param m3ter_conn_id: the m3ter connection id.
    """

    template_fields: Sequence[str] = ("event_name", "filters", "start_after")

    def __init__(
        self,
        *,
        event_name: str,
        filters: dict[str, Any] | None = None,
        start_after: str | None = None,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        deferrable: bool | None = None,
        start_from_trigger: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from m3ter_provider.triggers.events import MIN_POLL_INTERVAL, check_event_args

        poke = self.poke_interval
        seconds = poke.total_seconds() if isinstance(poke, dt.timedelta) else float(poke)
        check_event_args(event_name, max(seconds, MIN_POLL_INTERVAL), filters, start_after)
        self.event_name = event_name
        self.filters = filters
        self.start_after = start_after
        self.m3ter_conn_id = m3ter_conn_id
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.start_from_trigger = bool(start_from_trigger)
        if self.start_from_trigger:
            self.start_trigger_args = self._start_trigger_args(max(seconds, MIN_POLL_INTERVAL))

    def _start_trigger_args(self, poll_interval: float) -> Any:
        """What Airflow starts the trigger with when the task starts in the triggerer."""
        from airflow.triggers.base import StartTriggerArgs

        from m3ter_provider.errors import M3terConfigError
        from m3ter_provider.tasks import templated

        if templated(self.event_name, self.filters, self.start_after):
            raise M3terConfigError(
                "start_from_trigger=True takes plain values: event_name, filters and start_after are "
                "passed to the trigger as written, not rendered. Drop the template or start_from_trigger."
            )
        timeout = _seconds(self.timeout)
        return StartTriggerArgs(
            trigger_cls="m3ter_provider.triggers.events.M3terEventTrigger",
            trigger_kwargs={
                "event_name": self.event_name,
                "m3ter_conn_id": self.m3ter_conn_id,
                "filters": dict(self.filters or {}),
                "start_after": self.start_after,
                "poll_interval": poll_interval,
                "fire_once": True,
            },
            next_method="execute_complete",
            next_kwargs=None,
            timeout=None if timeout is None else dt.timedelta(seconds=timeout),
        )

    def _since(self, context: Context) -> str:
        from m3ter_provider.core.events import iso, parse_time

        if self.start_after:
            return iso(parse_time(self.start_after, "start_after"))
        dag_run = context.get("dag_run")
        started = getattr(dag_run, "start_date", None) or getattr(dag_run, "run_after", None)
        if started is None:
            started = dt.datetime.now(dt.timezone.utc)
        return iso(parse_time(started))

    def poke(self, context: Context) -> PokeReturnValue | bool:
        from m3ter_provider.core.events import Watermark, read_new_events

        since = self._since(context)
        watermark = Watermark.after(since)
        events, _ = read_new_events(self.hook.client, self.event_name, watermark, filters=self.filters or {})
        self.log.info("%s m3ter %s Event(s) after %s.", len(events), self.event_name, since)
        return PokeReturnValue(is_done=True, xcom_value=events[0]) if events else False

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        answer = self.poke(context)
        if isinstance(answer, PokeReturnValue) and answer.is_done:
            return answer.xcom_value
        from m3ter_provider.triggers.events import M3terEventTrigger

        poke = self.poke_interval
        seconds = poke.total_seconds() if isinstance(poke, dt.timedelta) else float(poke)
        timeout = _seconds(self.timeout)
        self.defer(
            trigger=M3terEventTrigger(
                event_name=self.event_name,
                m3ter_conn_id=self.m3ter_conn_id,
                filters=self.filters or {},
                start_after=self._since(context),
                poll_interval=max(seconds, 1.0),
                fire_once=True,
            ),
            method_name="execute_complete",
            timeout=None if timeout is None else dt.timedelta(seconds=timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: the m3ter Event, or fail with the trigger's message."""
        event = event or {}
        if event.get("status") != "success":
            raise M3terError(
                event.get("message") or f"m3ter Events {self.event_name}: no event from the trigger."
            )
        return event["event"]
