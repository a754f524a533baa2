"""The hardened transport against the emulator over real HTTP: default page sizes, bad Retry-After,
a token endpoint that is down, fresh-token refusals, test messages, job ids, downloads and logs."""

from __future__ import annotations

import json
import logging
import math

import pytest

from m3ter_provider.errors import M3terAPIError, M3terAuthError, M3terTransportError
from m3ter_provider.hooks.m3ter import M3terHook

ACCOUNTS = "GET /organizations/{orgId}/accounts"
PRODUCTS = "GET /organizations/{orgId}/products"
CONFIG = "GET /organizations/{orgId}/organizationconfig"
TOKEN = "POST /oauth/token"
DOWNLOAD = "GET /_emulator/downloads/{token}"


def use(emulator, monkeypatch, conn_id="m3ter_default", **changes) -> None:
    conn = json.loads(emulator.airflow_conn_json())
    extra = changes.pop("extra", {})
    conn.update(changes)
    conn["extra"].update(extra)
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def quiet_hook(conn_id="m3ter_default") -> M3terHook:
    hook = M3terHook(m3ter_conn_id=conn_id)
    hook.client.sleeps = []
    hook.client.sleep = hook.client.sleeps.append
    return hook


def test_paginate_defaults_to_the_endpoints_maximum_page_size(m3ter_conn):
    m3ter_conn.seed("accounts", [{"code": f"a-{i:03d}", "name": f"A {i}"} for i in range(250)])
    m3ter_conn.seed("products", [{"code": f"p-{i:03d}", "name": f"P {i}"} for i in range(450)])
    hook = M3terHook()
    assert len(list(hook.paginate("accounts"))) == 250
    assert len(list(hook.paginate("products"))) == 450
    requests = m3ter_conn.stats()["requests"]
    assert requests[ACCOUNTS] == 3  # 100 a page, not m3ter's default 10 (25 requests)
    assert requests[PRODUCTS] == 3  # 200 a page


@pytest.mark.parametrize("retry_after", ["nan", "inf", "-5", "NaN", "1e999"])
def test_an_unusable_retry_after_falls_back_to_backoff(m3ter_conn, retry_after):
    m3ter_conn.add_fault(ACCOUNTS, status=429, times=2, retry_after=retry_after)
    hook = quiet_hook()
    assert hook.get("accounts") == {"data": []}
    assert len(hook.client.sleeps) == 2
    assert all(math.isfinite(s) and 0 <= s <= 1.0 for s in hook.client.sleeps)


def test_a_token_endpoint_503_is_retried_not_reported_as_bad_credentials(m3ter_conn):
    m3ter_conn.add_fault(TOKEN, status=503, times=2)
    hook = quiet_hook()
    assert hook.get("organizationconfig")["id"] == m3ter_conn.org_id
    stats = m3ter_conn.stats()
    assert stats["statuses"][TOKEN] == {"503": 2, "200": 1}
    assert stats["token_exchanges"] == 1 and len(hook.client.sleeps) == 2


def test_a_token_endpoint_that_stays_down_is_a_transport_error(m3ter_emulator, monkeypatch):
    use(m3ter_emulator, monkeypatch, extra={"max_retries": 2})
    m3ter_emulator.add_fault(TOKEN, status=503, times=None)
    hook = quiet_hook()
    with pytest.raises(M3terTransportError) as err:
        hook.get("accounts")
    text = str(err.value)
    assert "POST /oauth/token" in text and "HTTP 503" in text and "after 3 attempts" in text
    assert "Access Key id" not in text and "Api Secret" not in text
    assert m3ter_emulator.stats()["statuses"][TOKEN] == {"503": 3}
    ok, message = hook.test_connection()
    assert not ok and "unavailable" in message and "Access Key id" not in message


def test_a_wrong_org_id_is_named_after_one_exchange(m3ter_emulator, monkeypatch):
    use(m3ter_emulator, monkeypatch, extra={"org_id": "someone-elses-org"})
    with pytest.raises(M3terAuthError) as err:
        quiet_hook().get("organizationconfig")
    text = str(err.value)
    assert "HTTP 403" in text and "org_id 'someone-elses-org'" in text and "permissions" in text
    stats = m3ter_emulator.stats()
    assert stats["token_exchanges"] == 1 and stats["requests"][CONFIG] == 1


