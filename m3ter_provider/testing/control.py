"""Observability and fault injection: request statistics and a queue of planned faults."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


class Stats:
    """Counters the tests read through ``emu.stats()`` or ``GET /_emulator/stats``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self.token_exchanges = 0
        self.token_failures = 0
        self.requests_total = 0
        self.requests: dict[str, int] = {}
        self.statuses: dict[str, dict[str, int]] = {}
        self.measurement_requests = 0
        self.measurements_received = 0
        self.max_measurements_per_request = 0
        self.max_request_bytes = 0
        self.authorization_on_download = 0
        self.authorization_on_upload = 0
        self.connections_accepted = 0
        self.rate_limited: dict[str, int] = {}
        self.rate_limited_by: dict[str, int] = {}
        self.clients: dict[str, dict] = {}

    def count_request(self, route_key: str, client: str = "") -> None:
        """Count a request to ``route_key`` ("METHOD /template") from ``client`` (its source IP)."""
        self.requests_total += 1
        self.requests[route_key] = self.requests.get(route_key, 0) + 1
        seen = self.clients.setdefault(client, {"requests": 0, "rate_limited": 0, "routes": {}})
        seen["requests"] += 1
        seen["routes"][route_key] = seen["routes"].get(route_key, 0) + 1

    def count_rate_limited(self, route_key: str, client: str, limit: str) -> None:
        """Count a 429 that limit ``limit`` (e.g. "ingest_per_second") gave ``client`` on ``route_key``."""
        self.rate_limited[route_key] = self.rate_limited.get(route_key, 0) + 1
        self.rate_limited_by[limit] = self.rate_limited_by.get(limit, 0) + 1
        seen = self.clients.setdefault(client, {"requests": 0, "rate_limited": 0, "routes": {}})
        seen["rate_limited"] += 1

    def count_status(self, route_key: str, status: int | str) -> None:
        """Count the answer (an HTTP status, or "dropped") given to ``route_key``."""
        per_route = self.statuses.setdefault(route_key, {})
        per_route[str(status)] = per_route.get(str(status), 0) + 1

    def count_measurement_body(self, size: int, count: int | None) -> None:
        """Record a measurements request body the handler received (accepted or rejected)."""
        self.max_request_bytes = max(self.max_request_bytes, size)
        if count is not None:
            self.max_measurements_per_request = max(self.max_measurements_per_request, count)

    def snapshot(self, **extra: Any) -> dict:
        """A JSON-ready copy of every counter plus ``extra`` values."""
        return {
            "token_exchanges": self.token_exchanges,
            "token_failures": self.token_failures,
            "requests_total": self.requests_total,
            "requests": copy.deepcopy(self.requests),
            "statuses": copy.deepcopy(self.statuses),
            "measurement_requests": self.measurement_requests,
            "measurements_received": self.measurements_received,
            "max_measurements_per_request": self.max_measurements_per_request,
            "max_request_bytes": self.max_request_bytes,
            "authorization_on_download": self.authorization_on_download,
            "authorization_on_upload": self.authorization_on_upload,
            "connections_accepted": self.connections_accepted,
            "rate_limited": copy.deepcopy(self.rate_limited),
            "rate_limited_by": copy.deepcopy(self.rate_limited_by),
            "clients": copy.deepcopy(self.clients),
            **extra,
        }


@dataclass
class Fault:
    """A planned misbehaviour for the next ``times`` calls matching ``route``."""

    route: str
    status: int | None = None
    times: int | None = 1
    retry_after: str | None = None
    delay: float = 0.0
    drop: bool = False
    body: Any = None

    def matches(self, method: str, template: str) -> bool:
        """True when this fault targets ``method template`` (a bare template matches any method)."""
        if " " in self.route:
            return self.route == f"{method} {template}"
        return self.route == template

    def as_dict(self) -> dict:
        """JSON-ready view."""
        return asdict(self)


def make_fault(
    route: object,
    status: object = None,
    times: object = 1,
    retry_after: object = None,
    delay: object = 0.0,
    drop: object = False,
    body: object = None,
) -> Fault:
    """Validate fault arguments (raise ValueError) and build a Fault."""
    if not isinstance(route, str) or not route.strip():
        raise ValueError("route must be 'METHOD /template' or '/template'")
    route = route.strip()
    method, _, template = route.partition(" ")
    if template:
        if method.upper() not in HTTP_METHODS or not template.startswith("/"):
            raise ValueError(f"route {route!r}: expected 'METHOD /template', e.g. 'GET /oauth/token'")
        route = f"{method.upper()} {template}"
    elif not route.startswith("/"):
        raise ValueError(f"route {route!r}: a template must start with '/'")
    if status is not None and (
        isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599
    ):
        raise ValueError("status must be an HTTP status code (100-599) or None")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError("times must be a positive integer (or None for every matching call)")
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
        raise ValueError("delay must be a non-negative number of seconds")
    if not isinstance(drop, bool):
        raise ValueError("drop must be a boolean")
    if status is None and not drop and not delay:
        raise ValueError("a fault needs a status, a delay or drop=True")
    return Fault(
        route=route,
        status=status,
        times=times,
        retry_after=None if retry_after is None else str(retry_after),
        delay=float(delay),
        drop=drop,
        body=body,
    )


class FaultBook:
    """Planned faults, consumed first-added first."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Plan ``fault``."""
        self.faults.append(fault)

    def clear(self) -> int:
        """Forget every planned fault; return how many there were."""
        count = len(self.faults)
        self.faults.clear()
        return count

    def take(self, method: str, template: str) -> Fault | None:
        """Consume one use of the first fault matching the call, if any."""
        for fault in self.faults:
            if fault.matches(method, template):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                return fault
        return None
