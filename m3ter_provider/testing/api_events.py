"""Routes of the Events API and the failed-ingest file download (``ingest.validation.failure``)."""

from __future__ import annotations

import copy
from functools import partial
from typing import TYPE_CHECKING

from .common import ApiError
from .events import EVENT_TYPE_NAMES, event_fields, event_types
from .routing import Request, Response, Router, json_response
from .store import paginate, query_value, query_values

if TYPE_CHECKING:
    from .app import EmulatorApp

ORG = "/organizations/{orgId}"
EVENTS = f"{ORG}/events"
MAX_EVENTS_PAGE = 100
FAILED_INGEST_URL_TTL = 5 * 60
"""The failed-ingest file URL is valid 5 minutes (the spec's description)."""


def register(router: Router, app: EmulatorApp) -> None:
    """Add the Events routes and the failed-ingest download URL route."""
    router.add("GET", EVENTS, partial(list_events, app))
    router.add("GET", f"{EVENTS}/types", lambda req: json_response({"events": event_types()}))
    router.add("GET", f"{EVENTS}/fields", list_event_fields)
    router.add("GET", f"{EVENTS}/{{id}}", partial(get_event, app))
    router.add("GET", f"{ORG}/measurements/failedIngest/getDownloadUrl", partial(failed_ingest_url, app))


def list_events(app: EmulatorApp, req: Request) -> Response:
    """``GET /events``: newest first; filters ids (alone: "cannot be used with other filters", says
    the spec), eventName, eventType, accountId, resourceId (the Bill, job or Account an Event is about),
    notificationId/notificationCode (no Notification fires in the emulator: nothing matches),
    includeActioned (no Event is actioned in the emulator)."""
    ids = set(query_values(req.query, "ids") or ())
    name = query_value(req.query, "eventName")
    event_type = query_value(req.query, "eventType")
    account_id = query_value(req.query, "accountId")
    resource_id = query_value(req.query, "resourceId")
    notification = query_value(req.query, "notificationId") or query_value(req.query, "notificationCode")
    filters = {"eventName": name, "eventType": event_type, "accountId": account_id,
               "resourceId": resource_id, "notification": notification}  # fmt: skip
    others = [key for key, value in filters.items() if value is not None]
    if ids and others:
        raise ApiError(400, f"ids cannot be used with other filters ({', '.join(others)})")
    if notification is not None:
        return json_response(paginate([], req.query, MAX_EVENTS_PAGE))
    rows = []
    for stored in app.events.newest_first():
        event = stored.event
        if ids and event["id"] not in ids:
            continue
        if name is not None and event["eventName"] != name:
            continue
        if event_type is not None and EVENT_TYPE_NAMES.get(event_type) != event["eventName"]:
            continue
        if account_id is not None and stored.account_id != account_id:
            continue
        if resource_id is not None and resource_id not in (
            stored.resource_id,
            stored.account_id,
            event["id"],
        ):
            continue
        rows.append((-stored.seq, event))
    return json_response(paginate(rows, req.query, MAX_EVENTS_PAGE))


def get_event(app: EmulatorApp, req: Request) -> Response:
    """``GET /events/{id}``."""
    stored = app.events.events.get(req.params["id"])
    if stored is None:
        raise ApiError(404, f"Event with id {req.params['id']!r} not found")
    return json_response(copy.deepcopy(stored.event))


def list_event_fields(req: Request) -> Response:
    """``GET /events/fields``: the fields of one Event type (``eventName``) or of all."""
    name = query_value(req.query, "eventName")
    if name is None:
        return json_response({"events": {n: event_fields(n) for n in event_types() if event_fields(n)}})
    return json_response({"events": {name: event_fields(name)}})


def failed_ingest_url(app: EmulatorApp, req: Request) -> Response:
    """``GET /measurements/failedIngest/getDownloadUrl?file=...``: a 5-minute URL for the detail file."""
    file = query_value(req.query, "file")
    if file is None:
        raise ApiError(400, "file: is required (the file path of an ingest.validation.failure Event)")
    stored = app.events.files.get(file)
    if stored is None:
        raise ApiError(404, f"No failed ingest file {file!r}")
    path, _ = app.urls.publish(stored.content, "application/json", ttl=FAILED_INGEST_URL_TTL)
    return json_response({"url": app.absolute(path)})
