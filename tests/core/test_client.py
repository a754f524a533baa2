"""M3terClient against requests-mock: request shapes, retries, token refresh, errors, paging."""

from __future__ import annotations

import base64
import json
import logging
from urllib.parse import parse_qs

import pytest
import requests

from m3ter_provider.core.client import M3terClient
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.tokens.cache import Token, TokenCache
from m3ter_provider.errors import (
    M3terAPIError,
    M3terAuthError,
    M3terRateLimitError,
    M3terTransportError,
)

API = "https://api.m3ter.test"
INGEST = "https://ingest.m3ter.test"
TOKEN_URL = f"{API}/oauth/token"
SECRET = "api-secret-do-not-leak"
ORG = "org-1"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(clock):
    settings = M3terSettings.from_connection_fields(
        "m3ter_test", login="AKID", password=SECRET, host=API, extra={"org_id": ORG, "max_retries": 3}
    )
    c = M3terClient(settings, user_agent="test-agent/1", token_cache=TokenCache(clock=clock))
    c.sleeps = []
    c.sleep = c.sleeps.append
    return c


def tokens(requests_mock, *values, expires_in=3600):
    answers = [
        {"json": {"access_token": v, "token_type": "Bearer", "expires_in": expires_in}} for v in values
    ]
    return requests_mock.post(TOKEN_URL, answers)


def test_token_exchange_is_form_encoded_with_basic_auth(client, requests_mock):
    token_route = tokens(requests_mock, "tok-1")
    accounts = requests_mock.get(f"{API}/organizations/{ORG}/accounts/a1", json={"id": "a1"})
    assert client.request("GET", "accounts/a1") == {"id": "a1"}
    exchange = token_route.last_request
    assert parse_qs(exchange.text) == {"grant_type": ["client_credentials"]}
    assert exchange.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert (
        exchange.headers["Authorization"] == "Basic " + base64.b64encode(f"AKID:{SECRET}".encode()).decode()
    )
    call = accounts.last_request
    assert call.headers["Authorization"] == "Bearer tok-1"
    assert call.headers["User-Agent"] == "test-agent/1"


def test_paths_relative_to_org_or_absolute(client, requests_mock):
    tokens(requests_mock, "tok")
    rel = requests_mock.get(f"{API}/organizations/{ORG}/meters", json={"data": []})
    absolute = requests_mock.get(f"{API}/organizations/other/meters", json={"data": []})
    client.request("GET", "meters")
    client.request("GET", "/organizations/other/meters")
    assert rel.call_count == absolute.call_count == 1


def test_list_params_are_comma_separated_and_empty_body_is_none(client, requests_mock):
    tokens(requests_mock, "tok")
    route = requests_mock.delete(f"{API}/organizations/{ORG}/accounts/a1", status_code=200, content=b"")
    assert (
        client.request("DELETE", "accounts/a1", params={"ids": ["a", "b"], "skip": None, "x": True}) is None
    )
    assert route.last_request.qs == {"ids": ["a,b"], "x": ["true"]}


def test_token_is_reused_and_refreshed_ahead_of_expiry(client, requests_mock, clock):
    token_route = tokens(requests_mock, "tok-1", "tok-2", expires_in=1000)
    requests_mock.get(f"{API}/organizations/{ORG}/organizationconfig", json={})
    for _ in range(5):
        client.request("GET", "organizationconfig")
    assert token_route.call_count == 1
    clock.now += 499  # min(300, 1000/2) = 300 s ahead of expiry: 1000 - 300 = 700 s of use
    client.request("GET", "organizationconfig")
    assert token_route.call_count == 1
    clock.now += 202
    client.request("GET", "organizationconfig")
    client.request("GET", "organizationconfig")
    assert token_route.call_count == 2
    assert client.get_token() == "tok-2"


def test_403_with_cached_token_refreshes_once_and_succeeds(client, requests_mock):
    token_route = tokens(requests_mock, "old", "new")
    requests_mock.get(f"{API}/organizations/{ORG}/organizationconfig", json={})
    client.request("GET", "organizationconfig")  # m3ter accepted "old": it is now a cached token
    route = requests_mock.get(
        f"{API}/organizations/{ORG}/accounts",
        [{"status_code": 403, "json": {"message": "Token expired"}}, {"json": {"data": []}}],
    )
    assert client.request("GET", "accounts") == {"data": []}
    assert token_route.call_count == 2
    assert [r.headers["Authorization"] for r in route.request_history] == ["Bearer old", "Bearer new"]


