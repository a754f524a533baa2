"""M3terEventTrigger: m3ter Events (``GET /events``) as Airflow trigger events, each delivered once.

Used two ways:

- in an ``AssetWatcher`` (event-driven scheduling, Airflow 3): it polls for ever, and each new
  m3ter Event matching ``event_name`` and the filters becomes one trigger event, so one asset event
  and one DAG run;
- by :class:`~m3ter_provider.sensors.events.M3terEventSensor` with ``deferrable=True``: it fires
  once, at the first matching Event.

Exactly once across triggerer restarts: after each delivered Event the trigger stores its watermark
(the newest delivered ``eventTime`` and the ids delivered at that time, see
:mod:`m3ter_provider.core.events`) in the watched asset's state store (Airflow 3.3+, AIP-103), under
a key named by the connection, event name and filters, and a restarted trigger reads it back. The
Event is handed to Airflow before the watermark moves: a triggerer killed in between (a window of
one store write) may deliver that one Event again; none is ever skipped.

Fallback where there is no asset state store (Airflow 3.0 to 3.2, or a trigger not in a watcher):
the watermark lives in the trigger's memory. A restarted trigger starts again from ``start_after``
if given, else from the newest Event at its start: Events made while no triggerer ran are then not
delivered (at most once, never twice), unless ``start_after`` fixes the point to resume from.

Every call to m3ter runs on the job trigger's worker threads (nothing blocks the event loop), one
page request per 100 Events, and at most one poll per ``poll_interval`` (60 s by default, at least
1 s): far under m3ter's 50 requests a second per Organization.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import json
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import TriggerEvent

from m3ter_provider.core.events import FILTERS, Watermark, parse_time, read_new_events
from m3ter_provider.errors import M3terConfigError, M3terError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.triggers.m3ter import REQUEST_TIMEOUT, _executor, is_transient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

# mypy runs against each supported Airflow: the ignores name what one of them lacks
try:  # Airflow 3: the base that AssetWatcher accepts
    from airflow.triggers.base import BaseEventTrigger as _Base  # type: ignore[attr-defined,unused-ignore]
except ImportError:  # Airflow 2.11: no event-driven scheduling; the sensor still defers to it
    from airflow.triggers.base import BaseTrigger as _Base  # type: ignore[assignment,unused-ignore]

#: the shortest pause between two polls
MIN_POLL_INTERVAL = 1.0


def check_event_args(
    event_name: Any, poll_interval: Any, filters: Mapping[str, Any] | None, start_after: Any
) -> None:
    """The trigger's and sensor's arguments: refused before anything is sent, naming the field."""
    if not isinstance(event_name, str) or not event_name.strip():
        raise M3terConfigError(
            "event_name is required: an m3ter Event name such as 'billing.bill.updated' or "
            "'ingest.validation.failure' (GET /events/types lists them)."
        )
    try:
        interval = float(poll_interval)
    except (TypeError, ValueError):
        interval = -1.0
    if not interval >= MIN_POLL_INTERVAL:
        raise M3terConfigError(
            f"poll_interval must be at least {MIN_POLL_INTERVAL:g} second(s), not {poll_interval!r}."
        )
    for name in filters or {}:
        if name not in FILTERS:
            raise M3terConfigError(f"unknown Events filter {name!r}: use one of {', '.join(FILTERS)}.")
    if start_after is not None and not (isinstance(start_after, str) and "{{" in start_after):
        parse_time(start_after, "start_after")


class M3terEventTrigger(_Base):
    """Fire one trigger event per new m3ter Event named ``event_name`` (and matching the filters).

    The event's payload: ``{"status": "success", "event": <m3ter's Event>, "event_id", "event_name",
    "event_time"}``; an error that will not pass (refused credentials, a 4xx) fires
    ``{"status": "error", "message"}`` and ends the trigger.

    :param event_name: m3ter's ``eventName`` (``billing.bill.updated``, ``billing.billjob.updated``,
        ``ingest.validation.failure``...).
    :param m3ter_conn_id: the m3ter connection id.
    :param filters: further ``GET /events`` filters: ``account_id``, ``resource_id``, ``event_type``,
        ``notification_code``, ``include_actioned``.
    :param start_after: deliver Events after this ISO-8601 time (default: those after the trigger's
        first poll). A watermark stored by an earlier run of the same trigger takes precedence.
    :param poll_interval: seconds between two polls (at least 1; default 60).
    :param fire_once: end after the first Event (the sensor); a watcher keeps polling.
    :param max_transient_errors: failed polls in a row (after the client's retries) before giving up.
    """

    def __init__(
        self,
        event_name: str,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        filters: dict[str, Any] | None = None,
        start_after: str | None = None,
        poll_interval: float = 60.0,
        fire_once: bool = False,
        max_transient_errors: int = 10,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_event_args(event_name, poll_interval, filters, start_after)
        self.event_name = event_name
        self.m3ter_conn_id = m3ter_conn_id
        self.filters = dict(filters or {})
        self.start_after = start_after
        self.poll_interval = float(poll_interval)
        self.fire_once = bool(fire_once)
        self.max_transient_errors = int(max_transient_errors)
        self._watermark: Watermark | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "event_name": self.event_name,
                "m3ter_conn_id": self.m3ter_conn_id,
                "filters": self.filters,
                "start_after": self.start_after,
                "poll_interval": self.poll_interval,
                "fire_once": self.fire_once,
                "max_transient_errors": self.max_transient_errors,
            },
        )

    @property
    def state_key(self) -> str:
        """The asset state store key of this trigger's watermark (connection, event name, filters)."""
        identity = json.dumps(
            [self.m3ter_conn_id, self.event_name, self.filters], sort_keys=True, default=str
        )
        return f"m3ter.events.{hashlib.sha256(identity.encode()).hexdigest()[:16]}"

    # ------------------------------------------------------------ the watermark's store
    def _store(self) -> Any:
        store = getattr(self, "asset_state_store", None)
        return None if store is None or self.fire_once else store

    async def _load_watermark(self) -> Watermark | None:
        store = self._store()
        if store is not None:
            try:
                stored = Watermark.from_json(await store.aget(self.state_key))
            except Exception as exc:
                self.log.warning(
                    "Could not read the m3ter Events watermark from the asset state store: %s", exc
                )
            else:
                if stored is not None:
                    self.log.info("Resuming m3ter %s Events after %s.", self.event_name, stored.to_json())
                    return stored
        if self.start_after:
            return Watermark.after(self.start_after)
        return None

    async def _save_watermark(self, watermark: Watermark) -> None:
        self._watermark = watermark
        store = self._store()
        if store is not None:
            await store.aset(self.state_key, watermark.to_json())

    # ------------------------------------------------------------ off the event loop
    #: how the trigger waits between polls (tests replace it)
    _sleep: Any = staticmethod(asyncio.sleep)

    async def _call(self, func: Any, *args: Any) -> Any:
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_executor(), functools.partial(context.run, func, *args))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = M3terHook(m3ter_conn_id=self.m3ter_conn_id)
        try:
            client = await hook.aget_client(request_timeout=REQUEST_TIMEOUT)
            watermark = self._watermark or await self._load_watermark()
        except M3terError as exc:
            yield TriggerEvent({"status": "error", "message": f"m3ter Events {self.event_name}: {exc}"})
            return
        errors_in_row = 0
        while True:
            try:
                events, watermark = await self._call(
                    functools.partial(read_new_events, filters=self.filters),
                    client,
                    self.event_name,
                    watermark,
                )
            except M3terError as exc:
                errors_in_row += 1
                if not is_transient(exc) or errors_in_row > self.max_transient_errors:
                    yield TriggerEvent(
                        {
                            "status": "error",
                            "message": f"Reading m3ter Events {self.event_name} failed: {exc}",
                        }
                    )
                    return
                self.log.warning(
                    "Reading m3ter Events: %s; polling again in %.0f s.", exc, self.poll_interval
                )
            else:
                errors_in_row = 0
                if self._watermark is None:  # the starting point, kept for the next polls
                    await self._save_watermark(watermark)
                for event in events:
                    moment = parse_time(event.get("eventTime"))
                    yield TriggerEvent(
                        {
                            "status": "success",
                            "event": event,
                            "event_id": event.get("id"),
                            "event_name": event.get("eventName"),
                            "event_time": event.get("eventTime"),
                        }
                    )
                    watermark = watermark.advanced(moment, str(event.get("id")))
                    await self._save_watermark(watermark)
                    if self.fire_once:
                        return
            await self._sleep(self.poll_interval)
