"""Token storms at expiry: 16 threads find the token stale (or refused) at once; one exchange serves all."""

from __future__ import annotations

import threading

import pytest

from m3ter_provider.core.tokens.cache import TokenCache
from m3ter_provider.core.tokens.store import FileTokenStore
from tests.core.test_token_cache import CREDS, Exchanger, FakeClock, emulator_client, run_threads

THREADS = 16


def test_sixteen_threads_past_expiry_share_one_new_exchange():
    clock = FakeClock()
    cache, exchange = TokenCache(clock=clock), Exchanger(clock)
    assert cache.get(CREDS, exchange).value == "tok-1"
    clock.now += exchange.lifetime  # the token has now really expired
    results = run_threads(THREADS, lambda: cache.get(CREDS, exchange))
    assert exchange.calls == 2 and {r.value for r in results} == {"tok-2"}


@pytest.mark.parametrize("shared", [False, True], ids=["process-cache", "worker-file-cache"])
def test_sixteen_threads_whose_token_m3ter_expired_make_one_exchange(m3ter_emulator, tmp_path, shared):
    """m3ter answers the expired token with 403 on all 16 calls: one re-exchange, every call succeeds."""
    cache = TokenCache()
    if shared:
        cache.set_shared_store(FileTokenStore(tmp_path / "tokens"))
    clients = [emulator_client(m3ter_emulator, cache=cache) for _ in range(4)]
    clients[0].request("GET", "organizationconfig")  # warm: one token, cached
    m3ter_emulator.expire_tokens()
    before = m3ter_emulator.stats()["token_exchanges"]
    results = run_threads(
        THREADS, lambda: clients[threading.get_ident() % 4].request("GET", "organizationconfig")
    )
    assert [r for r in results if isinstance(r, BaseException)] == []
    assert before == 1 and m3ter_emulator.stats()["token_exchanges"] == 2
