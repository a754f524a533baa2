"""The one retry policy: what is retried, how long to wait, when to re-authenticate.

Pure Python: no HTTP library, no Airflow. The transport (:mod:`m3ter_provider.core.transport`) turns
what happened into a status code or a :class:`Failure` kind and asks this policy what to do;
anything else that talks to m3ter (the trigger runs the hook's calls in a worker thread) goes
through the same transport, so there is one answer everywhere.

- Statuses 429, 500, 502, 503, 504, and 408 and 425, are transient. 408 (Request Timeout), 425
  (Too Early), 429 and 503 mean m3ter did not process the request, so they are retried for every
  method; 500, 502 and 504 only where a repeat is safe (idempotent calls, measurement posts).
- A request that surely never left (connection refused, DNS failure, connect timeout) is retried
  for every method; one that may have reached m3ter (read timeout, dropped connection, cut-off
  body, TLS error mid-way) only where a repeat is safe; a malformed request (bad URL, an untrusted
  certificate) never.
- The wait is ``Retry-After`` when m3ter sends a usable one (seconds or an HTTP date, capped),
  else exponential backoff with full jitter.
- A 401/403 on a call made with a token that m3ter has already accepted (or that came from the
  cache) drops the token and repeats the call once with a fresh one; on a token exchanged for this
  very call it is a permission or org id problem, and no second exchange is made.
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import math
import random
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

#: statuses worth another try: m3ter was busy, throttled us or failed on its side
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: statuses after which m3ter did not process the request: even a create may be repeated
UNPROCESSED_STATUSES = frozenset({408, 425, 429, 503})
#: statuses that mean the bearer token (or what it may do) was refused
AUTH_STATUSES = frozenset({401, 403})
#: token endpoint answers that mean the credentials are wrong (anything transient is retried)
CREDENTIAL_STATUSES = frozenset({400, 401, 403})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: longest Retry-After honoured, in seconds
MAX_RETRY_AFTER = 300.0


class Failure(enum.Enum):
    """What went wrong when no usable answer arrived."""

    #: the request surely never reached m3ter: connection refused, name not resolved, connect timeout
    NOT_SENT = "not sent"
    #: it may have reached m3ter: read timeout, dropped connection, cut-off body, TLS error mid-way
    NO_ANSWER = "no answer"
    #: the request itself is malformed or cannot be made safely: retrying cannot help
    INVALID = "invalid"


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Decides retries for one client.

    :param max_retries: retries after the first attempt (0: try once).
    :param backoff_base: the first retry's backoff ceiling in seconds (doubling each retry).
    :param backoff_max: the largest backoff ceiling, in seconds.
    :param max_retry_after: the longest ``Retry-After`` honoured, in seconds.
    """

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = MAX_RETRY_AFTER
    #: draws the jitter; tests pass a fixed one
    uniform: Callable[[float, float], float] = dataclasses.field(default=random.uniform, repr=False)

    @staticmethod
    def idempotent(method: str, idempotent: bool | None = None) -> bool:
        """Whether a repeat of ``method`` is safe: as given, else by method (GET, PUT, DELETE...)."""
        return method.upper() in IDEMPOTENT_METHODS if idempotent is None else bool(idempotent)

    def retry_status(self, status: int, attempt: int, *, idempotent: bool) -> bool:
        """Whether to try again after answer ``status`` on attempt ``attempt`` (0 is the first)."""
        if attempt >= self.max_retries:
            return False
        return status in (RETRY_STATUSES if idempotent else UNPROCESSED_STATUSES)

    def retry_failure(self, failure: Failure, attempt: int, *, idempotent: bool) -> bool:
        """Whether to try again after ``failure`` on attempt ``attempt`` (0 is the first)."""
        if attempt >= self.max_retries or failure is Failure.INVALID:
            return False
        return failure is Failure.NOT_SENT or idempotent

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** min(attempt, 60)))
        return self.uniform(0.0, ceiling)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``attempt + 1``: Retry-After (capped) when given, else backoff."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after)
        return self.backoff(attempt)

    @staticmethod
    def reauthenticate(status: int, *, fresh_token: bool, refreshed: bool) -> bool:
        """Whether a refused call should drop its token and be repeated once with a fresh one.

        :param fresh_token: the token was exchanged for this very call (m3ter never accepted it).
        :param refreshed: the call was already repeated with a fresh token.
        """
        return status in AUTH_STATUSES and not fresh_token and not refreshed


def retry_after_seconds(headers: Mapping[str, str] | str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped.

    A value that is not a finite, non-negative number of seconds or a date (``nan``, ``inf``,
    ``-5``, garbage) is ignored (``None``: back off instead). A date in the past means now.

    :param headers: the response headers (case-insensitive mapping) or the header's value.
    :param now: the current UNIX time (tests); ``time.time()`` by default.
    """
    value = headers if isinstance(headers, str) or headers is None else headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = max(when.timestamp() - (time.time() if now is None else now), 0.0)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)
