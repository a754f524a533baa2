"""``/_emulator/...`` routes: control and observability (no auth) and presigned-style downloads."""

from __future__ import annotations

import copy
from functools import partial
from typing import TYPE_CHECKING

from .common import ApiError
from .control import make_fault
from .routing import Request, Response, Router, json_response

if TYPE_CHECKING:
    from .app import EmulatorApp

SEEDABLE = (
    "accounts",
    "products",
    "meters",
    "aggregations",
    "compoundaggregations",
    "plans",
    "plantemplates",
    "pricings",
    "accountplans",
    "contracts",
    "counters",
    "commitments",
    "plangroups",
    "bills",
    "balances",
    "statementdefinitions",
    "picklists/currency",
    "picklists/transactiontypes",
    "dataexports/destinations",
    "dataexports/schedules",
)


def register(router: Router, app: EmulatorApp) -> None:
    """Add the control routes and the download route."""
    control = partial(router.add, auth=False, counted=False)
    control("GET", "/_emulator/stats", lambda req: json_response(app.snapshot_stats()))
    control("GET", "/_emulator/faults", lambda req: json_response({"faults": app.fault_views()}))
    control("POST", "/_emulator/faults", partial(add_fault, app))
    control("DELETE", "/_emulator/faults", lambda req: json_response({"cleared": app.faults.clear()}))
    control("POST", "/_emulator/expire-tokens", lambda req: json_response({"expired": app.expire_tokens()}))
    control("POST", "/_emulator/reset", partial(reset, app))
    control("GET", "/_emulator/measurements", partial(measurements, app))
    control("POST", "/_emulator/fail-jobs", partial(fail_jobs, app))
    control("POST", "/_emulator/seed", partial(seed, app))
    control("GET", "/_emulator/limits", lambda req: json_response({"limits": app.limiter.limits.as_dict()}))
    control("POST", "/_emulator/limits", partial(set_limits, app))
    control("POST", "/_emulator/events", partial(add_event, app))
    router.add("GET", "/_emulator/downloads/{token}", partial(download, app), auth=False)


def add_fault(app: EmulatorApp, req: Request) -> Response:
    """Plan a fault from a JSON body with the keys of ``M3terEmulator.add_fault``."""
    body = req.json_object()
    allowed = {"route", "status", "times", "retry_after", "delay", "drop", "body"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ApiError(400, f"unknown fault keys: {', '.join(unknown)}")
    try:
        fault = make_fault(**body)
    except (TypeError, ValueError) as error:
        raise ApiError(400, str(error)) from error
    app.faults.add(fault)
    return json_response({"fault": fault.as_dict()})


def set_limits(app: EmulatorApp, req: Request) -> Response:
    """Change some rate limits from a JSON object of :class:`RateLimits` fields (``{"enabled": false}``)."""
    body = req.json_object()
    try:
        app.limiter.limits = app.limiter.limits.updated(body)
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    return json_response({"limits": app.limiter.limits.as_dict()})


def measurements(app: EmulatorApp, req: Request) -> Response:
    """The stored measurements."""
    return json_response({"measurements": app.stored_measurements()})


def reset(app: EmulatorApp, req: Request) -> Response:
    """Clear data, stats, faults and tokens."""
    app.reset()
    return json_response({"reset": True})


def fail_jobs(app: EmulatorApp, req: Request) -> Response:
    """``{"kind": ..., "times": n}``: the next created jobs of that kind fail."""
    body = req.json_object()
    try:
        app.jobs.plan_failures(body.get("kind"), body.get("times", 1))
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    return json_response({"failNext": dict(app.jobs.fail_next)})


def seed(app: EmulatorApp, req: Request) -> Response:
    """``{"collection": ..., "items": [...]}``: create entities directly, without validation."""
    body = req.json_object()
    try:
        created = seed_entities(app, body.get("collection"), body.get("items"))
    except ValueError as error:
        raise ApiError(400, str(error)) from error
    return json_response({"data": created})


def seed_entities(app: EmulatorApp, collection: object, items: object) -> list[dict]:
    """Insert ``items`` into ``collection`` as-is (plus id, version and audit fields)."""
    if collection not in SEEDABLE:
        raise ValueError(f"cannot seed {collection!r}: expected one of {', '.join(SEEDABLE)}")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError("items must be a list of objects")
    with app.lock:
        return [app.store.insert(str(collection), copy.deepcopy(item)) for item in items]


def download(app: EmulatorApp, req: Request) -> Response:
    """Serve a presigned download; a request that carries Authorization is counted (it should not)."""
    if req.header("Authorization") is not None:
        app.stats.authorization_on_download += 1
    stored = app.urls.fetch(req.params["token"])
    return Response(200, stored.content, stored.content_type)


def add_event(app: EmulatorApp, req: Request) -> Response:
    """``{"eventName": ..., "eventData": {...}, "accountId": ...}``: record one Event, as m3ter would."""
    body = req.json_object()
    name = body.get("eventName")
    data = body.get("eventData", {})
    if not isinstance(name, str) or not name or not isinstance(data, dict):
        raise ApiError(400, "give eventName (a string) and eventData (an object)")
    with app.lock:
        event = app.events.record_event(name, data, body.get("accountId"))
    return json_response(event)
