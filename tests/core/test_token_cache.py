"""TokenCache: single flight on a future, no lock across I/O, early refresh, fork safety, shared store."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable

import pytest

from m3ter_provider.core.client import M3terClient
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.tokens.cache import Credentials, Token, TokenCache
from m3ter_provider.errors import M3terAuthError, M3terError, M3terTransportError
from m3ter_provider.testing import M3terEmulator

TOKEN_ROUTE = "POST /oauth/token"
CREDS = Credentials(token_url="http://127.0.0.1:1/oauth/token", access_key_id="AKID", api_secret="s3cret")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Exchanger:
    """An exchange function that counts calls, can block, and answers from a script."""

    def __init__(self, clock: Callable[[], float], lifetime: float = 1000.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.calls = 0
        self.release = threading.Event()
        self.release.set()
        self.started = threading.Event()
        self.fail: BaseException | None = None

    def __call__(self, credentials: Credentials) -> Token:
        self.calls += 1
        self.started.set()
        self.release.wait(30)
        if self.fail is not None:
            raise self.fail
        now = self.clock()
        return Token(
            value=f"tok-{self.calls}",
            expires_at=now + self.lifetime,
            refresh_at=now + self.lifetime - min(300.0, self.lifetime / 2),
        )


def run_threads(n: int, target: Callable[[], object]) -> list[object]:
    """Run ``target`` on ``n`` threads started together; return each one's result or exception."""
    results: list[object] = [None] * n
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return results


def emulator_client(
    emu: M3terEmulator, *, cache: TokenCache, secret: str | None = None, **extra
) -> M3terClient:
    settings = M3terSettings.from_connection_fields(
        "m3ter_test",
        login=emu.access_key_id,
        password=secret or emu.api_secret,
        host=emu.url,
        extra={"org_id": emu.org_id, **extra},
    )
    return M3terClient(settings, token_cache=cache)


# ------------------------------------------------------------------ single flight
def test_concurrent_threads_share_one_exchange():
    clock = FakeClock()
    cache, exchange = TokenCache(clock=clock), Exchanger(clock)
    exchange.release.clear()
    threading.Timer(0.3, exchange.release.set).start()  # the exchange is in flight while all arrive
    results = run_threads(8, lambda: cache.get(CREDS, exchange))
    assert exchange.calls == 1
    assert {r.value for r in results} == {"tok-1"}
    assert cache.exchanges(CREDS) == 1


def test_a_refusal_is_shared_by_the_threads_that_waited_for_it():
    clock = FakeClock()
    cache, exchange = TokenCache(clock=clock), Exchanger(clock)
    exchange.fail = M3terAuthError("refused", method="POST", path="/oauth/token", status=401)
    exchange.release.clear()
    threading.Timer(0.3, exchange.release.set).start()
    results = run_threads(8, lambda: cache.get(CREDS, exchange))
    assert exchange.calls == 1
    assert all(isinstance(r, M3terAuthError) for r in results)
    # a later call is a new question: it asks again
    exchange.fail = None
    assert cache.get(CREDS, exchange).value == "tok-2"


def test_wrong_credentials_cost_one_refused_exchange_under_concurrency():
    with M3terEmulator() as emu:
        emu.add_fault(TOKEN_ROUTE, delay=0.5)  # the first exchange is slow: the others arrive meanwhile
        cache = TokenCache()
        clients = [emulator_client(emu, cache=cache, secret="wrong") for _ in range(6)]
        barrier_clients = iter(clients)
        lock = threading.Lock()

        def get() -> str:
            with lock:
                client = next(barrier_clients)
            return client.get_token()

        results = run_threads(6, get)
        assert all(isinstance(r, M3terError) for r in results)
        assert emu.stats()["requests"][TOKEN_ROUTE] == 1


def test_invalidate_does_not_wait_for_an_exchange_in_flight():
    clock = FakeClock()
    cache, exchange = TokenCache(clock=clock), Exchanger(clock)
    first = cache.get(CREDS, exchange)
    clock.now = first.refresh_at + 1  # stale: the next get refreshes
    exchange.release.clear()
    exchange.started.clear()
    getter = threading.Thread(target=cache.get, args=(CREDS, exchange))
    getter.start()
    assert exchange.started.wait(10)
    invalidator = threading.Thread(target=cache.invalidate, args=(CREDS, first))
    invalidator.start()
    invalidator.join(5)
    finished_while_exchanging = not invalidator.is_alive()
    exchange.release.set()
    getter.join(10)
    assert finished_while_exchanging
    assert cache.get(CREDS, exchange).value == "tok-2"