def test_test_connection_with_a_wrong_org_spends_one_exchange_and_says_why(m3ter_emulator, monkeypatch):
    use(m3ter_emulator, monkeypatch, conn_id="RxeNx3Yt", extra={"org_id": "someone-elses-org"})
    ok, message = M3terHook(m3ter_conn_id="RxeNx3Yt").test_connection()
    assert not ok
    assert "org_id 'someone-elses-org' of this connection" in message and "permissions" in message
    assert "RxeNx3Yt" not in message
    assert m3ter_emulator.stats()["token_exchanges"] == 1


def test_test_connection_with_a_wrong_secret_speaks_of_this_connection(m3ter_emulator, monkeypatch):
    use(m3ter_emulator, monkeypatch, conn_id="RxeNx3Yt", password="not-the-secret")
    ok, message = M3terHook(m3ter_conn_id="RxeNx3Yt").test_connection()
    assert not ok and message.startswith("Token exchange") and "HTTP 401" in message
    assert "Check this connection: login must be" in message
    assert "RxeNx3Yt" not in message and "not-the-secret" not in message


def test_a_job_id_is_url_quoted(m3ter_conn):
    m3ter_conn.job_duration = 0
    hook = M3terHook()
    job_id = hook.start_data_export(
        "USAGE", start_date="2026-01-01T00:00:00Z", end_date="2026-01-02T00:00:00Z"
    )
    assert hook.get_job("dataexport", job_id)["id"] == job_id
    with pytest.raises(M3terAPIError, match="HTTP 404"):  # "abc#frag" must not read job "abc"
        hook.get_job("dataexport", f"{job_id}#frag")
    with pytest.raises(M3terAPIError, match="HTTP 404"):
        hook.get_export_download_url(f"{job_id}#frag")


def test_a_download_logs_no_signature_at_debug_and_survives_a_dropped_connection(
    m3ter_conn, tmp_path, caplog
):
    m3ter_conn.job_duration = 0
    hook = quiet_hook()
    job_id = hook.start_data_export(
        "USAGE", start_date="2026-01-01T00:00:00Z", end_date="2026-01-02T00:00:00Z"
    )
    hook.wait_for_job("dataexport", job_id, poll_interval=0.01)
    url = hook.get_export_download_url(job_id)["url"]
    # the emulator's URL carries its token in the path; real presigned URLs sign in the query
    presigned = f"{url}?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature=sig-0123456789abcdef"
    m3ter_conn.add_fault(DOWNLOAD, drop=True, times=1)
    target = tmp_path / "export.csv"
    target.write_bytes(b"previous file")
    caplog.set_level(logging.DEBUG)
    summary = hook.download(presigned, target)
    assert summary["bytes"] == target.stat().st_size > 0
    assert target.read_bytes() != b"previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["export.csv"]  # no temporary file left
    assert m3ter_conn.stats()["statuses"][DOWNLOAD] == {"dropped": 1, "200": 1}
    logged = caplog.text
    assert "/_emulator/downloads/" in logged  # urllib3's DEBUG lines were captured...
    assert "Starting new HTTP connection" in logged
    assert "sig-0123456789abcdef" not in logged and "AKIAEXAMPLE" not in logged  # ...without the query
    assert "?<redacted>" in logged


def test_test_connection_does_not_say_connected_for_a_proxys_html_page(monkeypatch):
    from tests.core.local_server import Answer, LocalServer

    html = b"<html><body>Sign in to the corporate proxy</body></html>"
    with LocalServer() as proxy:
        proxy.answer("/organizations/o/organizationconfig", Answer(body=html, content_type="text/html"))
        monkeypatch.setenv(
            "AIRFLOW_CONN_M3TER_PROXY",
            json.dumps(
                {
                    "conn_type": "m3ter",
                    "login": "k",
                    "password": "s",
                    "host": proxy.url,
                    "extra": {"org_id": "o"},
                }
            ),
        )
        hook = M3terHook(m3ter_conn_id="m3ter_proxy")
        ok, message = hook.test_connection()
        assert not ok, message
        assert (
            "reading the Organization failed" in message and "text/html" in message and "not JSON" in message
        )
        with pytest.raises(M3terAPIError, match="not JSON"):
            hook.request("GET", "organizationconfig")  # never the page's text
