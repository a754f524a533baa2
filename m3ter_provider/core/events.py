"""New m3ter Events since a watermark, read from ``GET /events`` (framework-free).

``GET /events`` pages with ``nextToken`` and has no "since" filter. Neither m3ter's OpenAPI spec nor
its docs say in which order it lists Events; the reader relies on none: it stops early (at an Event
before its watermark) only once the listing has shown itself newest first (a strictly older Event
after a newer one, never the reverse), and otherwise reads every page. The watermark is the
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

    A listing that proves newest first (as the emulator's, and m3ter's as far as anyone has seen)
    is read until the watermark, so a backlog costs one request per 100 Events, once; any other
    order is read to its last page.

    :param client: anything with m3ter's ``paginate(path, params=..., page_size=...)``.
    :return: the new Events oldest first, and the watermark to keep until they are delivered (the
        caller advances it Event by Event with :meth:`Watermark.advanced`).
    """
    params = query(event_name, filters)
    order = ListingOrder()
    newer: list[tuple[dt.datetime, dict[str, Any]]] = []
    newest: Watermark | None = None  # on a first poll: the newest Event seen
    for event in client.paginate(EVENTS_PATH, params=params, page_size=MAX_PAGE_SIZE):
        moment = parse_time(event.get("eventTime"))
        event_id = str(event.get("id"))
        order.see(moment)
        if watermark is None:
            newest = (
                Watermark(moment, frozenset({event_id}))
                if newest is None
                else newest.advanced(moment, event_id)
            )
            if order.newest_first and moment < newest.time:
                break  # newest first: the rest is older still
            continue
        if watermark.covers(moment, event_id):
            if order.newest_first and moment < watermark.time:
                break  # newest first: everything after this is older still
            continue
        newer.append((moment, event))
    if watermark is None:  # a first poll: from the newest Event, or from the beginning of time
        return [], newest or Watermark(dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc))
    if not order.oldest_first:
        newer.reverse()  # newest first lists the Events of one time last made first
    newer.sort(key=lambda pair: pair[0])  # stable: Events of one time keep the order made
    return [event for _, event in newer], watermark


class ListingOrder:
    """What the Event times seen so far prove of a listing's order: newest first (a strict decrease,
    never an increase) or oldest first (the reverse); neither until the times show it. A reader may
    stop at an Event older than it needs only once the listing is proven newest first."""

    def __init__(self) -> None:
        self._last: dt.datetime | None = None
        self._decreased = False
        self._increased = False

    def see(self, moment: dt.datetime) -> None:
        if self._last is not None:
            self._decreased |= moment < self._last
            self._increased |= moment > self._last
        self._last = moment

    @property
    def newest_first(self) -> bool:
        return self._decreased and not self._increased

    @property
    def oldest_first(self) -> bool:
        return self._increased and not self._decreased
