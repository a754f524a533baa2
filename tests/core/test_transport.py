"""What counts as success, and what becomes of every library exception: against a tiny local server
(redirects, HTML pages, cut-off bodies) and requests-mock (exception families)."""

from __future__ import annotations

import gzip
import json

import pytest
import requests
import urllib3.exceptions

from m3ter_provider.core.client import M3terClient
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.tokens.cache import TokenCache
from m3ter_provider.errors import (
    M3terAuthError,
    M3terConfigError,
    M3terError,
    M3terIngestError,
    M3terResponseError,
    M3terTransportError,
)
from tests.core.local_server import Answer, LocalServer

ORG = "org-1"
ACCOUNTS = f"/organizations/{ORG}/accounts"
CONFIG = f"/organizations/{ORG}/organizationconfig"
MEASUREMENTS = f"/organizations/{ORG}/measurements"
HTML = b"<html><body><form>Please sign in to the proxy</form></body></html>"


def make_client(url: str, max_retries: int = 2, **extra: str) -> M3terClient:
    settings = M3terSettings.from_connection_fields(
        "m3ter_local",
        login="AKID",
        password="local-secret",
        host=url,
        extra={"org_id": ORG, "max_retries": max_retries, **extra},
    )
    client = M3terClient(settings, token_cache=TokenCache())
    client.sleeps = []
    client.sleep = client.sleeps.append
    return client


@pytest.fixture
def server():
    with LocalServer() as local:
        yield local


def test_a_redirect_is_an_error_naming_status_content_type_and_location(server):
    server.answer(
        ACCOUNTS,
        Answer(
            status=301,
            body=b"<html>Moved</html>",
            content_type="text/html",
            headers={"Location": "https://elsewhere.example/accounts?X-Amz-Signature=sig-secret"},
        ),
    )
    client = make_client(server.url)
    with pytest.raises(M3terResponseError) as err:
        client.request("GET", "accounts")
    text = str(err.value)
    assert err.value.status == 301
    assert "redirect to https://elsewhere.example/accounts" in text and "text/html" in text
    assert "sig-secret" not in text
    assert server.count(ACCOUNTS) == 1  # not retried, not followed


