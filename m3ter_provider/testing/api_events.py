"""Routes of the Events API and the failed-ingest file download (``ingest.validation.failure``)."""

from __future__ import annotations

import copy
from functools import partial
from typing import TYPE_CHECKING

from .common import ApiError
from .events import EVENT_FIELDS, EVENT_TYPE, EVENT_TYPES, INGEST_FAILURE
from .routing import Request, Response, Router, json_response
from .store import paginate, query_value, query_values

if TYPE_CHECKING:
    from .app import EmulatorApp

ORG = "/organizations/{orgId}"
EVENTS = f"{ORG}/events"
MAX_EVENTS_PAGE = 100
FAILED_INGEST_URL_TTL = 5 * 60
"""The failed-ingest file URL is valid 5 minutes (the spec's description)."""
EVENT_TYPE_NAMES = {EVENT_TYPE: INGEST_FAILURE}  # eventType filter -> eventName of the events it means


def register(router: Router, app: EmulatorApp) -> None:
    """Add the Events routes and the failed-ingest download URL route."""
    router.add("GET", EVENTS, partial(list_events, app))
    router.add("GET", f"{EVENTS}/types", lambda req: json_response({"events": sorted(EVENT_TYPES)}))
    router.add("GET", f"{EVENTS}/fields", list_event_fields)
    router.add("GET", f"{EVENTS}/{{id}}", partial(get_event, app))
    router.add("GET", f"{ORG}/measurements/failedIngest/getDownloadUrl", partial(failed_ingest_url, app))


def list_events(app: EmulatorApp, req: Request) -> Response:
    """``GET /events``: newest first; filters ids, eventName, eventType, accountId, resourceId,
    includeActioned (no event is actioned in the emulator)."""
    ids = set(query_values(req.query, "ids") or ())
    name = query_value(req.query, "eventName")
    event_type = query_value(req.query, "eventType")
    account_id = query_value(req.query, "accountId")
    resource_id = query_value(req.query, "resourceId")
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
        if resource_id is not None and resource_id not in (stored.account_id, event["id"]):
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
        return json_response({"events": copy.deepcopy(EVENT_FIELDS)})
    return json_response({"events": {name: dict(EVENT_FIELDS.get(name, {}))}})


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
