"""``[m3ter] token_cache_dir``: the hook (and so the trigger) shares tokens through the file store."""

from __future__ import annotations

import json
import os

import pytest

from m3ter_provider import get_provider_info
from m3ter_provider.core.tokens.cache import TOKEN_CACHE
from m3ter_provider.core.tokens.store import FileTokenStore
from m3ter_provider.hooks.m3ter import M3terHook


@pytest.fixture
def fresh_fernet():
    """Airflow reads its Fernet key once: a cached function on 3.x, a module global on 2.11."""
    import airflow.models.crypto as crypto

    def clear() -> None:
        getattr(crypto.get_fernet, "cache_clear", lambda: None)()
        if hasattr(crypto, "_fernet"):
            crypto._fernet = None

    clear()
    yield
    clear()
    TOKEN_CACHE.set_shared_store(None)


def token_files(directory) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".token"))


def test_the_option_is_declared_in_the_provider_info():
    option = get_provider_info()["config"]["m3ter"]["options"]["token_cache_dir"]
    assert option["default"] == "" and option["type"] == "string"


def test_off_by_default_every_process_exchanges_its_own(m3ter_conn, monkeypatch, fresh_fernet):
    monkeypatch.delenv("AIRFLOW__M3TER__TOKEN_CACHE_DIR", raising=False)
    M3terHook().get("organizationconfig")
    assert TOKEN_CACHE.shared_store is None


def test_a_second_process_reads_the_token_the_first_saved(m3ter_conn, monkeypatch, tmp_path, fresh_fernet):
    directory = tmp_path / "tokens"
    monkeypatch.setenv("AIRFLOW__M3TER__TOKEN_CACHE_DIR", str(directory))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    first = M3terHook()
    first.get("organizationconfig")
    assert isinstance(TOKEN_CACHE.shared_store, FileTokenStore)
    assert len(token_files(directory)) == 1
    TOKEN_CACHE.clear()  # what a new task process starts with
    second = M3terHook()
    second.get("organizationconfig")
    assert second.get_token() == first.get_token()
    assert m3ter_conn.stats()["token_exchanges"] == 1
    # no Fernet key: the token is in the file in plain text (mode 0600), as the README says
    (name,) = token_files(directory)
    assert json.loads((directory / name).read_text())["token"] == first.get_token()


def test_with_a_fernet_key_the_file_is_encrypted(m3ter_conn, monkeypatch, tmp_path, fresh_fernet):
    from cryptography.fernet import Fernet

    key = Fernet.generate_key().decode()
    directory = tmp_path / "tokens"
    monkeypatch.setenv("AIRFLOW__M3TER__TOKEN_CACHE_DIR", str(directory))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", key)
    hook = M3terHook()
    token = hook.get_token()
    (name,) = token_files(directory)
    raw = (directory / name).read_bytes()
    assert token.encode() not in raw
    assert json.loads(Fernet(key.encode()).decrypt(raw))["token"] == token
