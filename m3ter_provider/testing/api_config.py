"""Routes of the token endpoint, the Config API entities and the ingest (measurements) endpoint."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from . import measurements as ingest
from .common import ApiError
from .routing import Request, Response, Router, json_response
from .search import search
from .store import COLLECTIONS

if TYPE_CHECKING:
    from .app import EmulatorApp

ORG = "/organizations/{orgId}"


def register(router: Router, app: EmulatorApp) -> None:
    """Add the token, config-entity, organization and measurements routes."""
    router.add("POST", "/oauth/token", partial(token, app), auth=False)
    for name in ("accounts", "commitments"):
        router.add("GET", f"{ORG}/{name}/search", partial(search_entities, app, name))
    for name in COLLECTIONS:
        router.add("GET", f"{ORG}/{name}", partial(list_entities, app, name))
        router.add("POST", f"{ORG}/{name}", partial(create_entity, app, name))
        router.add("GET", f"{ORG}/{name}/{{id}}", partial(get_entity, app, name))
        router.add("PUT", f"{ORG}/{name}/{{id}}", partial(update_entity, app, name))
        router.add("DELETE", f"{ORG}/{name}/{{id}}", partial(delete_entity, app, name))
    router.add("GET", f"{ORG}/organizationconfig", lambda req: json_response(app.org_config))
    router.add("GET", f"{ORG}/users/me", lambda req: json_response(app.me))
    router.add("POST", f"{ORG}/measurements", partial(submit_measurements, app), locked=False)


def token(app: EmulatorApp, req: Request) -> Response:
    """``POST /oauth/token``: client-credentials exchange."""
    try:
        body = app.tokens.exchange(req.header("Authorization"), req.header("Content-Type") or "", req.body)
    except ApiError:
        app.stats.token_failures += 1
        raise
    app.stats.token_exchanges += 1
    return json_response(body)


def list_entities(app: EmulatorApp, name: str, req: Request) -> Response:
    """``GET`` a collection: one page."""
    return json_response(app.store.list(name, req.query))


def search_entities(app: EmulatorApp, name: str, req: Request) -> Response:
    """``GET /{accounts|commitments}/search``: searchQuery, operator, sortBy/sortOrder, fromDocument."""
    return json_response(search(app.store.all(name), req.query))


def create_entity(app: EmulatorApp, name: str, req: Request) -> Response:
    """``POST`` a collection: create one entity."""
    return json_response(app.store.create(name, req.json()))


def get_entity(app: EmulatorApp, name: str, req: Request) -> Response:
    """``GET`` one entity."""
    return json_response(app.store.get(name, req.params["id"]))


def update_entity(app: EmulatorApp, name: str, req: Request) -> Response:
    """``PUT`` one entity (optimistic ``version`` check)."""
    return json_response(app.store.update(name, req.params["id"], req.json()))


def delete_entity(app: EmulatorApp, name: str, req: Request) -> Response:
    """``DELETE`` one entity; answers the deleted entity."""
    return json_response(app.store.delete(name, req.params["id"]))


def submit_measurements(app: EmulatorApp, req: Request) -> Response:
    """``POST /measurements``: size limit (403), 1..1000 items, per-item validation, uid de-dup.

    Runs without the dispatcher's lock: decoding and validation happen unlocked; the lock is held
    only to count the request and record the batch (uid de-duplication stays exact).
    """
    size = len(req.body)
    try:
        ingest.check_size(req.body)
        items = ingest.decode(req.body)
    except ApiError:
        with app.lock:
            app.stats.measurement_requests += 1
            app.stats.count_measurement_body(size, None)
        raise
    try:
        ingest.validate(items)
    finally:
        with app.lock:
            app.stats.measurement_requests += 1
            app.stats.count_measurement_body(size, len(items))
    with app.lock:
        app.ingest(items, owned=True)
        app.stats.measurements_received += len(items)
    return json_response({"result": "accepted"})
