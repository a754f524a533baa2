"""OAuth 2.0 client-credentials tokens for m3ter: exchange, a process-wide cache, single flight.

One cache entry per credential set, keyed by (token URL, access key id, a fingerprint of the
secret), shared by every hook instance and thread in the process. When the token is missing or
about to expire, exactly one thread exchanges; the others wait for its result on a future, never
on a lock held across network I/O (and share its error: wrong credentials cause one refused
exchange, not one per thread). A failed early refresh keeps the current token until it expires; a
forked child starts with no exchange in flight. Processes may share tokens through a
:class:`SharedTokenStore`. No Airflow import.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import requests

from m3ter_provider.core.retry import CREDENTIAL_STATUSES, RETRY_STATUSES
from m3ter_provider.core.transport import Answer, url_path
from m3ter_provider.errors import (
    M3terAPIError,
    M3terAuthError,
    M3terConfigError,
    M3terError,
    M3terTransportError,
    m3ter_message,
)

log = logging.getLogger(__name__)

#: refresh when less than min(REFRESH_AHEAD_MAX, lifetime * REFRESH_AHEAD_FRACTION) remains
REFRESH_AHEAD_MAX = 300.0
REFRESH_AHEAD_FRACTION = 0.5
#: m3ter's token lifetime when it does not say (seconds)
DEFAULT_LIFETIME = 18000.0
#: the longest pause before retrying an early refresh that failed (the current token still valid)
REFRESH_RETRY_MAX = 60.0


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A Service User's credentials and where to exchange them. The secret never shows in a repr."""

    token_url: str
    access_key_id: str
    api_secret: str = dataclasses.field(repr=False)
    #: what to name in errors: which connection to check
    label: str = "the m3ter connection"

    @property
    def cache_key(self) -> tuple[str, str, str]:
        fingerprint = hmac.new(self.api_secret.encode(), self.access_key_id.encode(), hashlib.sha256)
        return (self.token_url, self.access_key_id, fingerprint.hexdigest())

    @property
    def store_key(self) -> str:
        """A hex sha256 over (token URL, access key id, secret fingerprint): names the shared store's
        entry without revealing the key id or the secret."""
        return hashlib.sha256(json.dumps(self.cache_key).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Token:
    """A bearer token and when to stop using it (``time.monotonic()`` seconds)."""

    value: str = dataclasses.field(repr=False)
    expires_at: float
    refresh_at: float


class SharedTokenStore(Protocol):
    """Where task processes on one machine share a token (the hook point for ``token_cache_dir``)."""

    def fetch(
        self, key: str, exchange: Callable[[], tuple[str, float]], *, valid_until: float
    ) -> tuple[str, float]:
        """Return (token value, expiry as ``time.time()`` seconds): a token another process saved
        that is still valid at wall-clock time ``valid_until``, or else run ``exchange()`` under a
        cross-process lock (re-checking the saved token first), save its result and return it.
        ``exchange`` raises :class:`M3terError` subclasses; ``fetch`` lets them propagate."""

    def discard(self, key: str, value: str) -> None:
        """Forget the saved token if it is ``value`` (m3ter refused it)."""


class _Entry:
    """One credential set's token, its in-flight exchange (a future) and its refresh back-off."""

    def __init__(self) -> None:
        self.token: Token | None = None
        #: the exchange under way, if any: threads needing a token wait on it (never on a lock)
        self.inflight: concurrent.futures.Future[Token] | None = None
        #: successful exchanges this process made
        self.exchanges = 0
        #: after an early refresh failed: keep the current token and do not try again before this
        self.retry_at = 0.0
        self.failed_refreshes = 0
        #: seconds before expiry at which the last token was due for refresh
        self.margin = refresh_ahead(DEFAULT_LIFETIME)


ExchangeFn = Callable[[Credentials], Token]


class TokenCache:
    """Tokens per credential set: single-flight exchange, refresh ahead of expiry, fork-safe.

    No lock is held across network I/O. The first thread to find the token missing or stale runs
    the exchange; threads that need a token meanwhile wait on its future and share its answer, a
    refusal included. While a still-valid token is being refreshed, other threads keep using it.
    If an early refresh fails, the current token is kept until it really expires, and the refresh
    is tried again after a back-off. A forked child starts with no exchange in flight.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: seconds, monotonic; tests advance a fake clock instead of sleeping
        self.clock = clock
        #: wall-clock time, for the shared store's expiry times (tests may replace it with the clock)
        self.wall_clock: Callable[[], float] = time.time
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._store: SharedTokenStore | None = None
        _CACHES.add(self)

    def set_shared_store(self, store: SharedTokenStore | None) -> None:
        """Share tokens with other processes through ``store`` (``None``: this process only)."""
        self._store = store

    @property
    def shared_store(self) -> SharedTokenStore | None:
        """The store tokens are shared through with other processes, if any."""
        return self._store

    def _entry(self, credentials: Credentials) -> _Entry:
        key = credentials.cache_key
        entry = self._entries.get(key)
        if entry is None:
            with self._lock:
                entry = self._entries.setdefault(key, _Entry())
        return entry

    def get(self, credentials: Credentials, exchange: ExchangeFn) -> Token:
        """Return a usable token, exchanging the credentials only when none is cached or it is stale.

        :raises M3terError: the exchange failed and no unexpired token is cached.
        """
        entry = self._entry(credentials)
        while True:
            now = self.clock()
            with self._lock:
                token = entry.token
                if (
                    token is not None
                    and now < token.expires_at
                    and (now < token.refresh_at or now < entry.retry_at or entry.inflight is not None)
                ):
                    return token  # fresh; or backing off after a failed refresh; or being refreshed
                future = entry.inflight
                if future is None:
                    future = entry.inflight = concurrent.futures.Future()
                    break  # this thread exchanges
            try:
                return future.result()  # the exchange under way: its token or its refusal
            except Exception:
                raise
            except BaseException:
                if future.done() and not isinstance(future.exception(), Exception):
                    continue  # the exchanging thread was interrupted, not refused: ask again
                raise
        return self._exchange(entry, future, credentials, exchange, token)

    def _exchange(
        self,
        entry: _Entry,
        future: concurrent.futures.Future[Token],
        credentials: Credentials,
        exchange: ExchangeFn,
        current: Token | None,
    ) -> Token:
        """Run the one exchange (no lock held) and hand its outcome to every thread waiting for it."""
        exchanged = False

        def run_exchange() -> Token:
            nonlocal exchanged
            token = exchange(credentials)
            exchanged = True
            return token

        try:
            if self._store is None:
                token = run_exchange()
            else:
                token = self._via_store(entry, credentials, run_exchange)
        except BaseException as exc:
            now = self.clock()
            with self._lock:
                if entry.inflight is future:
                    entry.inflight = None
                kept = current if _still_valid(current, entry, exc, now) else None
                if kept is not None:
                    entry.failed_refreshes += 1
                    wait = min(REFRESH_RETRY_MAX, 2.0**entry.failed_refreshes)
                    entry.retry_at = now + min(wait, (kept.expires_at - now) / 2)
            if kept is None:
                future.set_exception(exc)
                raise
            log.warning(
                "Refreshing the m3ter bearer token for %s failed (%s); the current token is valid for "
                "%.0f s more and stays in use; trying again in %.0f s.",
                credentials.label,
                exc,
                kept.expires_at - now,
                entry.retry_at - now,
            )
            future.set_result(kept)
            return kept
        with self._lock:
            entry.token = token
            entry.margin = token.expires_at - token.refresh_at
            entry.retry_at, entry.failed_refreshes = 0.0, 0
            if exchanged:
                entry.exchanges += 1
            if entry.inflight is future:
                entry.inflight = None
        future.set_result(token)
        return token

    def _via_store(self, entry: _Entry, credentials: Credentials, exchange: Callable[[], Token]) -> Token:
        """Ask the shared store for a token valid past the refresh margin; it exchanges if it has none."""
        assert self._store is not None
        mine: list[Token] = []

        def exchange_for_store() -> tuple[str, float]:
            token = exchange()
            mine.append(token)
            return token.value, self._to_wall(token.expires_at)

        margin = entry.margin
        try:
            value, wall_expiry = self._store.fetch(
                credentials.store_key, exchange_for_store, valid_until=self.wall_clock() + margin
            )
        except M3terError:
            raise  # the exchange's own answer (a refusal, no answer from m3ter)
        except Exception as exc:  # the store itself failed (a file it cannot lock or write)
            log.warning(
                "The shared m3ter token store failed (%s: %s); this process uses its own token.",
                type(exc).__name__,
                exc,
            )
            return mine[0] if mine else exchange()
        if mine and mine[0].value == value:
            return mine[0]
        expires_at = self.clock() + (wall_expiry - self.wall_clock())
        return Token(value=value, expires_at=expires_at, refresh_at=expires_at - margin)

    def _to_wall(self, monotonic: float) -> float:
        return self.wall_clock() + (monotonic - self.clock())

    def invalidate(self, credentials: Credentials, token: Token) -> None:
        """Drop ``token`` if it is still the cached one (a refused token is never used again).

        Never waits for an exchange under way. With a shared store, the store forgets it too, first:
        a thread that finds no token in memory must not read the refused one back from the file.
        """
        store = self._store
        try:
            if store is not None:
                store.discard(credentials.store_key, token.value)
        except Exception as exc:  # a store whose directory or files vanished or were replaced
            log.warning(
                "Could not drop the refused m3ter token from the shared token store (%s: %s); "
                "dropped it in this process and carrying on.",
                type(exc).__name__,
                exc,
            )
        finally:
            # whatever the store did, the refused token is never used again by this process
            entry = self._entry(credentials)
            with self._lock:
                if entry.token is not None and entry.token.value == token.value:
                    entry.token = None
                    entry.retry_at, entry.failed_refreshes = 0.0, 0

    def exchanges(self, credentials: Credentials) -> int:
        """How many successful exchanges this process made for ``credentials``."""
        return self._entry(credentials).exchanges

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _after_fork_in_child(self) -> None:
        """The threads of an exchange under way did not survive the fork: forget it, keep the tokens."""
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry.inflight = None


def _still_valid(current: Token | None, entry: _Entry, exc: BaseException, now: float) -> bool:
    """Whether a failed refresh may leave ``current`` in use: not expired, not refused meanwhile."""
    return (
        current is not None
        and isinstance(exc, Exception)
        and entry.token is current
        and now < current.expires_at
    )


#: every TokenCache, so a forked child can reset them all
_CACHES: weakref.WeakSet[TokenCache] = weakref.WeakSet()


def _reset_caches_in_child() -> None:
    for cache in list(_CACHES):
        cache._after_fork_in_child()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_reset_caches_in_child)


#: the process-wide cache every client shares
TOKEN_CACHE = TokenCache()


def refresh_ahead(lifetime: float) -> float:
    """Seconds before expiry at which a token of ``lifetime`` seconds is refreshed."""
    return min(REFRESH_AHEAD_MAX, lifetime * REFRESH_AHEAD_FRACTION)


def parse_token_response(body: Any, *, now: float, token_url: str) -> Token:
    """Read m3ter's token answer; raise :class:`M3terAuthError` when it is not one."""
    if (
        not isinstance(body, dict)
        or not isinstance(body.get("access_token"), str)
        or not body["access_token"]
    ):
        raise M3terAuthError(
            "the token endpoint answered without an access_token",
            method="POST",
            path=url_path(token_url),
            hint="Check the connection's token_url extra points at m3ter's /oauth/token.",
        )
    try:
        lifetime = float(body.get("expires_in", 18000))
    except (TypeError, ValueError):
        lifetime = 18000.0
    if not math.isfinite(lifetime):  # "nan" or "inf": m3ter's documented 5 hours
        lifetime = 18000.0
    lifetime = max(lifetime, 1.0)
    expires_at = now + lifetime
    return Token(
        value=body["access_token"], expires_at=expires_at, refresh_at=expires_at - refresh_ahead(lifetime)
    )


def credential_hint(credentials: Credentials) -> str:
    return (
        f"Check {credentials.label}: login must be the Service User's Access Key id and password its "
        "Api Secret, and the Service User must still exist in the m3ter Console."
    )


def exchange_once(
    session: requests.Session, credentials: Credentials, *, timeout: float | tuple[float, float]
) -> requests.Response:
    """POST the client-credentials grant once (form body, HTTP Basic auth) and return the raw answer."""
    if not credentials.access_key_id or not credentials.api_secret:
        raise M3terConfigError(f"{credentials.label}: the Access Key id and Api Secret are both required.")
    return session.post(
        credentials.token_url,
        data={"grant_type": "client_credentials"},
        headers={"Accept": "application/json", "Authorization": basic_authorization(credentials)},
        timeout=timeout,
        allow_redirects=False,
    )


def basic_authorization(credentials: Credentials) -> str:
    """The HTTP Basic ``Authorization`` value, in UTF-8 as m3ter's own token example and RFC 7617
    encode it (requests would use Latin-1, and fail on a character outside it)."""
    pair = f"{credentials.access_key_id}:{credentials.api_secret}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def raise_for_token_response(answer: Answer, credentials: Credentials) -> Any:
    """Return the decoded body of a 2xx token answer, else raise by what the status means.

    - 400, 401, 403: :class:`M3terAuthError`, the credentials are wrong (check login and password);
    - 429, 5xx, 408, 425 (what the retries left): :class:`M3terTransportError`, the token endpoint is
      unavailable for now (transient: not a credentials problem);
    - anything else (404, 405...): :class:`M3terAPIError`, the token URL is probably wrong.
    """
    response = answer.response
    status = response.status_code
    body = answer.body
    if body is None and response.content:
        try:
            body = response.json()
        except ValueError:
            body = None
    if 200 <= status < 300:
        return body
    kwargs: dict[str, Any] = dict(
        method="POST",
        path=url_path(credentials.token_url),
        status=status,
        m3ter_message=m3ter_message(body),
        attempts=answer.attempts,
    )
    if status in CREDENTIAL_STATUSES:
        raise M3terAuthError(
            "m3ter refused the client-credentials exchange", hint=credential_hint(credentials), **kwargs
        )
    if status in RETRY_STATUSES or status >= 500:
        raise M3terTransportError(
            "m3ter's token endpoint is unavailable",
            hint="This is transient, not a credentials problem: try again later (the retries ran out).",
            **kwargs,
        )
    raise M3terAPIError(
        "the token endpoint answered with an unexpected status",
        hint=f"Check the token_url of {credentials.label} (default: <API URL>/oauth/token).",
        **kwargs,
    )


class BearerAuth(requests.auth.AuthBase):
    """Attach ``Authorization: Bearer <token>``. Its repr never shows the token."""

    def __init__(self, token: Token) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token.value}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<token hidden>)"
