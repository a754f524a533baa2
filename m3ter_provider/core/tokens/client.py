"""One client's token plumbing (no Airflow import): its view of the process-wide token cache.

:mod:`m3ter_provider.core.tokens.cache` exchanges and caches tokens for the whole process; this module ties
that to one client: the exchange runs through the client's transport (so the token endpoint is
retried under the one retry policy), every new token is handed to ``on_secret`` (the hook masks
it), and it remembers which token it exchanged and m3ter has not accepted yet, so a refusal of
that token reads as an org id or permission problem instead of costing a second exchange.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

from m3ter_provider.core.tokens.cache import (
    Credentials,
    Token,
    TokenCache,
    exchange_once,
    parse_token_response,
    raise_for_token_response,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from m3ter_provider.core.transport import Transport

log = logging.getLogger(__name__)


class ClientTokens:
    """Bearer tokens for one client's credentials.

    :param credentials: the Service User's credentials and token URL.
    :param cache: the token cache (process-wide by default in the client).
    :param transport: sends the exchange, with retries.
    :param on_secret: called with every new token value (for masking).
    """

    def __init__(
        self,
        credentials: Credentials,
        cache: TokenCache,
        transport: Transport,
        on_secret: Callable[[str], None],
    ) -> None:
        self.credentials = credentials
        self.cache = cache
        self.transport = transport
        self._on_secret = on_secret
        self._last: Token | None = None
        self._masking = threading.Lock()
        self._pid = os.getpid()
        #: the last token this client exchanged while m3ter has not yet accepted it
        self._unproven: str | None = None

    def current(self) -> Token:
        """A usable token, exchanging the credentials only when the cache has none."""
        token = self.cache.get(self.credentials, self.exchange)
        if token is not self._last:
            if self._pid != os.getpid():  # forked while another thread may have held the lock
                self._masking, self._pid = threading.Lock(), os.getpid()
            with self._masking:  # threads meeting a new token together: one masks it, once
                if token is not self._last:
                    self._on_secret(token.value)
                    self._last = token
        return token

    @property
    def exchanges(self) -> int:
        """Successful token exchanges this process made for these credentials."""
        return self.cache.exchanges(self.credentials)

    def exchange(self, credentials: Credentials) -> Token:
        """Exchange the credentials once, retried under the policy (429, 5xx and timeouts are
        transient: an :class:`M3terTransportError` after the retries, never a credentials error)."""
        answer = self.transport.call(
            "POST",
            credentials.token_url,
            lambda: exchange_once(self.transport.session, credentials, timeout=self.transport.timeout),
            idempotent=True,
        )
        body = raise_for_token_response(answer, credentials)
        now = self.cache.clock()
        token = parse_token_response(body, now=now, token_url=credentials.token_url)
        self._unproven = token.value
        log.info(
            "Obtained an m3ter bearer token for %s (valid %.0f s).", credentials.label, token.expires_at - now
        )
        return token

    def is_fresh(self, token: Token) -> bool:
        """Whether ``token`` was exchanged here and m3ter has not accepted it yet."""
        return self._unproven == token.value

    def accepted(self, token: Token) -> None:
        """m3ter let a call with ``token`` through: from now on a refusal means it expired."""
        if self._unproven == token.value:
            self._unproven = None

    def refused(self, token: Token) -> None:
        """m3ter refused ``token``: drop it from the cache (the next call exchanges again)."""
        self.cache.invalidate(self.credentials, token)