# ------------------------------------------------------------------ early refresh
def test_a_failed_early_refresh_keeps_the_current_token_and_backs_off():
    clock = FakeClock()
    cache, exchange = TokenCache(clock=clock), Exchanger(clock, lifetime=1000)
    token = cache.get(CREDS, exchange)
    clock.now = token.refresh_at + 10  # 290 s left
    exchange.fail = M3terTransportError("no answer from m3ter", method="POST", path="/oauth/token")
    assert cache.get(CREDS, exchange) is token
    assert exchange.calls == 2
    for _ in range(5):  # backing off: no exchange on every call
        assert cache.get(CREDS, exchange) is token
    assert exchange.calls == 2
    clock.now += 61  # past the back-off: tried again (fails again, token still valid)
    assert cache.get(CREDS, exchange) is token
    assert exchange.calls == 3
    clock.now += 61
    exchange.fail = None
    renewed = cache.get(CREDS, exchange)
    assert renewed.value == "tok-4" and exchange.calls == 4


def test_a_credential_refusal_at_early_refresh_keeps_the_token_too():
    clock = FakeClock()
    cache, exchange = TokenCache(clock=clock), Exchanger(clock, lifetime=1000)
    token = cache.get(CREDS, exchange)
    clock.now = token.refresh_at + 1
    exchange.fail = M3terAuthError("refused", method="POST", path="/oauth/token", status=401)
    assert cache.get(CREDS, exchange) is token


def test_once_the_token_really_expired_the_refresh_error_propagates():
    clock = FakeClock()
    cache, exchange = TokenCache(clock=clock), Exchanger(clock, lifetime=1000)
    token = cache.get(CREDS, exchange)
    clock.now = token.refresh_at + 1
    exchange.fail = M3terTransportError("down", method="POST", path="/oauth/token")
    assert cache.get(CREDS, exchange) is token
    clock.now = token.expires_at
    with pytest.raises(M3terTransportError):
        cache.get(CREDS, exchange)


def test_other_threads_keep_the_valid_token_while_it_is_being_refreshed():
    clock = FakeClock()
    cache, exchange = TokenCache(clock=clock), Exchanger(clock)
    token = cache.get(CREDS, exchange)
    clock.now = token.refresh_at + 1
    exchange.release.clear()
    exchange.started.clear()
    refresher = threading.Thread(target=cache.get, args=(CREDS, exchange))
    refresher.start()
    assert exchange.started.wait(10)
    assert cache.get(CREDS, exchange) is token  # does not wait for the refresh
    exchange.release.set()
    refresher.join(10)
    assert cache.get(CREDS, exchange).value == "tok-2"


def test_early_refresh_against_a_failing_token_endpoint_keeps_working():
    """Emulator: the token endpoint answers 503 during the refresh window; calls go on."""
    with M3terEmulator() as emu:
        clock = FakeClock()
        client = emulator_client(emu, cache=TokenCache(clock=clock), max_retries=0)
        client.request("GET", "organizationconfig")
        clock.now += 18000 - 200  # inside the refresh window, 200 s before expiry
        emu.add_fault(TOKEN_ROUTE, status=503, times=None)
        for _ in range(3):
            client.request("GET", "organizationconfig")
        assert emu.stats()["requests"][TOKEN_ROUTE] == 2  # one exchange, one failed refresh
        emu.clear_faults()
        clock.now += 61
        client.request("GET", "organizationconfig")
        assert client.token_exchanges == 2


# ------------------------------------------------------------------ fork safety
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_during_an_exchange_gets_a_token():
    with M3terEmulator() as emu:
        cache = TokenCache()
        emu.add_fault(TOKEN_ROUTE, delay=3.0)  # the parent's exchange blocks at the token endpoint
        parent_client = emulator_client(emu, cache=cache)
        exchanging = threading.Thread(target=parent_client.get_token)
        exchanging.start()
        entry = cache._entry(parent_client.credentials)
        for _ in range(500):
            if entry.inflight is not None:
                break
            time.sleep(0.01)
        assert entry.inflight is not None
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: get a token with a fresh client on the inherited cache
            try:
                os.close(read_end)
                import signal

                signal.alarm(20)  # never hang the test run
                token = emulator_client(emu, cache=cache).get_token()
                os.write(write_end, b"ok:" + str(len(token)).encode())
            except BaseException as exc:
                os.write(write_end, f"error:{type(exc).__name__}".encode())
            finally:
                os._exit(0)
        os.close(write_end)
        ready, _, _ = select.select([read_end], [], [], 25)
        answer = os.read(read_end, 200).decode() if ready else "no answer (the child hung)"
        os.close(read_end)
        if not ready:
            os.kill(pid, 9)
        os.waitpid(pid, 0)
        exchanging.join(15)
        assert answer.startswith("ok:"), answer
        assert int(answer.split(":")[1]) > 0


