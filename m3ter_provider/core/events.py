"""New m3ter Events since a watermark, read from ``GET /events`` (framework-free).

m3ter lists Events newest first, pages with ``nextToken``, and has no "since" filter: a reader pages
from the newest until it reaches an Event at or before its watermark. The watermark is the
``eventTime`` of the newest Event already delivered plus the ids delivered at exactly that time
(several Events can share a timestamp), so an Event is delivered once however the polls fall.

Filters are m3ter's own query parameters (``eventName``, ``accountId``, ``resourceId``,
``eventType``, ``notificationCode``, ``includeActioned``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from m3ter_provider.errors import M3terConfigError

log = logging.getLogger(__name__)

EVENTS_PATH = "events"
#: m3ter's largest Events page
MAX_PAGE_SIZE = 100
#: filters ``GET /events`` takes, by the name the trigger and the sensor use
FILTERS = {
    "account_id": "accountId",
    "resource_id": "resourceId",
    "event_type": "eventType",
    "notification_code": "notificationCode",
    "include_actioned": "includeActioned",
}


def parse_time(value: Any, what: str = "eventTime") -> dt.datetime:
    """An aware datetime from an ISO-8601 string (``Z`` or an offset) or a datetime (naive: UTC)."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        try:
            moment = dt.datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            raise M3terConfigError(
                f"{what} {value!r} is not an ISO-8601 date-time: give one like '2026-01-31T12:00:00Z'."
            ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


@dataclasses.dataclass
class Watermark:
    """The newest Event time delivered, and the ids delivered at exactly that time."""

    time: dt.datetime
    ids: frozenset[str] = frozenset()

    @classmethod
    def after(cls, moment: Any) -> Watermark:
        """A starting watermark: Events strictly after ``moment`` (ISO-8601 or a datetime) are new."""
        return cls(parse_time(moment, "start_after") + dt.timedelta(microseconds=1))

    def to_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "ids": sorted(self.ids)}

    @classmethod
    def from_json(cls, value: Any) -> Watermark | None:
        if not isinstance(value, Mapping) or not value.get("time"):
            return None
        return cls(parse_time(value["time"]), frozenset(str(i) for i in value.get("ids") or ()))

    def covers(self, event_time: dt.datetime, event_id: str) -> bool:
        """Whether an Event is at or before the watermark (delivered, or older than the start)."""
        return event_time < self.time or (event_time == self.time and event_id in self.ids)

    def advanced(self, event_time: dt.datetime, event_id: str) -> Watermark:
        if event_time > self.time:
            return Watermark(event_time, frozenset({event_id}))
        if event_time == self.time:
            return Watermark(self.time, self.ids | {event_id})
        return self


def query(event_name: str | None, filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``GET /events`` query parameters from an event name and the filters by their Python names."""
    params: dict[str, Any] = {}
    if event_name:
        params["eventName"] = event_name
    for name, value in (filters or {}).items():
        if name not in FILTERS:
            raise M3terConfigError(f"unknown Events filter {name!r}: use one of {', '.join(FILTERS)}.")
        if value is not None and value != "":
            params[FILTERS[name]] = str(value).lower() if isinstance(value, bool) else value
    return params


def read_new_events(
    client: Any,
    event_name: str | None,
    watermark: Watermark | None,
    *,
    filters: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], Watermark]:
    """The Events newer than ``watermark``, oldest first, and the watermark after them.

    With no watermark (a first poll), nothing is delivered: the newest Event's time becomes the
    watermark (a reader starts from now; give a watermark to start earlier).

    Pages are read from the newest until the watermark, so a backlog costs one request per 100
    Events, once.

    :param client: anything with m3ter's ``paginate(path, params=..., page_size=...)``.
    :return: the new Events oldest first, and the watermark to keep until they are delivered (the
        caller advances it Event by Event with :meth:`Watermark.advanced`).
    """
    params = query(event_name, filters)
    newer: list[tuple[dt.datetime, dict[str, Any]]] = []
    for event in client.paginate(EVENTS_PATH, params=params, page_size=MAX_PAGE_SIZE):
        moment = parse_time(event.get("eventTime"))
        event_id = str(event.get("id"))
        if watermark is None:
            return [], Watermark(moment, frozenset({event_id}))
        if watermark.covers(moment, event_id):
            if moment < watermark.time:
                break  # newest first: everything after this is older still
            continue
        newer.append((moment, event))
    if watermark is None:  # no Event at all yet: start from the beginning of time
        return [], Watermark(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
    newer.reverse()  # m3ter lists newest first: oldest first, Events of one time in the order made
    newer.sort(key=lambda pair: pair[0])
    return [event for _, event in newer], watermark
