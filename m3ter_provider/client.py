"""A framework-free m3ter API client: authenticated requests, retries, paging and ingest.

:class:`~m3ter_provider.hooks.m3ter.M3terHook` builds one from an Airflow connection; the client
itself imports nothing from Airflow, so it is tested and benchmarked on its own.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import urllib3.exceptions

from m3ter_provider import ingest
from m3ter_provider.auth import (
    TOKEN_CACHE,
    BearerAuth,
    Credentials,
    Token,
    TokenCache,
    credential_hint,
    exchange_once,
    parse_token_response,
    raise_for_token_response,
)
from m3ter_provider.config import M3terSettings
from m3ter_provider.errors import (
    M3terAPIError,
    M3terAuthError,
    M3terConfigError,
    M3terRateLimitError,
    M3terRequestError,
    M3terTransportError,
    m3ter_message,
)

log = logging.getLogger(__name__)

#: statuses worth another try: m3ter was busy or failed on its side
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: statuses after which m3ter did not process the request: a create may be retried safely
UNPROCESSED_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: measurement batches in flight at once by default
DEFAULT_INGEST_CONCURRENCY = 4
#: longest Retry-After honoured, in seconds
MAX_RETRY_AFTER = 300.0


class M3terClient:
    """Talks to one m3ter Organization with one set of Service User credentials.

    :param settings: validated connection settings.
    :param user_agent: the ``User-Agent`` sent with every request.
    :param on_secret: called with the Api Secret and with every new bearer token, so the caller
        can mask them (the hook passes Airflow's ``mask_secret``).
    :param token_cache: the token cache; the process-wide one by default.
    :param backoff_base: seconds of the first retry's backoff ceiling (doubling each retry).
    :param backoff_max: the longest backoff between two retries, in seconds.
    """

    def __init__(
        self,
        settings: M3terSettings,
        *,
        user_agent: str = "airflow-provider-m3ter",
        on_secret: Callable[[str], None] | None = None,
        token_cache: TokenCache = TOKEN_CACHE,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.settings = settings
        self.user_agent = user_agent
        self.credentials = Credentials(
            token_url=settings.token_url,
            access_key_id=settings.access_key_id,
            api_secret=settings.api_secret,
            label=f"the m3ter connection {settings.conn_id!r}",
        )
        self._on_secret = on_secret or (lambda _secret: None)
        self._on_secret(settings.api_secret)
        self._token_cache = token_cache
        self._last_token: Token | None = None
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        #: how retries wait; tests replace it to record the delays instead of sleeping
        self.sleep: Callable[[float], None] = time.sleep
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()
        connect = min(10.0, settings.timeout)
        self.timeout = (connect, settings.timeout)

    def __repr__(self) -> str:
        return f"M3terClient(conn_id={self.settings.conn_id!r}, org_id={self.settings.org_id!r})"

    # ---------------------------------------------------------------- plumbing
    @property
    def session(self) -> requests.Session:
        """One keep-alive ``requests.Session`` per client."""
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    session = requests.Session()
                    session.headers["User-Agent"] = self.user_agent
                    session.headers["Accept"] = "application/json"
                    self._session = session
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def url(self, path: str, *, ingest_api: bool = False) -> str:
        """``"accounts"`` -> ``<API URL>/organizations/<org>/accounts``; ``"/oauth/token"`` -> as given."""
        if "://" in path:
            raise M3terConfigError(
                f"path {path!r} is a full URL: give a path such as 'accounts' (relative to the "
                "Organization) or '/organizations/<org>/accounts'."
            )
        base = self.settings.ingest_url if ingest_api else self.settings.api_url
        if path.startswith("/"):
            return base + path
        return f"{base}/organizations/{quote(self.settings.org_id, safe='')}/{path}"

    # ---------------------------------------------------------------- tokens
    def _token(self) -> Token:
        token = self._token_cache.get(self.credentials, self._exchange)
        if token is not self._last_token:
            self._on_secret(token.value)
            self._last_token = token
        return token

    def get_token(self) -> str:
        """The current bearer token, exchanging the credentials only when needed."""
        return self._token().value

    @property
    def token_exchanges(self) -> int:
        """Successful token exchanges this process made for this client's credentials."""
        return self._token_cache.exchanges(self.credentials)

    def _exchange(self, credentials: Credentials) -> Token:
        response = self.send_with_retries(
            "POST",
            credentials.token_url,
            lambda: exchange_once(self.session, credentials, timeout=self.timeout),
            retry_unprocessed_only=False,
        )
        body = raise_for_token_response(response, credentials)
        now = self._token_cache.clock()
        token = parse_token_response(body, now=now, token_url=credentials.token_url)
        log.info(
            "Obtained an m3ter bearer token for %s (valid %.0f s).", credentials.label, token.expires_at - now
        )
        return token

    # ---------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
        ingest_api: bool = False,
    ) -> Any:
        """Make an authenticated call and return the decoded JSON body (``None`` for an empty one).

        :param method: HTTP method.
        :param path: relative to the Organization (``"accounts"``) or absolute (``"/oauth/token"``).
        :param params: query parameters; lists are sent comma-separated, as m3ter expects.
        :param json: the JSON body.
        :param idempotent: whether a retry after an ambiguous failure is safe. By default GET,
            PUT, DELETE are; a POST is retried only where m3ter did not process it.
        :param ingest_api: send to the ingest URL instead of the API URL.
        """
        body = None if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        response = self.send(
            method, self.url(path, ingest_api=ingest_api), params=params, body=body, idempotent=idempotent
        )
        return decode(response)

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send an authenticated request with retries; raise an :class:`M3terRequestError` on failure."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in IDEMPOTENT_METHODS
        query = _query(params)
        headers = {"Content-Type": "application/json"} if body is not None else None
        refreshed = False
        while True:
            token = self._token()
            response = self.send_with_retries(
                method,
                url,
                lambda token=token: self.session.request(
                    method,
                    url,
                    params=query,
                    data=body,
                    headers=headers,
                    auth=BearerAuth(token),
                    timeout=self.timeout,
                    allow_redirects=False,
                ),
                retry_unprocessed_only=not idempotent,
            )
            if response.status_code in (401, 403) and not refreshed:
                # m3ter answers an expired token with 403: drop it and try once with a fresh one
                log.info(
                    "m3ter refused the cached token for %s %s (HTTP %s); exchanging for a fresh one.",
                    method,
                    url_path(url),
                    response.status_code,
                )
                self._token_cache.invalidate(self.credentials, token)
                refreshed = True
                continue
            if response.ok:
                return response
            raise self._error(method, url, response, refreshed=refreshed)

    def send_with_retries(
        self, method: str, url: str, send: Callable[[], requests.Response], *, retry_unprocessed_only: bool
    ) -> requests.Response:
        max_retries = self.settings.max_retries
        attempt = 0
        while True:
            try:
                response = send()
            except (requests.ConnectionError, requests.Timeout) as exc:
                reason = _transport_reason(exc)
                retry = not retry_unprocessed_only or _never_sent(exc)
                if not retry or attempt >= max_retries:
                    hint = (
                        "m3ter may have processed it: check before re-running."
                        if not retry
                        else f"Check the connection {self.settings.conn_id!r} URLs and your network."
                    )
                    raise M3terTransportError(
                        f"no answer from m3ter ({reason})",
                        method=method,
                        path=url_path(url),
                        hint=hint,
                        attempts=attempt + 1,
                    ) from None
                delay = self._backoff(attempt)
                log.warning(
                    "%s %s: %s; retry %d of %d in %.1f s.",
                    method,
                    url_path(url),
                    reason,
                    attempt + 1,
                    max_retries,
                    delay,
                )
            else:
                status = response.status_code
                retry = status in (UNPROCESSED_STATUSES if retry_unprocessed_only else RETRY_STATUSES)
                if not retry or attempt >= max_retries:
                    response.attempts = attempt + 1  # type: ignore[attr-defined]
                    return response
                retry_after = retry_after_seconds(response.headers)
                delay = retry_after if retry_after is not None else self._backoff(attempt)
                response.close()
                log.warning(
                    "%s %s: m3ter answered HTTP %d; retry %d of %d in %.1f s%s.",
                    method,
                    url_path(url),
                    status,
                    attempt + 1,
                    max_retries,
                    delay,
                    " (Retry-After)" if retry_after is not None else "",
                )
            self.sleep(delay)
            attempt += 1

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.backoff_max, self.backoff_base * (2**attempt)))

    def _error(
        self, method: str, url: str, response: requests.Response, *, refreshed: bool
    ) -> M3terRequestError:
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        attempts = getattr(response, "attempts", 1)
        kwargs = dict(
            method=method,
            path=url_path(url),
            status=status,
            m3ter_message=m3ter_message(body),
            attempts=attempts,
        )
        if status in (401, 403):
            hint = (
                f"The token was refused again after a fresh exchange: check the connection "
                f"{self.settings.conn_id!r} (org_id {self.settings.org_id!r}) and that the Service User "
                "has permission for this call."
            )
            if refreshed:
                return M3terAuthError("m3ter refused the call", hint=hint, **kwargs)
            return M3terAPIError("m3ter refused the call", hint=credential_hint(self.credentials), **kwargs)
        if status == 429:
            return M3terRateLimitError(
                "m3ter kept rate-limiting the call",
                hint="Lower the request rate or raise max_retries.",
                **kwargs,
            )
        if status == 404:
            return M3terAPIError("not found", hint="Check the path and the id in it.", **kwargs)
        return M3terAPIError("m3ter answered with an error", **kwargs)

    # ---------------------------------------------------------------- conveniences
    def paginate(
        self, path: str, *, params: Mapping[str, Any] | None = None, page_size: int | None = None
    ) -> Iterator[Any]:
        """Yield every item of a list endpoint, following ``nextToken``, one page in memory at a time.

        :param page_size: items per page (m3ter's ``pageSize``; each endpoint has its own maximum).
        """
        query = dict(params or {})
        if page_size is not None:
            query["pageSize"] = page_size
        seen_tokens: set[str] = set()
        pages = 0
        while True:
            page = self.request("GET", path, params=query)
            pages += 1
            if not isinstance(page, dict) or not isinstance(page.get("data"), list):
                raise M3terAPIError(
                    "the answer has no 'data' list",
                    method="GET",
                    path=url_path(self.url(path)),
                    hint="paginate() is for m3ter list endpoints, which answer {'data': [...], 'nextToken'}.",
                )
            yield from page["data"]
            next_token = page.get("nextToken")
            if not next_token:
                return
            if next_token in seen_tokens:
                raise M3terAPIError(
                    f"m3ter repeated a nextToken on page {pages}",
                    method="GET",
                    path=url_path(self.url(path)),
                    hint="Paging stopped to avoid a loop.",
                )
            seen_tokens.add(next_token)
            query["nextToken"] = next_token

    def submit_measurements(
        self,
        measurements: Iterable[Mapping[str, Any]] | Any,
        *,
        uid_namespace: str | None = None,
        concurrency: int = DEFAULT_INGEST_CONCURRENCY,
        max_items: int = ingest.MAX_MEASUREMENTS_PER_REQUEST,
        max_bytes: int = ingest.MAX_REQUEST_BYTES,
    ) -> dict[str, Any]:
        """Validate and spool every measurement, then post them in batches within m3ter's limits.

        Nothing is sent unless every measurement is valid; memory stays flat (the encoded batches
        wait in a temporary file). Every measurement sent carries a uid: one without gets a uid
        derived from ``uid_namespace``, its content and its occurrence among identical rows (see
        :mod:`m3ter_provider.ingest`), so retries and re-runs are counted once by m3ter.

        :param measurements: an iterable of dicts, or a JSON Lines / CSV file (``pathlib.Path``,
            ``ObjectStoragePath``, :class:`~m3ter_provider.ingest.MeasurementFile`), read lazily.
        :param uid_namespace: fixes the derived uids across runs; default: a random one per call.
        :param concurrency: batches in flight at once (1 to 10; m3ter allows 50 ingest requests/s
            per Organization, and a 429 is retried).
        :return: ``{"measurements": n, "requests": k, "bytes": b}``.
        :raises M3terIngestError: a request failed part-way; it names what m3ter accepted.
        """
        return ingest.submit(
            self,
            measurements,
            uid_namespace=uid_namespace,
            concurrency=concurrency,
            max_items=max_items,
            max_bytes=max_bytes,
        )

    # ---------------------------------------------------------------- tokens held outside the client
    def invalidate_token(self, value: str) -> None:
        """Drop the cached token if it is ``value``: a caller that sent it itself (the async trigger)
        saw m3ter refuse it. The next :meth:`get_token` exchanges the credentials again."""
        token = self._last_token
        if token is not None and token.value == value:
            self._token_cache.invalidate(self.credentials, token)


def decode(response: requests.Response) -> Any:
    """The JSON body of a response, or ``None`` when it is empty."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """m3ter wants array query parameters (``ids``, ``codes``) comma-separated; booleans lower-case."""
    if not params:
        return None
    query: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        query[key] = value
    return query


def url_path(url: str) -> str:
    """The path of ``url``, for messages (no host, no query)."""
    return urlsplit(url).path or "/"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), capped."""
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _never_sent(exc: BaseException) -> bool:
    """True when the request surely never reached m3ter (connection refused, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)):
            return True
        if isinstance(cause, urllib3.exceptions.MaxRetryError) and cause.reason is not None:
            cause = cause.reason
            continue
        cause = cause.args[0] if cause.args and isinstance(cause.args[0], BaseException) else cause.__cause__
    return False


def _transport_reason(exc: BaseException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.Timeout):
        return "read timeout"
    if _never_sent(exc):
        return "connection refused"
    return "connection dropped"
