"""OAuth 2.0 client-credentials tokens for m3ter: exchange, a process-wide cache, single flight.

One cache entry per credential set, keyed by (token URL, access key id, a fingerprint of the
secret), shared by every hook instance and thread in the process. When the token is missing or
about to expire, exactly one thread exchanges; the others wait for its result (and share its
error: wrong credentials cause one refused exchange, not one per thread). No Airflow import.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from m3ter_provider.errors import M3terAuthError, M3terConfigError, M3terError, m3ter_message

log = logging.getLogger(__name__)

#: refresh when less than min(REFRESH_AHEAD_MAX, lifetime * REFRESH_AHEAD_FRACTION) remains
REFRESH_AHEAD_MAX = 300.0
REFRESH_AHEAD_FRACTION = 0.5


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
        """A hex sha256 over (token URL, access key id, secret fingerprint): names shared token files
        without revealing the key id or the secret."""
        return hashlib.sha256("\0".join(self.cache_key).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Token:
    """A bearer token and when to stop using it (``time.monotonic()`` seconds)."""

    value: str = dataclasses.field(repr=False)
    expires_at: float
    refresh_at: float

    def usable(self, now: float) -> bool:
        return now < self.refresh_at


class _Entry:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.token: Token | None = None
        self.exchanges = 0
        #: bumped by every exchange attempt; a waiter that sees it move knows an exchange ran meanwhile
        self.attempts = 0
        #: the last refused exchange, shared with the threads that waited for it
        self.error: M3terError | None = None


ExchangeFn = Callable[[Credentials], Token]


class SharedTokenStore(Protocol):
    """Tokens shared between processes (``[m3ter] token_cache_dir``; see ``m3ter_provider.token_store``)."""

    def fetch(
        self, key: str, exchange: Callable[[], tuple[str, float]], *, valid_until: float
    ) -> tuple[str, float]:
        """Return (token value, expiry as time.time() seconds): a token another process saved
        that is still valid at wall-clock time `valid_until`, or else run `exchange()` under a
        cross-process lock (re-checking the saved token first), save its result and return it.
        `exchange` raises M3terError subclasses; fetch lets them propagate."""

    def discard(self, key: str, value: str) -> None:
        """Forget the saved token if it is `value` (m3ter refused it)."""


class TokenCache:
    """Tokens per credential set, with single-flight exchange and refresh ahead of expiry."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: seconds, monotonic; tests advance a fake clock instead of sleeping
        self.clock = clock
        self._entries: dict[tuple[str, str, str], _Entry] = {}
        self._entries_lock = threading.Lock()
        self._shared_store: SharedTokenStore | None = None

    def _entry(self, credentials: Credentials) -> _Entry:
        key = credentials.cache_key
        entry = self._entries.get(key)
        if entry is None:
            with self._entries_lock:
                entry = self._entries.setdefault(key, _Entry())
        return entry

    def get(self, credentials: Credentials, exchange: ExchangeFn) -> Token:
        """Return a usable token, exchanging the credentials only when none is cached or it is stale."""
        entry = self._entry(credentials)
        token = entry.token
        if token is not None and token.usable(self.clock()):
            return token
        attempts_seen = entry.attempts
        with entry.lock:
            token = entry.token
            if token is not None and token.usable(self.clock()):
                return token
            if entry.error is not None and entry.attempts != attempts_seen:
                # the exchange this thread waited for was refused: share its answer, don't ask again
                raise entry.error
            entry.attempts += 1
            entry.error = None
            try:
                token = self._obtain(credentials, exchange, entry)
            except M3terError as exc:
                entry.error = exc
                raise
            entry.token, entry.error = token, None
            return token

    def invalidate(self, credentials: Credentials, token: Token) -> None:
        """Drop ``token`` if it is still the cached one (a refused token is never used again)."""
        entry = self._entry(credentials)
        with entry.lock:
            if entry.token is token:
                entry.token = None
        store = self._shared_store
        if store is not None:
            store.discard(credentials.store_key, token.value)

    # -------- shared token store hook point (i9's minimal version; i7b's TokenCache rewrite replaces it)
    def set_shared_store(self, store: SharedTokenStore | None) -> None:
        """Share tokens with other processes through ``store`` (``None``: this process only)."""
        self._shared_store = store

    def _obtain(self, credentials: Credentials, exchange: ExchangeFn, entry: _Entry) -> Token:
        """Exchange (counted in ``entry``), or take another process's token from the shared store."""
        store = self._shared_store
        if store is None:
            token = exchange(credentials)
            entry.exchanges += 1
            return token

        def exchange_wall_clock() -> tuple[str, float]:
            token = exchange(credentials)
            entry.exchanges += 1
            return token.value, time.time() + (token.expires_at - self.clock())

        value, wall_expiry = store.fetch(
            credentials.store_key, exchange_wall_clock, valid_until=time.time() + REFRESH_AHEAD_MAX
        )
        remaining = wall_expiry - time.time()
        expires_at = self.clock() + remaining
        return Token(value=value, expires_at=expires_at, refresh_at=expires_at - refresh_ahead(remaining))

    # -------- end of the shared token store hook point

    def exchanges(self, credentials: Credentials) -> int:
        """How many successful exchanges this process made for ``credentials``."""
        return self._entry(credentials).exchanges

    def clear(self) -> None:
        with self._entries_lock:
            self._entries.clear()


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
            path=_path_of(token_url),
            hint="Check the connection's token_url extra points at m3ter's /oauth/token.",
        )
    try:
        lifetime = float(body.get("expires_in", 18000))
    except (TypeError, ValueError):
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
        auth=(credentials.access_key_id, credentials.api_secret),
        headers={"Accept": "application/json"},
        timeout=timeout,
        allow_redirects=False,
    )


def raise_for_token_response(response: requests.Response, credentials: Credentials) -> Any:
    """Return the decoded body of a 2xx token answer; raise :class:`M3terAuthError` otherwise."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.ok:
        return body
    path = _path_of(credentials.token_url)
    raise M3terAuthError(
        "m3ter refused the client-credentials exchange",
        method="POST",
        path=path,
        status=response.status_code,
        m3ter_message=m3ter_message(body),
        hint=credential_hint(credentials),
    )


def _path_of(url: str) -> str:
    return urlsplit(url).path or "/"


class BearerAuth(requests.auth.AuthBase):
    """Attach ``Authorization: Bearer <token>``. Its repr never shows the token."""

    def __init__(self, token: Token) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token.value}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<token hidden>)"
