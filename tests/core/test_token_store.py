"""The shared (cross-process) token store: one exchange per worker, private files, refused tokens dropped."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import stat
import threading
import time

import pytest

from m3ter_provider.core.client import M3terClient
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.tokens.cache import TOKEN_CACHE, Credentials
from m3ter_provider.core.tokens.store import FileTokenStore
from m3ter_provider.errors import M3terAuthError, M3terConfigError
from m3ter_provider.testing import M3terEmulator
from tests.core import token_storm

KEY = "ab" * 32


@pytest.fixture
def no_shared_store():
    TOKEN_CACHE.set_shared_store(None)
    yield
    TOKEN_CACHE.set_shared_store(None)


def settings_for(emulator: M3terEmulator) -> M3terSettings:
    return token_storm.settings_from(json.loads(emulator.airflow_conn_json()))


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


class CountingExchange:
    def __init__(self, lifetime: float = 18000.0, pause: float = 0.0) -> None:
        self.calls = 0
        self.lifetime = lifetime
        self.pause = pause

    def __call__(self) -> tuple[str, float]:
        self.calls += 1
        time.sleep(self.pause)
        return f"token-{self.calls}", time.time() + self.lifetime


# ---------------------------------------------------------------- processes against the emulator
@pytest.mark.parametrize(("shared", "processes", "expected_exchanges"), [(True, 20, 1), (False, 5, 5)])
def test_processes_on_a_cold_cache(m3ter_emulator, tmp_path, shared, processes, expected_exchanges):
    """20 spawned processes call m3ter at once: one exchange with the store; without it, one each."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes)
    results = ctx.Queue()
    conn = json.loads(m3ter_emulator.airflow_conn_json())
    directory = str(tmp_path / "tokens") if shared else None
    children = [
        ctx.Process(target=token_storm.call_m3ter, args=(conn, directory, barrier, results))
        for _ in range(processes)
    ]
    for process in children:
        process.start()
    answers = [results.get(timeout=600) for _ in children]
    for process in children:
        process.join(timeout=60)
    assert [a for a in answers if a[0] != "ok"] == []
    assert m3ter_emulator.stats()["token_exchanges"] == expected_exchanges
    assert sum(a[2] for a in answers) == expected_exchanges
    assert len({a[1] for a in answers}) == expected_exchanges  # everyone used the one token