def test_second_refusal_is_an_auth_error_not_a_loop(client, requests_mock):
    token_route = tokens(requests_mock, "t1", "t2", "t3")
    requests_mock.get(f"{API}/organizations/{ORG}/organizationconfig", json={})
    client.request("GET", "organizationconfig")
    route = requests_mock.get(
        f"{API}/organizations/{ORG}/accounts", status_code=403, json={"message": "Forbidden"}
    )
    with pytest.raises(M3terAuthError) as err:
        client.request("GET", "accounts")
    assert route.call_count == 2
    assert token_route.call_count == 2
    text = str(err.value)
    assert f"GET /organizations/{ORG}/accounts" in text
    assert "403" in text and "Forbidden" in text and "'m3ter_test'" in text


@pytest.mark.parametrize("status", [401, 403])
def test_a_fresh_token_refused_is_an_org_or_permission_problem_without_a_second_exchange(
    client, requests_mock, status
):
    token_route = tokens(requests_mock, "t1", "t2")
    route = requests_mock.get(
        f"{API}/organizations/{ORG}/accounts", status_code=status, json={"message": "Forbidden"}
    )
    with pytest.raises(M3terAuthError) as err:
        client.request("GET", "accounts")
    assert (route.call_count, token_route.call_count) == (1, 1)
    text = str(err.value)
    assert f"HTTP {status}" in text and "org_id 'org-1'" in text and "permissions" in text
    assert "Access Key id" not in text  # not sent to check the secret: the exchange worked


def test_a_token_another_thread_proved_meanwhile_is_refreshed_when_refused(client, requests_mock):
    """A call sent with a new token is retried (503) while another thread's call proves that token;
    m3ter then expires it: the retry's 403 is an expired token, not an org problem (the CI soak)."""
    token_route = tokens(requests_mock, "t1", "t2")

    def unavailable_while_another_thread_proves_t1(request, context):
        client.tokens.accepted(Token(value="t1", expires_at=9e9, refresh_at=9e9))
        context.status_code = 503
        return {"message": "Service Unavailable"}

    route = requests_mock.post(
        f"{INGEST}/organizations/{ORG}/measurements",
        [
            {"json": unavailable_while_another_thread_proves_t1},
            {"status_code": 403, "json": {"message": "Forbidden: the bearer token has expired"}},
            {"json": {"result": "accepted"}},
        ],
    )
    answer = client.request(
        "POST", "measurements", json={"measurements": []}, idempotent=True, ingest_api=True
    )
    assert answer == {"result": "accepted"}
    assert token_route.call_count == 2
    assert [r.headers["Authorization"] for r in route.request_history] == [
        "Bearer t1",
        "Bearer t1",
        "Bearer t2",
    ]


@pytest.mark.parametrize(
    "body",
    [{"message": "Bad credentials"}, {"error": "invalid_client", "error_description": "Bad credentials"}],
)
def test_wrong_credentials_fail_fast_with_a_clear_message(client, requests_mock, body):
    token_route = requests_mock.post(TOKEN_URL, status_code=401, json=body)
    api = requests_mock.get(f"{API}/organizations/{ORG}/accounts", json={})
    with pytest.raises(M3terAuthError) as err:
        client.request("GET", "accounts")
    assert token_route.call_count == 1
    assert api.call_count == 0
    assert client.sleeps == []
    text = str(err.value)
    assert "POST /oauth/token" in text and "HTTP 401" in text and "Bad credentials" in text
    assert "'m3ter_test'" in text and "Access Key id" in text
    assert SECRET not in text