def test_an_ingest_url_answering_301_sends_nothing_silently(server):
    """Before: submit_measurements reported 5 measurements sent with nothing ingested."""
    server.answer(MEASUREMENTS, Answer(status=301, body=b"", headers={"Location": "https://ingest.example/"}))
    client = make_client(server.url)
    rows = [{"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "uid": f"u{i}"} for i in range(5)]
    with pytest.raises(M3terIngestError, match="HTTP 301") as err:
        client.submit_measurements(rows)
    assert isinstance(err.value.cause, M3terResponseError)
    assert err.value.accepted_measurements == 0 and err.value.total_measurements == 5


def test_an_html_200_is_never_returned_as_text(server):
    server.answer(ACCOUNTS, Answer(body=HTML, content_type="text/html; charset=utf-8"))
    client = make_client(server.url)
    with pytest.raises(M3terResponseError) as err:
        client.request("GET", "accounts")
    text = str(err.value)
    assert "HTTP 200" in text and "text/html" in text and "not JSON" in text
    assert server.count(ACCOUNTS) == 1


def test_an_empty_2xx_is_none(server):
    server.answer(ACCOUNTS + "/a1", Answer(status=204, body=b"", content_type=""))
    assert make_client(server.url).request("DELETE", "accounts/a1") is None


def test_a_body_cut_off_mid_way_is_retried_for_a_get(server):
    full = json.dumps({"data": [{"id": str(i)} for i in range(50)]}).encode()
    server.answer(ACCOUNTS, Answer(body=full, cut_after=40), Answer(body=full))
    client = make_client(server.url)
    assert len(client.request("GET", "accounts")["data"]) == 50
    assert server.count(ACCOUNTS) == 2 and len(client.sleeps) == 1


def test_a_body_always_cut_off_is_a_transport_error_after_the_retries(server):
    server.answer(ACCOUNTS, Answer(body=b'{"data": []}' * 20, cut_after=10))
    client = make_client(server.url, max_retries=2)
    with pytest.raises(M3terTransportError) as err:
        client.request("GET", "accounts")
    assert "cut off" in str(err.value) and "after 3 attempts" in str(err.value)
    assert server.count(ACCOUNTS) == 3


def test_a_create_whose_answer_was_cut_off_is_not_repeated(server):
    server.answer(f"/organizations/{ORG}/billjobs", Answer(body=b'{"id": "bj-1"}' * 5, cut_after=5))
    client = make_client(server.url)
    with pytest.raises(M3terTransportError, match="may have processed it"):
        client.request("POST", "billjobs", json={"accountIds": ["a"]})
    assert server.count(f"/organizations/{ORG}/billjobs") == 1


def test_malformed_json_with_a_json_content_type_counts_as_cut_off(server):
    server.answer(ACCOUNTS, Answer(body=b'{"data": [1, 2'), Answer(body=b'{"data": [1, 2]}'))
    client = make_client(server.url)
    assert client.request("GET", "accounts") == {"data": [1, 2]}
    assert server.count(ACCOUNTS) == 2


def test_an_undecodable_gzip_body_is_a_transport_error_retried_for_a_get(server):
    good = gzip.compress(b'{"data": []}')
    server.answer(
        ACCOUNTS,
        Answer(body=b"not gzip at all", headers={"Content-Encoding": "gzip"}),
        Answer(body=good, headers={"Content-Encoding": "gzip"}),
    )
    client = make_client(server.url)
    assert client.request("GET", "accounts") == {"data": []}
    assert server.count(ACCOUNTS) == 2


def test_a_token_endpoint_answering_html_is_not_a_token(server):
    server.answer("/oauth/token", Answer(body=HTML, content_type="text/html"))
    with pytest.raises(M3terResponseError, match="text/html"):
        make_client(server.url).get_token()


# ---------------------------------------------------------------- exception families (requests-mock)
API = "https://api.m3ter.test"


@pytest.fixture
def mocked(requests_mock):
    requests_mock.post(f"{API}/oauth/token", json={"access_token": "tok", "expires_in": 3600})
    return make_client(API, max_retries=2)


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"),
        requests.exceptions.ContentDecodingError("bad gzip"),
        requests.exceptions.SSLError("EOF occurred in violation of protocol"),
        requests.exceptions.ConnectionError("reset by peer"),
        requests.exceptions.ReadTimeout("slow"),
        urllib3.exceptions.ProtocolError("Connection aborted."),
        urllib3.exceptions.ReadTimeoutError(None, "/x", "read timed out"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_every_transport_exception_is_retried_for_a_get_and_ends_as_m3ter_error(mocked, requests_mock, exc):
    route = requests_mock.get(f"{API}{ACCOUNTS}", exc=exc)
    with pytest.raises(M3terTransportError) as err:
        mocked.request("GET", "accounts")
    assert route.call_count == 3  # 1 + max_retries
    assert err.value.__cause__ is None and err.value.__suppress_context__
    create = requests_mock.post(f"{API}/organizations/{ORG}/plans", exc=exc)
    with pytest.raises(M3terTransportError, match="may have processed it"):
        mocked.request("POST", "plans", json={})
    assert create.call_count == 1


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.InvalidURL("Failed to parse"),
        requests.exceptions.InvalidHeader("bad header"),
        requests.exceptions.MissingSchema("no scheme"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_a_malformed_request_is_a_transport_error_never_retried(mocked, requests_mock, exc):
    route = requests_mock.get(f"{API}{ACCOUNTS}", exc=exc)
    with pytest.raises(M3terTransportError, match="invalid request URL") as err:
        mocked.request("GET", "accounts")
    assert route.call_count == 1
    assert "the m3ter connection 'm3ter_local'" in str(err.value)


def test_m3ter_error_is_not_an_airflow_exception():
    assert M3terError.__mro__[1] is Exception


# ---------------------------------------------------------------- the token endpoint
@pytest.mark.parametrize(
    "answer",
    [
        {"status_code": 503, "json": {"message": "Service Unavailable"}},
        {"status_code": 502, "text": "<html>Bad Gateway</html>", "headers": {"Content-Type": "text/html"}},
        {"status_code": 429, "json": {"message": "Too Many Requests"}},
        {"exc": requests.exceptions.ReadTimeout("slow")},
        {"exc": requests.exceptions.ConnectTimeout("slow")},
    ],
    ids=["503", "502-html", "429", "read-timeout", "connect-timeout"],
)
def test_a_token_endpoint_that_is_down_is_a_transport_error_not_bad_credentials(requests_mock, answer):
    route = requests_mock.post(f"{API}/oauth/token", **answer)
    client = make_client(API, max_retries=2)
    with pytest.raises(M3terTransportError) as err:
        client.get_token()
    assert route.call_count == 3
    text = str(err.value)
    assert "POST /oauth/token" in text
    assert "Access Key id" not in text and "credentials" not in text.replace("not a credentials problem", "")


def test_a_token_endpoint_503_then_200_gives_a_token(requests_mock):
    route = requests_mock.post(
        f"{API}/oauth/token",
        [{"status_code": 503, "json": {}}, {"json": {"access_token": "tok", "expires_in": 3600}}],
    )
    client = make_client(API)
    assert client.get_token() == "tok"
    assert route.call_count == 2 and len(client.sleeps) == 1


@pytest.mark.parametrize("status", [400, 401, 403])
def test_only_400_401_403_at_the_token_endpoint_are_credential_errors(requests_mock, status):
    route = requests_mock.post(f"{API}/oauth/token", status_code=status, json={"error": "invalid_client"})
    client = make_client(API)
    with pytest.raises(M3terAuthError, match="Access Key id"):
        client.get_token()
    assert route.call_count == 1 and client.sleeps == []


# ---------------------------------------------------------------- bad inputs refused before sending
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"when": __import__("datetime").date(2026, 1, 1)}, "not JSON serializable"),
        ({"ids": {"a", "b"}}, "not JSON serializable"),
        ({"quantity": float("nan")}, "Out of range float"),
        ({"quantity": float("inf")}, "Out of range float"),
    ],
    ids=["date", "set", "nan", "inf"],
)
def test_a_body_that_is_not_json_is_a_named_error_before_sending(mocked, requests_mock, body, problem):
    with pytest.raises(M3terConfigError) as err:
        mocked.request("POST", "accounts", json=body)
    assert "POST /organizations/org-1/accounts: the json body cannot be sent as JSON" in str(err.value)
    assert problem in str(err.value)
    assert requests_mock.call_count == 0  # not even the token exchange


@pytest.mark.parametrize("token", [5, ["p2"], {"t": 1}, True])
def test_a_next_token_that_is_not_a_string_is_an_api_error(mocked, requests_mock, token):
    requests_mock.get(f"{API}{ACCOUNTS}", json={"data": [1], "nextToken": token})
    with pytest.raises(M3terError, match="nextToken that is not a string") as err:
        list(mocked.paginate("accounts"))
    assert type(err.value).__name__ == "M3terAPIError"
