"""M3terHook against the local emulator over real HTTP: tokens, retries, paging, ingest, secrets."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from m3ter_provider.core.tokens.cache import TOKEN_CACHE
from m3ter_provider.errors import (
    M3terAPIError,
    M3terAuthError,
    M3terConfigError,
    M3terTransportError,
    M3terValidationError,
)
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.testing import M3terEmulator
from tests.testing.helpers import know_meters

CONFIG = "GET /organizations/{orgId}/organizationconfig"
ACCOUNTS = "GET /organizations/{orgId}/accounts"
TOKEN = "POST /oauth/token"
MEASUREMENTS = "POST /organizations/{orgId}/measurements"


def use(emulator: M3terEmulator, monkeypatch, conn_id="m3ter_default", **extra) -> None:
    conn = json.loads(emulator.airflow_conn_json())
    conn["extra"].update(extra)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def hook_without_sleeping(conn_id="m3ter_default") -> M3terHook:
    """A hook whose retries record their delays instead of sleeping them."""
    hook = M3terHook(m3ter_conn_id=conn_id)
    hook.client.sleeps = []
    hook.client.sleep = hook.client.sleeps.append
    return hook


def test_4_hooks_8_threads_25_calls_make_one_token_exchange(m3ter_conn):
    """Limits off: 800 calls at full speed exceed m3ter's 50/s per Organization, and the exact count of
    requests below would then include the retried 429s."""
    m3ter_conn.set_limits(enabled=False)
    hooks = [M3terHook() for _ in range(4)]
    barrier = threading.Barrier(32)
    errors = []

    def work(hook):
        try:
            barrier.wait()
            for _ in range(25):
                hook.get("organizationconfig")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(hooks[i % 4],)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = m3ter_conn.stats()
    assert stats["token_exchanges"] == 1
    assert stats["requests"][TOKEN] == 1
    assert stats["requests"][CONFIG] == 800


def test_token_expiry_causes_exactly_one_refresh(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(TOKEN_CACHE, "clock", lambda: now[0])
    with M3terEmulator(token_expires_in=1000) as emulator:
        use(emulator, monkeypatch)
        hooks = [M3terHook() for _ in range(3)]
        for hook in hooks:
            hook.get("organizationconfig")
        assert emulator.stats()["token_exchanges"] == 1
        now[0] += 701  # past refresh-ahead: 300 s before the 1000 s lifetime ends
        threads = [threading.Thread(target=hooks[i % 3].get, args=("organizationconfig",)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for hook in hooks:
            hook.get("organizationconfig")
        stats = emulator.stats()
    assert stats["token_exchanges"] == 2
    assert stats["statuses"][CONFIG] == {"200": 18}


def test_an_expired_token_is_refreshed_once_and_the_call_succeeds(m3ter_conn):
    hook = M3terHook()
    hook.get("organizationconfig")
    first = hook.get_token()
    m3ter_conn.expire_tokens()
    assert hook.get("organizationconfig") is not None
    stats = m3ter_conn.stats()
    assert stats["token_exchanges"] == 2
    assert stats["statuses"][CONFIG] == {"200": 2, "403": 1}
    assert hook.get_token() != first


def test_wrong_credentials_fail_fast_with_a_clear_message(m3ter_emulator, monkeypatch):
    conn = json.loads(m3ter_emulator.airflow_conn_json())
    conn["password"] = "not-the-secret"
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_WRONG", json.dumps(conn))
    hook = hook_without_sleeping("m3ter_wrong")
    with pytest.raises(M3terAuthError) as err:
        hook.get("accounts")
    text = str(err.value)
    assert "POST /oauth/token" in text and "HTTP 401" in text and "'m3ter_wrong'" in text
    assert "not-the-secret" not in text
    stats = m3ter_emulator.stats()
    assert stats["requests"] == {TOKEN: 1}
    assert hook.client.sleeps == []
    ok, message = hook.test_connection()
    assert not ok and message.startswith("Token exchange") and "HTTP 401" in message


def test_test_connection_succeeds_and_reads_the_org(m3ter_conn):
    ok, message = M3terHook().test_connection()
    assert ok, message
    assert m3ter_conn.org_id in message
    assert m3ter_conn.stats()["requests"][CONFIG] == 1


@pytest.mark.parametrize("retry_after", ["2", None])
def test_429_is_retried_honouring_retry_after(m3ter_conn, retry_after):
    m3ter_conn.add_fault(ACCOUNTS, status=429, times=2, retry_after=retry_after)
    hook = hook_without_sleeping()
    assert hook.get("accounts") == {"data": []}
    assert m3ter_conn.stats()["statuses"][ACCOUNTS] == {"429": 2, "200": 1}
    if retry_after:
        assert hook.client.sleeps == [2.0, 2.0]
    else:
        assert len(hook.client.sleeps) == 2
        assert 0 <= hook.client.sleeps[0] <= 0.5 and 0 <= hook.client.sleeps[1] <= 1.0


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_is_retried_then_succeeds(m3ter_conn, status):
    m3ter_conn.add_fault(ACCOUNTS, status=status, times=1)
    hook = hook_without_sleeping()
    assert hook.get("accounts") == {"data": []}
    assert m3ter_conn.stats()["statuses"][ACCOUNTS] == {str(status): 1, "200": 1}


def test_a_dropped_connection_is_retried_for_a_read(m3ter_conn):
    m3ter_conn.add_fault(ACCOUNTS, drop=True, times=1)
    hook = hook_without_sleeping()
    assert hook.get("accounts") == {"data": []}
    assert m3ter_conn.stats()["requests"][ACCOUNTS] == 2


def test_retries_stop_at_max_retries(m3ter_emulator, monkeypatch):
    use(m3ter_emulator, monkeypatch, max_retries=2)
    m3ter_emulator.add_fault(ACCOUNTS, status=503, times=None)
    hook = hook_without_sleeping()
    with pytest.raises(M3terAPIError, match=r"HTTP 503.*after 3 attempts"):
        hook.get("accounts")
    assert m3ter_emulator.stats()["requests"][ACCOUNTS] == 3
    assert len(hook.client.sleeps) == 2


def test_a_create_that_m3ter_may_have_processed_is_not_retried(m3ter_conn):
    m3ter_conn.add_fault("POST /organizations/{orgId}/accounts", status=500, times=1)
    hook = hook_without_sleeping()
    with pytest.raises(M3terAPIError, match="HTTP 500"):
        hook.post("accounts", json={"code": "acme", "name": "Acme", "emailAddress": "billing@acme.test"})
    m3ter_conn.add_fault("POST /organizations/{orgId}/accounts", drop=True, times=1)
    with pytest.raises(M3terTransportError, match="may have processed it"):
        hook.post("accounts", json={"code": "acme", "name": "Acme", "emailAddress": "billing@acme.test"})
    assert m3ter_conn.stats()["requests"]["POST /organizations/{orgId}/accounts"] == 2
    assert m3ter_conn.entities("accounts") == []


def test_paging_across_pages_returns_every_item_once(m3ter_conn):
    m3ter_conn.seed(
        "accounts",
        [{"code": f"acct-{i:03d}", "name": f"Account {i}", "emailAddress": "a@b.test"} for i in range(250)],
    )
    hook = M3terHook()
    items = list(hook.paginate("accounts", page_size=100))
    assert len(items) == 250
    assert len({item["id"] for item in items}) == 250
    assert [item["code"] for item in items] == [f"acct-{i:03d}" for i in range(250)]
    assert m3ter_conn.stats()["requests"][ACCOUNTS] == 3


def test_a_page_size_over_the_endpoints_maximum_is_refused_before_sending(m3ter_conn):
    with pytest.raises(
        M3terConfigError, match=r"page_size 101 is over .* accounts \(100\): give at most 100"
    ):
        list(M3terHook().paginate("accounts", page_size=101))
    assert ACCOUNTS not in m3ter_conn.stats()["requests"]  # m3ter would answer 400: nothing sent


def make_measurements(count: int) -> list[dict]:
    """~600 bytes each once encoded."""
    return [
        {
            "account": f"acct-{i % 50:03d}",
            "meter": "api_calls",
            "ts": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            "measure": {"calls": i, "latency_ms": 12.5},
            "who": {"user": f"user-{i:06d}"},
            "metadata": {"pad": "x" * 440},
        }
        for i in range(count)
    ]


def test_5000_measurements_arrive_complete_within_the_limits(m3ter_conn):
    know_meters(m3ter_conn, "api_calls")  # m3ter refuses (after a 200) measurements of unknown Meters
    rows = make_measurements(5000)
    assert 580 <= len(json.dumps(rows[0], separators=(",", ":"))) <= 640
    summary = M3terHook().submit_measurements(rows, uid_namespace="dag/task/run/-1")
    stats = m3ter_conn.stats()
    assert summary["measurements"] == 5000
    assert summary["requests"] == stats["measurement_requests"] == stats["statuses"][MEASUREMENTS]["200"]
    assert stats["measurements_stored"] == 5000
    assert stats["max_measurements_per_request"] <= 1000
    assert stats["max_request_bytes"] < 512_000
    stored = m3ter_conn.measurements()
    assert sorted(m["measure"]["calls"] for m in stored) == list(range(5000))


def test_a_retried_measurement_post_does_not_double_count(m3ter_conn):
    know_meters(m3ter_conn, "api_calls")  # m3ter refuses (after a 200) measurements of unknown Meters
    rows = make_measurements(2500)
    m3ter_conn.add_fault(MEASUREMENTS, drop=True, times=1)
    m3ter_conn.add_fault(MEASUREMENTS, status=500, times=1)
    hook = hook_without_sleeping()
    hook.submit_measurements(rows, uid_namespace="run-1")
    hook.submit_measurements(rows, uid_namespace="run-1")  # the whole task re-run
    stats = m3ter_conn.stats()
    assert stats["measurements_stored"] == 2500
    assert stats["measurements_duplicates"] == 2500


def test_bad_measurements_are_refused_before_any_request(m3ter_conn):
    rows = make_measurements(10)
    rows[7] = {**rows[7], "ts": "last tuesday"}
    with pytest.raises(M3terValidationError, match=r"measurement #7: 'ts'"):
        M3terHook().submit_measurements(rows)
    assert m3ter_conn.stats()["requests_total"] == 0


def test_the_secret_and_tokens_never_reach_logs_or_errors(m3ter_emulator, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    use(m3ter_emulator, monkeypatch, max_retries=1)
    hook = hook_without_sleeping()
    hook.get("organizationconfig")
    tokens = [hook.get_token()]
    m3ter_emulator.expire_tokens()
    m3ter_emulator.add_fault(ACCOUNTS, status=429, times=1)
    hook.get("accounts")
    tokens.append(hook.get_token())
    m3ter_emulator.add_fault(ACCOUNTS, status=502, times=None)
    with pytest.raises(M3terAPIError) as err:
        hook.get("accounts")
    texts = [caplog.text, str(err.value), repr(err.value), repr(hook), repr(hook.client), repr(hook.settings)]
    assert len(set(tokens)) == 2
    for text in texts:
        for secret in (m3ter_emulator.api_secret, *tokens):
            assert secret not in text
    assert "Authorization" not in caplog.text


def test_concurrent_batches_survive_faults_and_store_each_measurement_once(m3ter_conn):
    know_meters(m3ter_conn, "api_calls")  # m3ter refuses (after a 200) measurements of unknown Meters
    rows = make_measurements(8000)
    m3ter_conn.add_fault(MEASUREMENTS, status=429, times=3)
    m3ter_conn.add_fault(MEASUREMENTS, status=502, times=2)
    hook = hook_without_sleeping()
    summary = hook.submit_measurements(rows, uid_namespace="concurrent", concurrency=4)
    stats = m3ter_conn.stats()
    assert stats["measurements_stored"] == 8000
    assert stats["statuses"][MEASUREMENTS] == {"429": 3, "502": 2, "200": summary["requests"]}
    assert stats["token_exchanges"] == 1
    assert len(hook.client.sleeps) == 5


@pytest.mark.parametrize("concurrency", [0, 11, 2.5, True])
def test_concurrency_out_of_range_is_refused_before_sending(m3ter_conn, concurrency):
    with pytest.raises(ValueError, match="concurrency"):
        M3terHook().submit_measurements(make_measurements(2), concurrency=concurrency)
    assert m3ter_conn.stats()["requests_total"] == 0


def test_test_connection_with_a_wrong_org_id_costs_one_exchange_and_keeps_the_shared_token(
    m3ter_emulator, monkeypatch
):
    use(m3ter_emulator, monkeypatch)
    shared = M3terHook()
    shared.get("organizationconfig")  # a token is now cached for these credentials
    token = shared.get_token()
    use(m3ter_emulator, monkeypatch, conn_id="m3ter_wrong_org", org_id="not-my-org")
    before = m3ter_emulator.stats()["token_exchanges"]
    ok, message = M3terHook(m3ter_conn_id="m3ter_wrong_org").test_connection()
    assert not ok
    assert "org_id" in message and "permission" in message
    assert m3ter_emulator.stats()["token_exchanges"] == before + 1
    assert shared.get_token() == token
    assert shared.get("organizationconfig") is not None
    assert m3ter_emulator.stats()["token_exchanges"] == before + 1


@pytest.mark.parametrize("password_ok", [True, False])
def test_test_connection_closes_its_session_whichever_step_fails(m3ter_emulator, monkeypatch, password_ok):
    from m3ter_provider.core.client import M3terClient

    conn = json.loads(m3ter_emulator.airflow_conn_json())
    if password_ok:
        conn["extra"]["org_id"] = "not-my-org"
    else:
        conn["password"] = "not-the-secret"
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_BROKEN", json.dumps(conn))
    closed = []
    real_close = M3terClient.close
    monkeypatch.setattr(M3terClient, "close", lambda self: (closed.append(self), real_close(self)))
    ok, _message = M3terHook(m3ter_conn_id="m3ter_broken").test_connection()
    assert not ok
    assert len(closed) == 1


def test_the_old_async_token_invalidation_is_gone():
    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.tokens.client import ClientTokens

    assert not hasattr(M3terHook, "invalidate_token")
    assert not hasattr(M3terClient, "invalidate_token")
    assert not hasattr(ClientTokens, "refused_value")
