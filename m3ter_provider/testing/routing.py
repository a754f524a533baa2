"""Framework-free request/response objects and a router keyed by m3ter's path templates."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .common import ApiError


@dataclass
class Request:
    """One HTTP request as the handlers see it (``client``: the source IP address)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes = b""
    client: str = ""
    params: dict[str, str] = field(default_factory=dict)
    _parsed: Any = field(default=None, init=False, repr=False)
    _parse_error: ApiError | None = field(default=None, init=False, repr=False)
    _is_parsed: bool = field(default=False, init=False, repr=False)

    def header(self, name: str) -> str | None:
        """A header value, case-insensitively (``http.client.HTTPMessage`` or a plain dict)."""
        getter = getattr(self.headers, "get", None)
        value = getter(name) if getter else None
        if value is None:
            lowered = name.lower()
            value = next((v for k, v in self.headers.items() if k.lower() == lowered), None)
        return value

    def json(self) -> Any:
        """The body parsed as JSON (parsed once, then cached); 400 when it is not JSON."""
        if not self._is_parsed:
            self.parse_body()
        if self._parse_error is not None:
            raise self._parse_error
        return self._parsed

    def parse_body(self) -> None:
        """Parse the JSON body now (the dispatcher does this outside the emulator's lock)."""
        self._is_parsed = True
        if not self.body.strip():
            self._parse_error = ApiError(400, "request body is required")
            return
        try:
            self._parsed = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as error:
            self._parse_error = ApiError(400, f"request body is not valid JSON: {error}")

    def set_json(self, value: Any) -> None:
        """Replace the parsed body (e.g. with the validated copy that drops unknown keys)."""
        self._is_parsed, self._parsed, self._parse_error = True, value, None

    def json_object(self) -> dict:
        """The body as a JSON object; 400 otherwise."""
        body = self.json()
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body


@dataclass
class Response:
    """What the server writes back; ``drop`` closes the connection without writing anything."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response."""
    return Response(status, json.dumps(payload).encode("utf-8"), "application/json", dict(headers or {}))


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """m3ter's error shape: ``{"message": "..."}``."""
    return json_response({"message": message}, status, headers)


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    """A handler bound to ``METHOD /template``.

    :param auth: needs a bearer token (and the configured orgId when the template has one).
    :param counted: counted in the stats and subject to faults (False for /_emulator control routes).
    :param locked: the dispatcher runs the handler under the emulator's lock (False: the handler
        takes the lock itself, only around its reads and writes of shared state).
    """

    method: str
    template: str
    handler: Handler
    auth: bool = True
    counted: bool = True
    locked: bool = True

    @property
    def key(self) -> str:
        """The stats/fault key, e.g. ``GET /organizations/{orgId}/accounts``."""
        return f"{self.method} {self.template}"

    @property
    def segments(self) -> tuple[str, ...]:
        """The template split on '/'."""
        return tuple(self.template.strip("/").split("/"))


class Router:
    """Match a method and path to a Route; literal segments win over ``{param}`` segments."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self,
        method: str,
        template: str,
        handler: Handler,
        *,
        auth: bool = True,
        counted: bool = True,
        locked: bool = True,
    ) -> None:
        """Register a handler."""
        self.routes.append(Route(method, template, handler, auth, counted, locked))

    def resolve(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route and path parameters for a call; ApiError 404/405 when nothing matches."""
        parts = tuple(path.strip("/").split("/"))
        candidates: list[tuple[tuple[int, ...], Route, dict[str, str]]] = []
        for route in self.routes:
            params = _match(route.segments, parts)
            if params is not None:
                rank = tuple(int(seg.startswith("{")) for seg in route.segments)
                candidates.append((rank, route, params))
        if not candidates:
            raise ApiError(404, f"No such resource: {path}")
        candidates.sort(key=lambda c: c[0])
        for _, route, params in candidates:
            if route.method == method:
                return route, params
        allowed = {c[1].method for c in candidates}
        if "GET" in allowed:
            allowed.add("HEAD")  # the server answers HEAD wherever it answers GET
        allowed = sorted(allowed)
        raise ApiError(405, f"Method {method} not allowed on {path}", {"Allow": ", ".join(allowed)})


def _match(template: tuple[str, ...], parts: tuple[str, ...]) -> dict[str, str] | None:
    if len(template) != len(parts):
        return None
    params: dict[str, str] = {}
    for seg, part in zip(template, parts, strict=True):
        if seg.startswith("{") and seg.endswith("}"):
            if not part:
                return None
            params[seg[1:-1]] = unquote(part)  # "abc%23frag" is the id "abc#frag"
        elif seg != part:
            return None
    return params