def test_429_honours_retry_after_seconds_and_http_dates(client, requests_mock):
    tokens(requests_mock, "tok")
    route = requests_mock.get(
        f"{API}/organizations/{ORG}/meters",
        [
            {"status_code": 429, "headers": {"Retry-After": "7"}, "json": {"message": "slow down"}},
            {"status_code": 429, "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, "json": {}},
            {"status_code": 503, "json": {"message": "busy"}},
            {"json": {"data": [1]}},
        ],
    )
    assert client.request("GET", "meters") == {"data": [1]}
    assert route.call_count == 4
    assert client.sleeps[0] == 7.0
    assert client.sleeps[1] == 0.0  # a date in the past means now
    assert 0 <= client.sleeps[2] <= 0.5 * 4  # full jitter, third retry: ceiling 0.5 * 2**2


def test_retries_stop_at_max_retries(client, requests_mock):
    tokens(requests_mock, "tok")
    route = requests_mock.get(
        f"{API}/organizations/{ORG}/meters", status_code=429, json={"message": "Too many"}
    )
    with pytest.raises(M3terRateLimitError) as err:
        client.request("GET", "meters")
    assert route.call_count == 4  # 1 + max_retries (3)
    assert len(client.sleeps) == 3
    assert "after 4 attempts" in str(err.value)


def test_a_create_is_not_retried_where_m3ter_may_have_processed_it(client, requests_mock):
    tokens(requests_mock, "tok")
    route = requests_mock.post(
        f"{API}/organizations/{ORG}/billjobs", status_code=500, json={"message": "oops"}
    )
    with pytest.raises(M3terAPIError, match="HTTP 500"):
        client.request("POST", "billjobs", json={})
    assert route.call_count == 1
    route = requests_mock.post(
        f"{API}/organizations/{ORG}/billjobs", [{"status_code": 503, "json": {}}, {"json": {"id": "bj"}}]
    )
    assert client.request("POST", "billjobs", json={}) == {"id": "bj"}
    assert route.call_count == 2


def test_a_dropped_connection_retries_reads_but_not_creates(client, requests_mock):
    tokens(requests_mock, "tok")
    requests_mock.get(
        f"{API}/organizations/{ORG}/plans",
        [{"exc": requests.exceptions.ConnectionError("reset")}, {"json": {"data": []}}],
    )
    assert client.request("GET", "plans") == {"data": []}
    create = requests_mock.post(
        f"{API}/organizations/{ORG}/plans", exc=requests.exceptions.ReadTimeout("slow")
    )
    with pytest.raises(M3terTransportError, match="may have processed it"):
        client.request("POST", "plans", json={"name": "p"})
    assert create.call_count == 1


def test_errors_carry_method_path_status_and_message(client, requests_mock):
    tokens(requests_mock, "secret-token-value")
    requests_mock.get(
        f"{API}/organizations/{ORG}/accounts/nope", status_code=404, json={"message": "No such"}
    )
    with pytest.raises(M3terAPIError) as err:
        client.request("GET", "accounts/nope")
    assert err.value.status == 404
    assert err.value.m3ter_message == "No such"
    assert str(err.value).startswith(f"GET /organizations/{ORG}/accounts/nope")
    assert "secret-token-value" not in str(err.value)


def test_paginate_follows_next_token_lazily(client, requests_mock):
    tokens(requests_mock, "tok")
    route = requests_mock.get(
        f"{API}/organizations/{ORG}/accounts",
        [
            {"json": {"data": [1, 2], "nextToken": "p2"}},
            {"json": {"data": [3, 4], "nextToken": "p3"}},
            {"json": {"data": [5]}},
        ],
    )
    items = client.paginate("accounts", params={"codes": ["a", "b"]}, page_size=2)
    assert route.call_count == 0  # lazy
    assert next(items) == 1
    assert route.call_count == 1
    assert list(items) == [2, 3, 4, 5]
    assert [r.qs for r in route.request_history] == [
        {"codes": ["a,b"], "pagesize": ["2"]},
        {"codes": ["a,b"], "pagesize": ["2"], "nexttoken": ["p2"]},
        {"codes": ["a,b"], "pagesize": ["2"], "nexttoken": ["p3"]},
    ]


def test_paginate_refuses_a_repeated_next_token(client, requests_mock):
    tokens(requests_mock, "tok")
    requests_mock.get(f"{API}/organizations/{ORG}/accounts", json={"data": [1], "nextToken": "same"})
    with pytest.raises(M3terAPIError, match="repeated a nextToken"):
        list(client.paginate("accounts"))


def test_submit_measurements_posts_to_the_ingest_url(requests_mock, clock):
    settings = M3terSettings.from_connection_fields(
        "m3ter_test", login="AKID", password=SECRET, host=API, extra={"org_id": ORG, "ingest_url": INGEST}
    )
    client = M3terClient(settings, token_cache=TokenCache(clock=clock))
    tokens(requests_mock, "tok")
    route = requests_mock.post(f"{INGEST}/organizations/{ORG}/measurements", json={"result": "accepted"})
    rows = [{"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z"} for _ in range(1500)]
    summary = client.submit_measurements(rows)
    assert summary["measurements"] == 1500 and summary["requests"] == 2
    assert [len(r.json()["measurements"]) for r in route.request_history] == [1000, 500]
    assert route.last_request.headers["Content-Type"] == "application/json"


def test_ingest_threads_never_mask_a_token_the_calling_thread_did_not(requests_mock, clock):
    """Masking tells Airflow's supervisor, over a channel Airflow 3.0/3.1 do not guard: the ingest
    gets its token on the calling thread before any batch thread starts, and masks it once."""
    import threading

    masked: list[tuple[str, str]] = []
    settings = M3terSettings.from_connection_fields(
        "m3ter_test", login="AKID", password=SECRET, host=API, extra={"org_id": ORG, "ingest_url": INGEST}
    )
    client = M3terClient(
        settings,
        token_cache=TokenCache(clock=clock),
        on_secret=lambda value: masked.append((value, threading.current_thread().name)),
    )
    tokens(requests_mock, "tok")
    requests_mock.post(f"{INGEST}/organizations/{ORG}/measurements", json={"result": "accepted"})
    rows = [{"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z"} for _ in range(6000)]
    assert client.submit_measurements(rows, concurrency=4)["requests"] == 6
    main = threading.current_thread().name
    assert masked == [(SECRET, main), ("tok", main)]


def test_threads_meeting_a_new_token_together_mask_it_once(client, requests_mock):
    import threading
    import time

    masked: list[str] = []

    def slow_mask(value: str) -> None:  # Airflow's masker recompiles a regex: others arrive meanwhile
        time.sleep(0.05)
        masked.append(value)

    client.tokens._on_secret = slow_mask
    tokens(requests_mock, "tok")
    start = threading.Barrier(8)

    def current():
        start.wait()
        client.tokens.current()

    threads = [threading.Thread(target=current) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert masked == ["tok"]


def test_bad_measurements_send_nothing(client, requests_mock):
    token_route = tokens(requests_mock, "tok")
    rows = [{"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z"}, {"account": "a", "meter": "m"}]
    with pytest.raises(ValueError, match="'ts' is required"):
        client.submit_measurements(rows)
    assert token_route.call_count == 0
    assert len(requests_mock.request_history) == 0


def test_secret_and_tokens_stay_out_of_logs_reprs_and_errors(client, requests_mock, caplog):
    caplog.set_level(logging.DEBUG)
    tokens(requests_mock, "tok-abcdef-123456", "tok-ghijkl-789012")
    requests_mock.get(f"{API}/organizations/{ORG}/organizationconfig", json={})
    client.request("GET", "organizationconfig")
    requests_mock.get(
        f"{API}/organizations/{ORG}/accounts",
        [{"status_code": 403, "json": {"message": "expired"}}, {"status_code": 500, "json": {"message": "x"}}]
        + [{"status_code": 500, "json": {"message": "x"}}] * 5,
    )
    with pytest.raises(M3terAPIError) as err:
        client.request("GET", "accounts")
    seen = [
        caplog.text,
        str(err.value),
        repr(err.value),
        repr(client),
        repr(client.settings),
        repr(client.credentials),
    ]
    for text in seen:
        for secret in (SECRET, "tok-abcdef-123456", "tok-ghijkl-789012", "Bearer", "Basic "):
            assert secret not in text


def test_on_secret_sees_the_secret_and_every_new_token(requests_mock, clock):
    settings = M3terSettings.from_connection_fields(
        "m3ter_test", login="AKID", password=SECRET, host=API, extra={"org_id": ORG}
    )
    masked = []
    client = M3terClient(settings, on_secret=masked.append, token_cache=TokenCache(clock=clock))
    tokens(requests_mock, "tok-1", "tok-2", expires_in=100)
    requests_mock.get(f"{API}/organizations/{ORG}/organizationconfig", json={})
    client.request("GET", "organizationconfig")
    client.request("GET", "organizationconfig")
    clock.now += 60
    client.request("GET", "organizationconfig")
    assert masked == [SECRET, "tok-1", "tok-2"]


def test_json_body_is_sent_compact(client, requests_mock):
    tokens(requests_mock, "tok")
    route = requests_mock.post(f"{API}/organizations/{ORG}/accounts", json={"id": "x"})
    client.request("POST", "accounts", json={"code": "acme", "name": "Acme"})
    assert json.loads(route.last_request.body) == {"code": "acme", "name": "Acme"}


def test_connection_refused_is_retried_even_for_a_create(clock):
    import socket

    with socket.socket() as probe:  # a local port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = M3terSettings.from_connection_fields(
        "m3ter_down", login="AKID", password=SECRET, host=f"http://127.0.0.1:{port}", extra={"org_id": ORG}
    )
    cache = TokenCache(clock=clock)
    client = M3terClient(settings, token_cache=cache)
    client.sleeps = []
    client.sleep = client.sleeps.append
    with pytest.raises(M3terTransportError) as err:  # the token exchange itself
        client.get_token()
    assert "POST /oauth/token" in str(err.value) and "connection refused" in str(err.value)
    assert "after 6 attempts" in str(err.value) and "'m3ter_down'" in str(err.value)
    # with a cached token, the create itself meets the refused connection: m3ter never saw it
    cache.get(client.credentials, lambda _c: Token(value="cached", expires_at=1e12, refresh_at=1e12))
    client.sleeps.clear()
    with pytest.raises(M3terTransportError) as err:
        client.request("POST", "billjobs", json={})
    assert "POST /organizations/org-1/billjobs" in str(err.value)
    assert "after 6 attempts" in str(err.value)
    assert len(client.sleeps) == 5
