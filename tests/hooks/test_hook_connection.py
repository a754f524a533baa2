"""M3terHook reads its connection from every place Airflow keeps one."""

from __future__ import annotations

import json

import pytest

from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook


def test_json_connection_from_the_environment(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_M3TER_DEFAULT",
        json.dumps(
            {
                "conn_type": "m3ter",
                "login": "AKID",
                "password": "json-secret",
                "extra": {"org_id": "org-json", "ingest_url": None, "console_url": ""},
            }
        ),
    )
    settings = M3terHook().settings
    assert (settings.access_key_id, settings.api_secret, settings.org_id) == (
        "AKID",
        "json-secret",
        "org-json",
    )
    assert settings.api_url == "https://api.m3ter.com"
    assert settings.ingest_url == "https://ingest.m3ter.com"
    assert settings.console_url == "https://console.m3ter.com"


def test_uri_connection_with_a_scheme_in_the_host(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_M3TER_LOCAL",
        "m3ter://http://AKID:uri%2Fsecret@127.0.0.1:8080/?org_id=org-uri&timeout=5",
    )
    settings = M3terHook(m3ter_conn_id="m3ter_local").settings
    assert settings.api_url == "http://127.0.0.1:8080"
    assert settings.ingest_url == "http://127.0.0.1:8080"
    assert settings.token_url == "http://127.0.0.1:8080/oauth/token"
    assert (settings.api_secret, settings.org_id, settings.timeout) == ("uri/secret", "org-uri", 5.0)


def test_uri_connection_to_production(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_PROD", "m3ter://AKID:s3cret@api.m3ter.com/?org_id=o")
    settings = M3terHook(m3ter_conn_id="m3ter_prod").settings
    assert (settings.api_url, settings.ingest_url) == ("https://api.m3ter.com", "https://ingest.m3ter.com")


def test_missing_org_id_is_named_before_any_request(monkeypatch, requests_mock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_M3TER_BAD", json.dumps({"conn_type": "m3ter", "login": "k", "password": "p"})
    )
    hook = M3terHook(m3ter_conn_id="m3ter_bad")
    with pytest.raises(M3terConfigError, match=r"'m3ter_bad'.*org_id"):
        hook.get("accounts")
    assert requests_mock.request_history == []
    ok, message = hook.test_connection()
    # the UI tests a form under a throwaway id: the message speaks of "this connection" instead
    assert not ok and message.startswith("This connection: extra 'org_id' is missing")
    assert "m3ter_bad" not in message


def test_repr_holds_no_secret(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", "m3ter://AKID:repr-secret-value@api.m3ter.com/?org_id=o")
    hook = M3terHook()
    hook.settings  # noqa: B018 - load the connection
    for text in (repr(hook), repr(hook.client), repr(hook.settings), repr(hook.client.credentials)):
        assert "repr-secret-value" not in text


@pytest.mark.e2e  # uses the migrated metadata DB (airflow db migrate in a subprocess)
def test_connection_from_the_metadata_db_inside_a_task(airflow_db, m3ter_emulator):
    """Airflow 3 tasks read connections through the execution API, backed by the metadata DB."""
    from airflow.models import Connection
    from airflow.utils.session import create_session

    from tests.dagrun import load_dag, run_dag

    conn_id = "m3ter_from_db"
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == conn_id).delete()
        session.add(
            Connection(
                conn_id=conn_id,
                conn_type="m3ter",
                login=m3ter_emulator.access_key_id,
                password=m3ter_emulator.api_secret,
                host=m3ter_emulator.url,
                extra=json.dumps({"org_id": m3ter_emulator.org_id, "ingest_url": None}),
            )
        )
    run = run_dag(load_dag("m3ter_db_connection_check"))
    assert run.state == "success"
    stats = m3ter_emulator.stats()
    assert stats["token_exchanges"] == 1
    assert stats["requests"]["GET /organizations/{orgId}/organizationconfig"] == 1