def test_sixteen_threads_with_the_store_make_one_exchange(m3ter_emulator, tmp_path, no_shared_store):
    TOKEN_CACHE.set_shared_store(FileTokenStore(tmp_path / "tokens"))
    clients = [M3terClient(settings_for(m3ter_emulator)) for _ in range(4)]
    barrier = threading.Barrier(16)

    def work(client):
        barrier.wait()
        client.request("GET", "organizationconfig")

    threads = [threading.Thread(target=work, args=(clients[i % 4],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert m3ter_emulator.stats()["token_exchanges"] == 1


def test_a_token_m3ter_refuses_is_dropped_from_the_file(m3ter_emulator, tmp_path, no_shared_store):
    store = FileTokenStore(tmp_path / "tokens")
    TOKEN_CACHE.set_shared_store(store)
    client = M3terClient(settings_for(m3ter_emulator))
    client.request("GET", "organizationconfig")
    key = client.credentials.store_key
    first, _ = store._read(store._path(key, ".token"))[0]
    assert first == client.get_token()

    m3ter_emulator.expire_tokens()  # m3ter now answers the saved token with 403
    client.request("GET", "organizationconfig")  # drops it, exchanges once more, succeeds

    second, _ = store._read(store._path(key, ".token"))[0]
    assert second != first
    assert second == client.get_token()
    assert m3ter_emulator.stats()["token_exchanges"] == 2
    # a process that starts now takes the fresh token from the file, not the refused one
    TOKEN_CACHE.clear()
    assert M3terClient(settings_for(m3ter_emulator)).get_token() == second
    assert m3ter_emulator.stats()["token_exchanges"] == 2


def test_wrong_credentials_propagate_and_save_nothing(m3ter_emulator, tmp_path, no_shared_store):
    store = FileTokenStore(tmp_path / "tokens")
    TOKEN_CACHE.set_shared_store(store)
    settings = settings_for(m3ter_emulator)
    bad = M3terSettings.from_connection_fields(
        "m3ter_default", login="wrong", password="wrong", host=settings.api_url, extra={"org_id": "o"}
    )
    with pytest.raises(M3terAuthError):
        M3terClient(bad).get_token()
    assert [p for p in os.listdir(store.directory) if p.endswith(".token")] == []


# ---------------------------------------------------------------- the store on its own
def test_discard_drops_only_the_refused_token(tmp_path):
    store = FileTokenStore(tmp_path)
    exchange = CountingExchange()
    value, _ = store.fetch(KEY, exchange, valid_until=time.time())
    store.discard(KEY, "some-other-token")
    assert store.fetch(KEY, exchange, valid_until=time.time())[0] == value
    store.discard(KEY, value)
    assert not os.path.exists(store._path(KEY, ".token"))
    assert store.fetch(KEY, exchange, valid_until=time.time())[0] == "token-2"
    assert exchange.calls == 2


def test_a_token_not_valid_long_enough_is_exchanged_again(tmp_path):
    store = FileTokenStore(tmp_path)
    exchange = CountingExchange(lifetime=100)
    store.fetch(KEY, exchange, valid_until=time.time())
    assert store.fetch(KEY, exchange, valid_until=time.time() + 50)[0] == "token-1"
    assert store.fetch(KEY, exchange, valid_until=time.time() + 300)[0] == "token-2"
    assert exchange.calls == 2


def test_waiters_take_a_token_written_while_they_waited_even_a_short_lived_one(tmp_path):
    """Each thread opens the lock file itself, so flock excludes them as it excludes processes."""
    store = FileTokenStore(tmp_path)
    exchange = CountingExchange(lifetime=30, pause=0.3)  # shorter than the 300 s asked for
    barrier = threading.Barrier(8)
    values = []

    def work():
        barrier.wait()
        values.append(store.fetch(KEY, exchange, valid_until=time.time() + 300)[0])

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert exchange.calls == 1
    assert values == ["token-1"] * 8


def test_files_are_private_and_written_atomically(tmp_path):
    directory = tmp_path / "new" / "tokens"
    store = FileTokenStore(directory)
    store.fetch(KEY, CountingExchange(), valid_until=time.time())
    assert mode(directory) == 0o700
    assert sorted(os.listdir(directory)) == [KEY + ".lock", KEY + ".token"]  # no temp file left
    assert mode(directory / (KEY + ".token")) == 0o600
    assert mode(directory / (KEY + ".lock")) == 0o600
    saved = json.loads((directory / (KEY + ".token")).read_text())
    assert set(saved) == {"format", "token", "expires_at"}


def test_a_directory_others_can_enter_is_narrowed_and_said(tmp_path, caplog):
    directory = tmp_path / "tokens"
    directory.mkdir()
    os.chmod(directory, 0o755)  # noqa: S103 - the wide mode under test
    with caplog.at_level(logging.WARNING, logger="m3ter_provider.core.tokens.store"):
        FileTokenStore(directory)
    assert mode(directory) == 0o700
    assert "had mode 755" in caplog.text and "narrowed it to 0700" in caplog.text


def test_a_file_or_symlink_instead_of_a_directory_is_refused(tmp_path):
    target = tmp_path / "real"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(M3terConfigError, match=r"token_cache_dir .* is not a directory"):
        FileTokenStore(tmp_path / "link")
    (tmp_path / "file").write_text("")
    with pytest.raises((M3terConfigError, FileExistsError)):
        FileTokenStore(tmp_path / "file")


def test_keys_that_are_not_digests_are_refused(tmp_path):
    store = FileTokenStore(tmp_path)
    with pytest.raises(ValueError, match="hex digest"):
        store.fetch("../../etc/passwd", CountingExchange(), valid_until=0)


def test_no_key_id_or_secret_in_the_file_names_or_contents(m3ter_emulator, tmp_path, no_shared_store):
    store = FileTokenStore(tmp_path / "tokens")
    TOKEN_CACHE.set_shared_store(store)
    client = M3terClient(settings_for(m3ter_emulator))
    client.get_token()
    credentials = client.credentials
    assert credentials.access_key_id not in credentials.store_key
    for name in os.listdir(store.directory):
        assert name.startswith(credentials.store_key)
        content = (tmp_path / "tokens" / name).read_bytes()
        for secret in (credentials.access_key_id, credentials.api_secret):
            assert secret not in name
            assert secret.encode() not in content


def test_store_key_is_a_digest_that_tells_credential_sets_apart():
    a = Credentials("https://api.m3ter.com/oauth/token", "key", "secret")
    assert len(a.store_key) == 64 and int(a.store_key, 16) >= 0
    assert a.store_key == Credentials("https://api.m3ter.com/oauth/token", "key", "secret").store_key
    assert a.store_key != Credentials("https://api.m3ter.com/oauth/token", "key", "other").store_key
    assert a.store_key != Credentials("https://api.m3ter.com/oauth/token", "key2", "secret").store_key
    assert a.store_key != Credentials("http://127.0.0.1/oauth/token", "key", "secret").store_key


def test_fernet_round_trip(tmp_path):
    fernet_module = pytest.importorskip("cryptography.fernet")
    key = fernet_module.Fernet.generate_key()
    fernet = fernet_module.Fernet(key)
    store = FileTokenStore(tmp_path, encrypt=fernet.encrypt, decrypt=fernet.decrypt)
    value, expires_at = store.fetch(KEY, CountingExchange(), valid_until=time.time())
    raw = (tmp_path / (KEY + ".token")).read_bytes()
    assert value.encode() not in raw and b"expires_at" not in raw
    assert json.loads(fernet.decrypt(raw))["token"] == value
    # another process with the same key reads it back without exchanging
    again = FileTokenStore(tmp_path, encrypt=fernet.encrypt, decrypt=fernet.decrypt)
    assert again.fetch(KEY, CountingExchange(), valid_until=time.time()) == (value, expires_at)
    # after a key rotation (or with no key at all) the file is unreadable: exchange anew, overwrite
    other = fernet_module.Fernet(fernet_module.Fernet.generate_key())
    rotated = CountingExchange()
    store2 = FileTokenStore(tmp_path, encrypt=other.encrypt, decrypt=other.decrypt)
    assert store2.fetch(KEY, rotated, valid_until=time.time())[0] == "token-1"
    assert rotated.calls == 1
    plain = CountingExchange()
    assert FileTokenStore(tmp_path).fetch(KEY, plain, valid_until=time.time())[0] == "token-1"
    assert plain.calls == 1
