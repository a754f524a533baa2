"""hook.get_sdk_client(): the official SDK's typed endpoints on the hook's cached token (extra ``sdk``)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook

m3ter = pytest.importorskip("m3ter", reason="the optional extra 'sdk' (the m3ter package) is not installed")

TOKEN = "POST /oauth/token"
MEASUREMENTS = "POST /organizations/{orgId}/measurements"


def test_n_calls_through_the_sdk_make_no_extra_exchange(m3ter_conn):
    m3ter_conn.seed("accounts", [{"name": f"Acme {i}", "code": f"acme-{i}"} for i in range(3)])
    hook = M3terHook()
    hook.get("organizationconfig")
    assert m3ter_conn.stats()["token_exchanges"] == 1
    sdk = hook.get_sdk_client()
    assert isinstance(sdk, m3ter.M3ter)
    for _ in range(25):
        config = sdk.organization_config.retrieve()
        assert config is not None
    codes = sorted(account.code for account in sdk.accounts.list())
    assert codes == ["acme-0", "acme-1", "acme-2"]
    stats = m3ter_conn.stats()
    assert stats["token_exchanges"] == 1
    assert stats["requests"][TOKEN] == 1
    assert stats["requests"]["GET /organizations/{orgId}/organizationconfig"] == 26


def test_the_sdk_client_carries_the_connection_settings_and_the_tokens_real_expiry(m3ter_conn, monkeypatch):
    conn = json.loads(m3ter_conn.airflow_conn_json())
    conn["extra"].update({"timeout": 7, "max_retries": 2})
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))
    hook = M3terHook()
    sdk = hook.get_sdk_client()
    assert str(sdk.base_url).rstrip("/") == m3ter_conn.url
    assert sdk.org_id == m3ter_conn.org_id
    assert sdk.max_retries == 2
    assert sdk.timeout.read == 7
    assert sdk.token == hook.get_token()
    # the emulator's tokens live 5 hours: the SDK sees that, not a date in 1970
    left = sdk.token_expiry - dt.datetime.now()
    assert dt.timedelta(hours=4, minutes=50) < left <= dt.timedelta(hours=5)
    assert sdk.api_secret == ""  # the SDK is never handed the Api Secret
    assert hook.settings.api_secret not in repr(sdk)


def test_a_refused_token_is_exchanged_once_then_the_call_succeeds(m3ter_conn):
    hook = M3terHook()
    sdk = hook.get_sdk_client()
    sdk.organization_config.retrieve()
    old = hook.get_token()
    m3ter_conn.expire_tokens()  # m3ter answers the cached token with 403
    sdk.organization_config.retrieve()
    assert hook.get_token() != old
    assert m3ter_conn.stats()["token_exchanges"] == 2
    # and the hook itself now uses the fresh token: no third exchange
    hook.get("organizationconfig")
    assert m3ter_conn.stats()["token_exchanges"] == 2


def test_measurements_go_to_the_connections_ingest_url(m3ter_conn, monkeypatch):
    conn = json.loads(m3ter_conn.airflow_conn_json())
    # the API URL points nowhere; only the ingest URL reaches the emulator
    conn["host"] = "http://127.0.0.1:9"
    conn["extra"].update({"ingest_url": m3ter_conn.url, "token_url": f"{m3ter_conn.url}/oauth/token"})
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))
    m3ter_conn.seed("meters", [{"code": "calls", "name": "Calls", "dataFields": [], "derivedFields": []}])
    sdk = M3terHook().get_sdk_client()
    answer = sdk.usage.submit(
        measurements=[{"account": "acme", "meter": "calls", "ts": "2026-01-01T00:00:00Z", "uid": "u-1"}]
    )
    assert answer.result == "accepted"
    assert m3ter_conn.stats()["requests"][MEASUREMENTS] == 1
    assert [m["uid"] for m in m3ter_conn.measurements()] == ["u-1"]


def test_without_the_sdk_installed_the_error_says_how_to_install_it(m3ter_conn, monkeypatch):
    import sys

    from m3ter_provider.core import sdk as sdk_module

    sdk_module._client_class.cache_clear()
    monkeypatch.setitem(sys.modules, "m3ter", None)  # import m3ter now raises ImportError
    try:
        with pytest.raises(M3terConfigError, match=r"pip install .m3ter>=0.9.0,<0.10. \(the provider.s sdk"):
            M3terHook().get_sdk_client()
    finally:
        sdk_module._client_class.cache_clear()
