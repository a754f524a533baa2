"""m3ter's published rate limits, enforced per emulator instance (on by default).

- Config API: 20,000 requests per rolling 5 minutes per source IP, and 50 requests/second per
  Organization.
- Ingest API (``POST /measurements``): 5,000 requests per rolling 5 minutes per source IP, and 50
  requests/second per Organization.
- Usage query (``POST /usage/query``): 2 requests/second with a burst of 20 (a token bucket), on top
  of the Config API limits.
- An 11th concurrent bill job: 429 (the bill job handler asks :meth:`RateLimiter.refuse_bill_job`).

The per-IP limit is a sliding-window log over ``ip_window`` seconds keyed on the client's source
address; "per second per Organization" is a sliding 1-second window (at most N requests in any
second). A refused request uses no quota. Over a limit the answer is 429 ``{"message": ...}`` and,
as m3ter documents none, no ``Retry-After`` unless ``retry_after=True`` asks for one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

CONFIG = "config"
INGEST = "ingest"
INGEST_ROUTE = "POST /organizations/{orgId}/measurements"
USAGE_QUERY_ROUTE = "POST /organizations/{orgId}/usage/query"
ORG_WINDOW = 1.0


@dataclass(frozen=True)
class RateLimits:
    """The limits one emulator enforces; ``None`` (or 0) turns one limit off.

    :param enabled: False turns every limit off (also the concurrent bill job cap).
    :param config_per_ip: Config API requests per source IP per ``ip_window`` seconds.
    :param ingest_per_ip: ingest API requests per source IP per ``ip_window`` seconds.
    :param ip_window: the per-IP rolling window, in seconds (m3ter: 5 minutes).
    :param config_per_second: Config API requests per second for the Organization.
    :param ingest_per_second: ingest API requests per second for the Organization.
    :param usage_query_per_second: usage query token bucket refill rate.
    :param usage_query_burst: usage query token bucket size.
    :param concurrent_bill_jobs: bill jobs that may run at once; creating one more answers 429.
    :param retry_after: send a ``Retry-After`` header (whole seconds) with a limit's 429.
    """

    enabled: bool = True
    config_per_ip: int | None = 20_000
    ingest_per_ip: int | None = 5_000
    ip_window: float = 300.0
    config_per_second: int | None = 50
    ingest_per_second: int | None = 50
    usage_query_per_second: float | None = 2.0
    usage_query_burst: int = 20
    concurrent_bill_jobs: int | None = 10
    retry_after: bool = False

    @classmethod
    def off(cls) -> RateLimits:
        """No limit at all."""
        return cls(enabled=False)

    def updated(self, changes: dict) -> RateLimits:
        """A copy with ``changes`` (field name to value) checked and applied; ValueError names the field."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(
                f"unknown limit(s) {', '.join(unknown)}: expected some of {', '.join(sorted(names))}"
            )
        for name, value in changes.items():
            if name in ("enabled", "retry_after"):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            elif name in ("ip_window", "usage_query_per_second"):
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                ):
                    raise ValueError(f"{name} must be a non-negative number")
                if name == "ip_window" and not value:
                    raise ValueError("ip_window must be a positive number of seconds")
            elif value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a non-negative integer, or null for no limit")
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """JSON-ready view."""
        return asdict(self)


@dataclass(frozen=True)
class Refusal:
    """Why a request is over a limit: the limit's name, the message and seconds until a retry can pass."""

    limit: str
    message: str
    wait: float

    def headers(self, retry_after: bool) -> dict[str, str]:
        """``Retry-After`` when asked for (whole seconds, at least 1)."""
        return {"Retry-After": str(max(1, math.ceil(self.wait)))} if retry_after else {}


class _Window:
    """A sliding-window log: at most ``limit`` events in any ``span`` seconds."""

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def wait(self, now: float, limit: int, span: float) -> float:
        """0 when one more event fits now, else seconds until one does."""
        times = self.times
        while times and times[0] <= now - span:
            times.popleft()
        if len(times) < limit:
            return 0.0
        return times[len(times) - limit] + span - now

    def add(self, now: float) -> None:
        self.times.append(now)


class _Bucket:
    """A token bucket of ``burst`` tokens refilled at ``rate`` per second (starts full)."""

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.at = now

    def wait(self, now: float, rate: float, burst: int) -> float:
        self.tokens = min(float(burst), self.tokens + max(0.0, now - self.at) * rate)
        self.at = now
        if self.tokens >= 1:
            return 0.0
        return math.inf if rate <= 0 else (1 - self.tokens) / rate

    def take(self) -> None:
        self.tokens -= 1


class RateLimiter:
    """Applies :class:`RateLimits` to requests; the caller holds the emulator's lock.

    :param limits: the limits to enforce.
    :param clock: seconds, monotonic (injectable so tests can freeze or step time).
    """

    def __init__(self, limits: RateLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits or RateLimits()
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        """Forget every recorded request (the limits stay)."""
        self._per_ip: dict[tuple[str, str], _Window] = {}
        self._per_org: dict[str, _Window] = {}
        self._usage_query: _Bucket | None = None

    def check(self, route_key: str, client: str) -> Refusal | None:
        """Record one request to ``route_key`` from ``client``, or say which limit refuses it."""
        limits = self.limits
        if not limits.enabled:
            return None
        api = INGEST if route_key == INGEST_ROUTE else CONFIG
        now = self.clock()
        per_ip = limits.ingest_per_ip if api == INGEST else limits.config_per_ip
        per_second = limits.ingest_per_second if api == INGEST else limits.config_per_second
        ip_window = self._per_ip.setdefault((api, client), _Window())
        org_window = self._per_org.setdefault(api, _Window())
        if per_ip:
            wait = ip_window.wait(now, per_ip, limits.ip_window)
            if wait > 0:
                return Refusal(
                    f"{api}_per_ip",
                    f"Too Many Requests: over the {api} API limit of {per_ip} requests per "
                    f"{limits.ip_window:g} seconds from {client}",
                    wait,
                )
        if per_second:
            wait = org_window.wait(now, per_second, ORG_WINDOW)
            if wait > 0:
                return Refusal(
                    f"{api}_per_second",
                    f"Too Many Requests: over the {api} API limit of {per_second} requests per second "
                    "for the Organization",
                    wait,
                )
        bucket = None
        if route_key == USAGE_QUERY_ROUTE and limits.usage_query_per_second and limits.usage_query_burst:
            if self._usage_query is None:
                self._usage_query = _Bucket(limits.usage_query_burst, now)
            bucket = self._usage_query
            wait = bucket.wait(now, limits.usage_query_per_second, limits.usage_query_burst)
            if wait > 0:
                return Refusal(
                    "usage_query",
                    f"Too Many Requests: over the usage query limit of {limits.usage_query_per_second:g} "
                    f"requests per second (burst {limits.usage_query_burst})",
                    wait,
                )
        ip_window.add(now)
        org_window.add(now)
        if bucket is not None:
            bucket.take()
        return None

    def refuse_bill_job(self, active: int, wait: float) -> Refusal | None:
        """A refusal when ``active`` running bill jobs leave no room for one more."""
        cap = self.limits.concurrent_bill_jobs
        if not self.limits.enabled or not cap or active < cap:
            return None
        return Refusal(
            "concurrent_bill_jobs",
            f"Too many BillJobs: {active} are already running (maximum {cap})",
            wait,
        )
