"""A framework-free m3ter API client: the Organization's URLs, its token, authenticated calls.

:class:`~m3ter_provider.hooks.m3ter.M3terHook` builds one from an Airflow connection; the client
itself imports nothing from Airflow, so it is tested and benchmarked on its own. The work is split
by job: :mod:`~m3ter_provider.core.transport` sends and checks (one session, the retry loop, what counts
as success), :mod:`~m3ter_provider.core.retry` decides (the one retry policy),
:mod:`~m3ter_provider.core.paging` pages, :mod:`~m3ter_provider.core.tokens.cache` exchanges and
caches tokens and :mod:`~m3ter_provider.core.tokens.client` ties that cache to one client; the client
itself holds the Organization's URLs, authenticated calls and ingest orchestration
(``submit_measurements``).
"""

from __future__ import annotations

import functools
import json as jsonlib
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from m3ter_provider.core import ingest, paging
from m3ter_provider.core.limits import DEFAULT_INGEST_CONCURRENCY
from m3ter_provider.core.retry import RetryPolicy
from m3ter_provider.core.tokens.cache import TOKEN_CACHE, BearerAuth, Credentials, TokenCache
from m3ter_provider.core.tokens.client import ClientTokens
from m3ter_provider.core.transport import Answer, Transport, install_log_redaction, url_path
from m3ter_provider.errors import (
    M3terAPIError,
    M3terAuthError,
    M3terConfigError,
    M3terRateLimitError,
    M3terRequestError,
    m3ter_message,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    import requests

    from m3ter_provider.core.config import M3terSettings
    from m3ter_provider.core.ingest.failures import LogSink
    from m3ter_provider.core.pacing import Pace

log = logging.getLogger(__name__)


class M3terClient:
    """Talks to one m3ter Organization with one set of Service User credentials.

    :param settings: validated connection settings.
    :param user_agent: the ``User-Agent`` sent with every request.
    :param on_secret: called with the Api Secret and with every new bearer token, so the caller
        can mask them (the hook passes Airflow's ``mask_secret``).
    :param token_cache: the token cache; the process-wide one by default.
    :param backoff_base: seconds of the first retry's backoff ceiling (doubling each retry).
    :param backoff_max: the longest backoff between two retries, in seconds.
    :param pace_directory: where the task processes on this machine share their ingest pace (the
        worker token cache directory); None: each process paces on its own.
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
        pace_directory: str | None = None,
    ) -> None:
        self.settings = settings
        self.pace_directory = pace_directory
        self.user_agent = user_agent
        self.credentials = Credentials(
            token_url=settings.token_url,
            access_key_id=settings.access_key_id,
            api_secret=settings.api_secret,
            label=settings.label,
        )
        install_log_redaction()  # presigned URLs' signatures stay out of every log line from here on
        on_secret = on_secret or (lambda _secret: None)
        on_secret(settings.api_secret)
        #: the one retry policy (see :mod:`m3ter_provider.core.retry`)
        self.policy = RetryPolicy(
            max_retries=settings.max_retries, backoff_base=backoff_base, backoff_max=backoff_max
        )
        #: how retries wait; tests replace it to record the delays instead of sleeping
        self.sleep: Callable[[float], None] = time.sleep
        #: how ingest pacing waits (its own: a test that records the retries' delays still counts
        #: only retries, and the pace is still kept)
        self.pace_sleep: Callable[[float], None] = time.sleep
        connect = min(10.0, settings.timeout)
        self.timeout = (connect, settings.timeout)
        self.transport = Transport(
            user_agent=user_agent,
            timeout=self.timeout,
            policy=self.policy,
            sleep=lambda seconds: self.sleep(seconds),
            label=settings.label,
        )
        self.tokens = ClientTokens(self.credentials, token_cache, self.transport, on_secret)

    def __repr__(self) -> str:
        return f"M3terClient(conn_id={self.settings.conn_id!r}, org_id={self.settings.org_id!r})"

    # ---------------------------------------------------------------- plumbing
    @property
    def session(self) -> requests.Session:
        """One keep-alive ``requests.Session`` per client."""
        return self.transport.session

    def close(self) -> None:
        self.transport.close()

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

    # ---------------------------------------------------------------- tokens (see client_tokens.py)
    def get_token(self) -> str:
        """The current bearer token, exchanging the credentials only when needed."""
        return self.tokens.current().value

    @property
    def token_exchanges(self) -> int:
        """Successful token exchanges this process made for this client's credentials."""
        return self.tokens.exchanges

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
        :raises M3terConfigError: ``json`` is not JSON-serialisable or holds NaN or Infinity
            (nothing is sent).
        """
        url = self.url(path, ingest_api=ingest_api)
        body = None if json is None else encode_json(json, method=method.upper(), path=url_path(url))
        return self.send(method, url, params=params, body=body, idempotent=idempotent).body

    def send(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        idempotent: bool | None = None,
        pace: Pace | None = None,
    ) -> Answer:
        """Send an authenticated request with retries; return only a 2xx whose body is JSON or empty
        (its decoded body is :attr:`Answer.body <m3ter_provider.core.transport.Answer.body>`).

        Raises an :class:`M3terRequestError` subclass on any failure: an error status after the
        retries, a redirect or a non-JSON answer (:class:`M3terResponseError`), no usable answer
        (:class:`M3terTransportError`). A 401/403 on a token from the cache drops it and repeats
        the call once with a fresh one; on a token exchanged for this call it is an
        :class:`M3terAuthError` (org id or permissions), without a second exchange.

        :param pace: paces every attempt and hears of each 429 (see :mod:`m3ter_provider.core.ingest.pace`).
        """
        method = method.upper()
        idempotent = self.policy.idempotent(method, idempotent)
        query = _query(params)
        headers = {"Content-Type": "application/json"} if body is not None else None
        refreshed = False
        while True:
            token = self.tokens.current()
            answer = self.transport.call(
                method,
                url,
                functools.partial(
                    self.session.request,
                    method,
                    url,
                    params=query,
                    data=body,
                    headers=headers,
                    auth=BearerAuth(token),
                    timeout=self.timeout,
                    allow_redirects=False,
                ),
                idempotent=idempotent,
                pace=pace,
            )
            response = answer.response
            if response.status_code < 500 and response.status_code not in (401, 403):
                self.tokens.accepted(token)  # m3ter checked the token and let the call through
            # whether m3ter ever accepted the token is asked after the answer: another thread's call
            # (or an earlier attempt of this one) may have proven it while this call was retried
            fresh = self.tokens.is_fresh(token)
            if self.policy.reauthenticate(response.status_code, fresh_token=fresh, refreshed=refreshed):
                # m3ter answers an expired token with 403: drop it and try once with a fresh one
                log.info(
                    "m3ter refused the cached token for %s %s (HTTP %s); exchanging for a fresh one.",
                    method,
                    url_path(url),
                    response.status_code,
                )
                self.tokens.refused(token)
                refreshed = True
                continue
            if 200 <= response.status_code < 300:
                return answer
            raise self._error(method, url, answer)

    def _error(self, method: str, url: str, answer: Answer) -> M3terRequestError:
        response = answer.response
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        attempts = answer.attempts
        content_type = response.headers.get("Content-Type") or "no Content-Type"
        not_json = "" if body is not None or not response.content else f" ({content_type}, not m3ter's JSON)"
        kwargs: dict[str, Any] = dict(
            method=method,
            path=url_path(url),
            status=status,
            m3ter_message=m3ter_message(body),
            attempts=attempts,
        )
        if status in (401, 403):
            hint = (
                f"The Api Secret was accepted and the token is fresh, so this is a permission or "
                f"organization problem: check org_id {self.settings.org_id!r} of {self.settings.label} "
                "and the Service User's permissions for this call."
            )
            return M3terAuthError(f"m3ter refused the call{not_json}", hint=hint, **kwargs)
        if status == 429:
            return M3terRateLimitError(
                "m3ter kept rate-limiting the call",
                hint="Lower the request rate or raise max_retries.",
                **kwargs,
            )
        if status == 404:
            return M3terAPIError(f"not found{not_json}", hint="Check the path and the id in it.", **kwargs)
        return M3terAPIError(f"m3ter answered with an error{not_json}", **kwargs)

    # ---------------------------------------------------------------- conveniences
    def paginate(
        self, path: str, *, params: Mapping[str, Any] | None = None, page_size: int | None = None
    ) -> Iterator[Any]:
        """Yield every item of a list endpoint, following ``nextToken``, one page in memory at a time.

        :param page_size: items per page; by default the endpoint's maximum ``pageSize`` from
            m3ter's spec (see :data:`m3ter_provider.core.paging.MAX_PAGE_SIZES`).
        """
        return paging.paginate(
            lambda query: self.request("GET", path, params=query),
            path,
            url_path(self.url(path)),
            params=params,
            page_size=page_size,
        )

    def submit_measurements(
        self,
        measurements: Iterable[Mapping[str, Any]] | Any,
        *,
        uid_namespace: str | None = None,
        concurrency: int = DEFAULT_INGEST_CONCURRENCY,
        max_items: int = ingest.MAX_MEASUREMENTS_PER_REQUEST,
        max_bytes: int = ingest.MAX_REQUEST_BYTES,
        after_send: Callable[[ingest.Spool], Mapping[str, Any]] | None = None,
        check_ingest_failures: str = "off",
        ingest_failures_wait: float = 60.0,
        logger: LogSink | None = None,
        max_requests_per_second: float | None = None,
    ) -> dict[str, Any]:
        """Validate and spool every measurement, then post them in batches within m3ter's limits.

        Nothing is sent unless every measurement is valid; memory stays flat (the encoded batches
        wait in a temporary file). Every measurement sent carries a uid: one without gets a uid
        derived from ``uid_namespace``, its content and its occurrence among identical rows (see
        :mod:`m3ter_provider.core.ingest`), so retries and re-runs are counted once by m3ter.

        :param measurements: an iterable of dicts, or a JSON Lines / CSV file (``pathlib.Path``,
            ``ObjectStoragePath``, :class:`~m3ter_provider.core.ingest.MeasurementFile`), read lazily.
        :param uid_namespace: fixes the derived uids across runs; default: a random one per call.
        :param concurrency: batches in flight at once (1 to 10; m3ter allows 50 ingest requests/s
            per Organization, and a 429 is retried).
        :param check_ingest_failures: ``"off"`` (default), ``"warn"`` or ``"fail"``: read m3ter's
            ``ingest.validation.failure`` Events for this call's uids once it is sent.
        :param ingest_failures_wait: seconds to keep reading them.
        :param logger: where progress and findings are logged.
        :param max_requests_per_second: this call's most ingest requests per second; it lowers,
            never raises, this machine's share of the connection's ``ingest_rate`` (see
            :mod:`m3ter_provider.core.ingest.pace`).
        :return: ``{"measurements": n, "requests": k, "bytes": b, "rejected": r, "duplicates": d,
            "rejections": [...]}``.
        :raises M3terIngestError: a request failed part-way; it names what m3ter accepted.
        """
        return ingest.submit(
            self,
            measurements,
            uid_namespace=uid_namespace,
            concurrency=concurrency,
            max_items=max_items,
            max_bytes=max_bytes,
            after_send=after_send,
            check_ingest_failures=check_ingest_failures,
            ingest_failures_wait=ingest_failures_wait,
            logger=logger,
            max_requests_per_second=max_requests_per_second,
        )


def encode_json(value: Any, *, method: str, path: str) -> bytes:
    """Compact JSON bytes of a request body; NaN, Infinity and non-JSON values are refused by name."""
    try:
        return jsonlib.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise M3terConfigError(
            f"{method} {path}: the json body cannot be sent as JSON ({exc}). Give dicts, lists, strings, "
            "finite numbers, booleans and None (convert dates, Decimals and sets; drop NaN and Infinity)."
        ) from None


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """m3ter wants array query parameters (``ids``, ``codes``) comma-separated; booleans lower-case.

    :raises M3terConfigError: a value that has no flat query form (a dict, a list holding dicts or
        lists), before anything is sent: requests would send a dict's first key alone.
    """
    if not params:
        return None
    query: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            if any(isinstance(v, (Mapping, list, tuple, set, frozenset)) for v in value):
                raise _nested_param(key, value)
            value = ",".join(str(v) for v in value)
        elif isinstance(value, Mapping):
            raise _nested_param(key, value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        query[key] = value
    return query


def _nested_param(key: Any, value: Any) -> M3terConfigError:
    kind = "dict" if isinstance(value, Mapping) else "list of lists or dicts"
    return M3terConfigError(
        f"query parameter {key!r} is a {kind}: m3ter's query parameters are flat. Give a string, a number, "
        "a bool or a list of those (sent comma-separated), one parameter per key; a structured filter "
        "goes in the JSON body (json=...) of the endpoints that take one."
    )