# ------------------------------------------------------------------ shared store
class MemoryStore:
    """An in-memory SharedTokenStore, as two processes on one machine would share a file."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.saved: dict[str, tuple[str, float]] = {}
        self.discarded: list[tuple[str, str]] = []
        self.fetches = 0

    def fetch(self, key, exchange, *, valid_until):
        with self.lock:
            self.fetches += 1
            saved = self.saved.get(key)
            if saved is not None and saved[1] > valid_until:
                return saved
            self.saved[key] = exchange()
            return self.saved[key]

    def discard(self, key, value):
        with self.lock:
            self.discarded.append((key, value))
            if self.saved.get(key, (None,))[0] == value:
                del self.saved[key]


def test_store_key_hides_the_key_id_and_secret():
    key = CREDS.store_key
    assert len(key) == 64 and int(key, 16) >= 0
    assert "AKID" not in key and "s3cret" not in key
    other = Credentials(token_url=CREDS.token_url, access_key_id="AKID", api_secret="other")
    assert other.store_key != key


def test_two_caches_sharing_a_store_make_one_exchange():
    with M3terEmulator() as emu:
        store = MemoryStore()
        first, second = TokenCache(), TokenCache()
        first.set_shared_store(store)
        second.set_shared_store(store)
        a = emulator_client(emu, cache=first)
        b = emulator_client(emu, cache=second)
        a.request("GET", "organizationconfig")
        b.request("GET", "organizationconfig")
        assert a.get_token() == b.get_token()
        assert emu.stats()["token_exchanges"] == 1
        assert (a.token_exchanges, b.token_exchanges) == (1, 0)
        # a refused token is discarded from the store too; the next exchange is shared again
        emu.expire_tokens()
        b.request("GET", "organizationconfig")
        assert store.discarded and store.discarded[0][0] == b.credentials.store_key
        a.request("GET", "organizationconfig")
        assert emu.stats()["token_exchanges"] == 2
        assert a.get_token() == b.get_token()


def test_a_store_token_too_close_to_expiry_is_exchanged_again():
    clock = FakeClock()
    store = MemoryStore()
    cache = TokenCache(clock=clock)
    cache.wall_clock = clock
    cache.set_shared_store(store)
    exchange = Exchanger(clock, lifetime=1000)
    store.saved[CREDS.store_key] = ("old", clock.now + 100)  # another process's, nearly expired
    assert cache.get(CREDS, exchange).value == "tok-1"
    assert store.saved[CREDS.store_key][0] == "tok-1"
    other = TokenCache(clock=clock)
    other.wall_clock = clock
    other.set_shared_store(store)
    token = other.get(CREDS, exchange)
    assert token.value == "tok-1" and exchange.calls == 1
    assert token.expires_at == pytest.approx(clock.now + 1000)


def test_waiters_in_one_process_share_the_store_fetch():
    clock = FakeClock()
    store = MemoryStore()
    cache = TokenCache(clock=clock)
    cache.set_shared_store(store)
    exchange = Exchanger(clock)
    exchange.release.clear()
    threading.Timer(0.3, exchange.release.set).start()
    results = run_threads(6, lambda: cache.get(CREDS, exchange))
    assert {r.value for r in results} == {"tok-1"}
    assert store.fetches == 1 and exchange.calls == 1


def test_waiters_ask_again_when_the_exchanging_thread_was_interrupted():
    """An exchange abandoned by its thread (not refused by m3ter) is no answer: a waiter exchanges."""

    class Interrupted(BaseException):
        pass

    clock = FakeClock()
    cache = TokenCache(clock=clock)
    inner = Exchanger(clock)
    first = threading.Event()

    def exchange(credentials):
        if not first.is_set():
            first.set()
            time.sleep(0.3)  # the others arrive and wait
            raise Interrupted
        return inner(credentials)

    results = run_threads(4, lambda: cache.get(CREDS, exchange))
    assert sum(isinstance(r, Interrupted) for r in results) == 1
    assert {r.value for r in results if isinstance(r, Token)} == {"tok-1"}
    assert inner.calls == 1


def test_a_failing_store_falls_back_to_this_process_own_exchange():
    class BrokenStore(MemoryStore):
        def fetch(self, key, exchange, *, valid_until):
            raise PermissionError("token cache dir not writable")

    clock = FakeClock()
    cache = TokenCache(clock=clock)
    cache.set_shared_store(BrokenStore())
    exchange = Exchanger(clock)
    assert cache.get(CREDS, exchange).value == "tok-1" and exchange.calls == 1
    assert cache.get(CREDS, exchange).value == "tok-1" and exchange.calls == 1


def test_a_refusal_inside_the_store_propagates():
    clock = FakeClock()
    cache = TokenCache(clock=clock)
    cache.set_shared_store(MemoryStore())
    exchange = Exchanger(clock)
    exchange.fail = M3terAuthError("refused", method="POST", path="/oauth/token", status=401)
    with pytest.raises(M3terAuthError):
        cache.get(CREDS, exchange)
    assert exchange.calls == 1
