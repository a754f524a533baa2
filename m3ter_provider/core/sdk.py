"""The official m3ter SDK (``m3ter.M3ter``), wired to this provider's token cache (optional extra ``sdk``).

``M3terHook.get_sdk_client()`` calls :func:`sdk_client`. The SDK's typed endpoints then send the
provider's cached bearer token: no exchange per call, one per credential set per process (or per
worker, with ``[m3ter] token_cache_dir``).

Why a subclass: ``m3ter.M3ter`` (0.9.0) takes a pre-fetched ``token`` and ``token_expiry``, but no
way to *renew* one. Once that token nears its expiry the SDK exchanges on its own, and stores the new
token's expiry as ``datetime.fromtimestamp(expires_in - 300)`` (a date in 1970), so from then on it
exchanges before every request. The subclass overrides two extension points the SDK's base client
provides for this: ``_prepare_options`` ("hook for mutating the given options", run before each
attempt; the SDK's own exchange lives there) takes the provider's current token instead, and
``custom_auth`` (an ``httpx.Auth``) answers a 401/403 by dropping the refused token and retrying
once with a fresh one, as the hook does. ``_prepare_request`` sends measurements to the connection's
ingest URL (the SDK would send them to the API URL once a ``base_url`` is given). The SDK is not
handed the Api Secret: it never needs it.

Framework-free: no Airflow import. ``m3ter`` and ``httpx`` are imported when a client is built.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from m3ter_provider.errors import M3terConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    import httpx
    import m3ter
    from m3ter._models import FinalRequestOptions  # the type _prepare_options takes (0.9.x)

    from m3ter_provider.core.client import M3terClient

INSTALL_HINT = "pip install 'm3ter>=0.9.0,<0.10' (the provider's sdk extra)"


def sdk_client(client: M3terClient) -> m3ter.M3ter:
    """An ``m3ter.M3ter`` that uses ``client``'s settings (URLs, timeout, retries) and cached token."""
    cls = _client_class()
    import httpx

    settings = client.settings
    return cls(
        provider_client=client,
        api_key=settings.access_key_id,
        api_secret="",  # never used: the token comes from the provider's cache
        org_id=settings.org_id,
        base_url=settings.api_url,
        timeout=httpx.Timeout(settings.timeout, connect=min(10.0, settings.timeout)),
        max_retries=settings.max_retries,
        default_headers={"User-Agent": f"{client.user_agent} m3ter-sdk"},
    )


#: the SDK's private extension points :class:`ProviderTokenM3ter` overrides (``m3ter`` 0.9.x; the
#: ``sdk`` extra pins ``<0.10`` and tests/core/test_sdk_shape.py checks them on the installed SDK)
OVERRIDDEN = ("_prepare_options", "_prepare_request", "custom_auth", "copy", "with_options")


@functools.cache
def _client_class() -> Callable[..., m3ter.M3ter]:
    """``m3ter.M3ter``'s subclass on the provider's token cache (built once, on first use)."""
    _require_sdk()
    return _provider_class(_refresh_on_refusal_class())


def _require_sdk() -> None:
    """Raise a :class:`M3terConfigError` saying how to install the SDK when it is missing."""
    try:
        import httpx  # noqa: F401
        import m3ter  # noqa: F401
    except ImportError:
        raise M3terConfigError(
            f"get_sdk_client() needs the official m3ter SDK, which is not installed: {INSTALL_HINT}"
        ) from None


def _refresh_on_refusal_class() -> type[httpx.Auth]:
    import httpx

    class _RefreshOnRefusal(httpx.Auth):
        """Send the provider's token; on 401/403 drop it and retry once with a fresh one."""

        def __init__(self, client: M3terClient) -> None:
            self._client = client

        def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
            sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
            response = yield request
            if response.status_code in (401, 403) and sent:
                tokens = self._client.tokens
                token = tokens.current()
                if token.value == sent:  # still the cached one: drop it and exchange once
                    tokens.refused(token)
                    token = tokens.current()
                request.headers["Authorization"] = f"Bearer {token.value}"
                yield request

        def __repr__(self) -> str:
            return "_RefreshOnRefusal(<token hidden>)"

    return _RefreshOnRefusal


def _provider_class(auth_class: Callable[[M3terClient], httpx.Auth]) -> Callable[..., m3ter.M3ter]:
    import httpx
    import m3ter

    class ProviderTokenM3ter(m3ter.M3ter):
        """``m3ter.M3ter`` whose bearer token comes from airflow-provider-m3ter's token cache."""

        def __init__(self, *, provider_client: M3terClient, **kwargs: Any) -> None:
            self._provider_client = provider_client
            self._provider_auth = auth_class(provider_client)
            super().__init__(**kwargs)
            self._refresh_token()

        def _refresh_token(self) -> None:
            tokens = self._provider_client.tokens
            token = tokens.current()  # exchanges only when the cache has none usable
            remaining = token.expires_at - tokens.cache.clock()
            self.token = token.value
            # the SDK compares a naive local datetime with datetime.now()
            self.token_expiry = dt.datetime.fromtimestamp(time.time() + remaining)

        def _prepare_options(self, options: FinalRequestOptions) -> FinalRequestOptions:
            self._refresh_token()
            return options

        def _prepare_request(self, request: httpx.Request) -> None:
            settings = self._provider_client.settings
            measurements = f"/organizations/{quote(settings.org_id, safe='')}/measurements"
            path = request.url.raw_path.split(b"?")[0]
            if request.method == "POST" and path.endswith(measurements.encode()):
                url = httpx.URL(settings.ingest_url + measurements, params=request.url.params)
                request.url = url
                request.headers["Host"] = url.netloc.decode("ascii")

        @property
        def custom_auth(self) -> httpx.Auth:
            return self._provider_auth

        def copy(self, **kwargs: Any) -> NoReturn:
            raise NotImplementedError(
                "copy()/with_options() would build a plain m3ter.M3ter with its own token handling; "
                "call hook.get_sdk_client() again, or pass timeout/max_retries per call."
            )

        with_options = copy

        def __repr__(self) -> str:
            return f"ProviderTokenM3ter(org_id={self.org_id!r}, base_url={str(self.base_url)!r})"

    return ProviderTokenM3ter
