"""m3ter's published rate limits in the emulator: counts of 429s under a frozen or stepped clock."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest
import requests

from m3ter_provider.testing import M3terEmulator, RateLimits
from m3ter_provider.testing.cli import build_parser, limits_from_args
from m3ter_provider.testing.limits import INGEST_ROUTE, USAGE_QUERY_ROUTE, RateLimiter
from tests.testing.helpers import Api

ACCOUNTS_ROUTE = "GET /organizations/{orgId}/accounts"
MEASUREMENT = {"uid": "u1", "account": "acme", "meter": "api_calls", "ts": "2024-05-01T10:00:00Z"}
USAGE_QUERY = {"startDate": "2024-05-01T00:00:00Z", "endDate": "2024-06-01T00:00:00Z", "limit": 1}


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def refusals(limiter: RateLimiter, route: str, n: int, client: str = "10.0.0.1", step: float = 0.0) -> list:
    """Send ``n`` requests to the limiter, the clock moving ``step`` seconds after each; the refusals."""
    clock = limiter.clock
    refused = []
    for _ in range(n):
        refusal = limiter.check(route, client)
        if refusal is not None:
            refused.append(refusal)
        clock.now += step
    return refused


# -- the limiter, with m3ter's real figures -------------------------------------------------------
def test_ingest_allows_50_requests_per_second_per_organization() -> None:
    limiter = RateLimiter(RateLimits(), Clock())
    refused = refusals(limiter, INGEST_ROUTE, 60)
    assert len(refused) == 10 and {r.limit for r in refused} == {"ingest_per_second"}
    assert len(refusals(limiter, INGEST_ROUTE, 60, client="10.0.0.2")) == 60  # per org, not per IP
    limiter.clock.now += 1.0
    assert len(refusals(limiter, INGEST_ROUTE, 60)) == 10


def test_the_config_api_allows_50_per_second_apart_from_ingest() -> None:
    limiter = RateLimiter(RateLimits(), Clock())
    assert len(refusals(limiter, INGEST_ROUTE, 50)) == 0
    refused = refusals(limiter, ACCOUNTS_ROUTE, 51)
    assert [r.limit for r in refused] == ["config_per_second"]


def test_the_per_second_window_slides() -> None:
    """At most 50 in any second: 50 at t, then at t+0.5 none, at t+1 50 again."""
    limiter = RateLimiter(RateLimits(), Clock())
    assert not refusals(limiter, ACCOUNTS_ROUTE, 50)
    limiter.clock.now += 0.5
    assert len(refusals(limiter, ACCOUNTS_ROUTE, 5)) == 5
    limiter.clock.now += 0.5
    assert not refusals(limiter, ACCOUNTS_ROUTE, 50)


def test_ingest_allows_5000_requests_per_rolling_5_minutes_per_ip() -> None:
    limiter = RateLimiter(RateLimits(), Clock())
    # 40 requests/second (under the 50/s per Organization) for 5,001 requests: 125 s, inside 5 minutes
    refused = refusals(limiter, INGEST_ROUTE, 5001, step=0.025)
    assert [r.limit for r in refused] == ["ingest_per_ip"]
    assert 174 < refused[0].wait <= 175  # the first request leaves the window 300 s after it was sent
    assert not refusals(limiter, INGEST_ROUTE, 10, client="10.0.0.9", step=0.025)  # another IP
    limiter.clock.now += 175
    assert not refusals(limiter, INGEST_ROUTE, 10, step=0.025)


def test_the_config_api_allows_20000_requests_per_rolling_5_minutes_per_ip() -> None:
    # 50/s per Organization allows only 15,000 in 5 minutes: with the per-second limit off, 20,000 pass
    limiter = RateLimiter(RateLimits(config_per_second=None), Clock())
    refused = refusals(limiter, ACCOUNTS_ROUTE, 20_005, step=0.001)
    assert [r.limit for r in refused] == ["config_per_ip"] * 5
    limiter.clock.now += 300
    assert not refusals(limiter, ACCOUNTS_ROUTE, 100)


def test_usage_query_allows_a_burst_of_20_then_2_per_second() -> None:
    limiter = RateLimiter(RateLimits(), Clock())
    refused = refusals(limiter, USAGE_QUERY_ROUTE, 25)
    assert [r.limit for r in refused] == ["usage_query"] * 5
    assert refused[0].wait == pytest.approx(0.5)
    limiter.clock.now += 1.0
    assert len(refusals(limiter, USAGE_QUERY_ROUTE, 3)) == 1
    limiter.clock.now += 10.0  # refills up to the burst, no further
    assert len(refusals(limiter, USAGE_QUERY_ROUTE, 25)) == 5


def test_a_refused_request_uses_no_quota_and_limits_can_be_off() -> None:
    limiter = RateLimiter(RateLimits(ingest_per_second=2), Clock())
    assert len(refusals(limiter, INGEST_ROUTE, 10)) == 8
    limiter.clock.now += 1.0
    assert len(refusals(limiter, INGEST_ROUTE, 3)) == 1
    assert not refusals(RateLimiter(RateLimits.off(), Clock()), INGEST_ROUTE, 10_000)
    assert not refusals(RateLimiter(RateLimits(ingest_per_second=None), Clock()), INGEST_ROUTE, 1000)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ingest_per_secnd": 3}, "ingest_per_secnd"),
        ({"ingest_per_second": -1}, "ingest_per_second"),
        ({"ingest_per_second": "50"}, "ingest_per_second"),
        ({"enabled": "no"}, "enabled"),
        ({"ip_window": 0}, "ip_window"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(changes: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RateLimits().updated(changes)


# -- over HTTP ----------------------------------------------------------------------------------
@pytest.fixture
def frozen() -> Clock:
    return Clock()


def _ingest(api: Api, n: int) -> list[requests.Response]:
    return [
        api.post("measurements", json={"measurements": [dict(MEASUREMENT, uid=f"u{i}")]}) for i in range(n)
    ]


def test_a_burst_of_55_measurement_requests_gets_exactly_5_429s(frozen: Clock) -> None:
    with M3terEmulator(clock=frozen) as emu:
        api = Api(emu)
        answers = _ingest(api, 55)
        stats = emu.stats()
    assert [r.status_code for r in answers] == [200] * 50 + [429] * 5
    refused = answers[-1]
    message = "Too Many Requests: over the ingest API limit of 50 requests per second for the Organization"
    assert refused.json() == {"message": message}
    assert "Retry-After" not in refused.headers  # m3ter documents none
    assert stats["statuses"][INGEST_ROUTE] == {"200": 50, "429": 5}
    assert stats["rate_limited"] == {INGEST_ROUTE: 5}
    assert stats["rate_limited_by"] == {"ingest_per_second": 5}
    assert stats["clients"]["127.0.0.1"]["rate_limited"] == 5


def test_a_delayed_request_still_counts_against_the_limits(frozen: Clock) -> None:
    """A fault with only a delay (added latency) answers normally: the limits apply to it as to any."""
    with M3terEmulator(clock=frozen, limits={"ingest_per_second": 3}) as emu:
        emu.add_fault(INGEST_ROUTE, delay=0.01, times=None)
        answers = _ingest(Api(emu), 5)
        stats = emu.stats()
    assert [r.status_code for r in answers] == [200] * 3 + [429] * 2
    assert stats["rate_limited_by"] == {"ingest_per_second": 2}
    assert stats["statuses"][INGEST_ROUTE] == {"200": 3, "429": 2}


def test_retry_after_is_sent_only_when_asked(frozen: Clock) -> None:
    with M3terEmulator(clock=frozen, retry_after=True, limits={"config_per_second": 3}) as emu:
        api = Api(emu)
        answers = [api.get("accounts") for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert answers[-1].headers["Retry-After"] == "1"
        emu.set_limits(retry_after=False)
        assert "Retry-After" not in api.get("accounts").headers


def test_usage_queries_over_the_burst_answer_429(frozen: Clock) -> None:
    with M3terEmulator(clock=frozen, retry_after=True) as emu:
        api = Api(emu)
        answers = [api.post("usage/query", json=USAGE_QUERY) for _ in range(22)]
        assert [r.status_code for r in answers].count(429) == 2
        assert answers[-1].headers["Retry-After"] == "1"  # 0.5 s until the next token, rounded up
        frozen.now += 0.5
        assert api.post("usage/query", json=USAGE_QUERY).status_code == 200
        assert emu.stats()["rate_limited"] == {USAGE_QUERY_ROUTE: 2}


def test_limits_change_and_turn_off_per_instance_and_over_the_control_api(frozen: Clock) -> None:
    with M3terEmulator(clock=frozen, limits=False) as emu:
        api = Api(emu)
        assert all(r.status_code == 200 for r in _ingest(api, 60))
        control = f"{emu.url}/_emulator/limits"
        assert requests.get(control, timeout=5).json()["limits"]["enabled"] is False
        changed = requests.post(control, json={"enabled": True, "ingest_per_second": 70}, timeout=5)
        assert changed.json()["limits"]["ingest_per_second"] == 70 and emu.limits.enabled
        assert [r.status_code for r in _ingest(api, 80)].count(429) == 10
        bad = requests.post(control, json={"ingest_per_second": "lots"}, timeout=5)
        assert bad.status_code == 400 and "ingest_per_second" in bad.json()["message"]
        frozen.now += 1
        emu.set_limits(RateLimits.off())
        assert all(r.status_code == 200 for r in _ingest(api, 80))


def test_the_token_endpoint_and_control_routes_are_not_limited(frozen: Clock) -> None:
    with M3terEmulator(clock=frozen, limits={"config_per_second": 1}) as emu:
        for _ in range(3):
            Api(emu)  # a token exchange each
        assert all(requests.get(f"{emu.url}/_emulator/stats", timeout=5).ok for _ in range(3))
        assert emu.stats()["rate_limited"] == {}


def test_bill_jobs_over_the_concurrent_cap_answer_429_unless_limits_are_off() -> None:
    with M3terEmulator(job_duration=30, limits={"concurrent_bill_jobs": 2}, retry_after=True) as emu:
        api = Api(emu)
        assert [api.post("billjobs", json={}).status_code for _ in range(3)] == [200, 200, 429]
        refused = api.post("billjobs", json={})
        assert refused.json()["message"] == "Too many BillJobs: 2 are already running (maximum 2)"
        assert refused.headers["Retry-After"] == "30"
        assert emu.stats()["rate_limited_by"] == {"concurrent_bill_jobs": 2}
        emu.set_limits(enabled=False)
        assert api.post("billjobs", json={}).status_code == 200


# -- per-client attribution -----------------------------------------------------------------------
def _from(
    source: str, emu: M3terEmulator, token: str, method: str, path: str, body: dict | None = None
) -> int:
    """One request sent from the local address ``source`` (127.0.0.x: every one is loopback on Linux)."""
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5, source_address=(source, 0))
    try:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        payload = None if body is None else json.dumps(body)
        connection.request(method, f"/organizations/{emu.org_id}/{path}", body=payload, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])  # noqa: S104 - the test binds all interfaces
def test_requests_are_counted_per_client_address(host: str, frozen: Clock) -> None:
    with M3terEmulator(host=host, clock=frozen) as emu:
        token = Api(emu).token
        for source, count in (("127.0.0.2", 3), ("127.0.0.3", 5)):
            for _ in range(count):
                assert _from(source, emu, token, "GET", "accounts") == 200
        clients = emu.stats()["clients"]
    assert clients["127.0.0.2"] == {"requests": 3, "rate_limited": 0, "routes": {ACCOUNTS_ROUTE: 3}}
    assert clients["127.0.0.3"]["requests"] == 5
    assert clients["127.0.0.1"]["routes"] == {"POST /oauth/token": 1}


def test_the_per_ip_limit_keys_on_the_source_address(frozen: Clock) -> None:
    with M3terEmulator(clock=frozen, limits={"ingest_per_ip": 3, "ingest_per_second": None}) as emu:
        token = Api(emu).token
        body = {"measurements": [MEASUREMENT]}
        first = [_from("127.0.0.2", emu, token, "POST", "measurements", body) for _ in range(5)]
        second = [_from("127.0.0.3", emu, token, "POST", "measurements", body) for _ in range(3)]
        stats = emu.stats()
    assert first == [200, 200, 200, 429, 429] and second == [200, 200, 200]
    assert stats["clients"]["127.0.0.2"]["rate_limited"] == 2
    assert stats["clients"]["127.0.0.3"]["rate_limited"] == 0
    assert stats["rate_limited_by"] == {"ingest_per_ip": 2}


# -- the command line -------------------------------------------------------------------------------
def test_cli_flags_set_the_limits() -> None:
    parse = build_parser().parse_args
    assert limits_from_args(parse([])) == RateLimits()
    assert limits_from_args(parse(["--no-limits"])).enabled is False
    chosen = limits_from_args(
        parse(
            ["--ingest-per-second", "10", "--config-per-ip", "0", "--usage-query-burst", "5", "--retry-after"]
        )
    )
    assert chosen == RateLimits(
        ingest_per_second=10, config_per_ip=None, usage_query_burst=5, retry_after=True
    )


def test_the_command_serves_with_the_limits_it_was_given() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "m3ter_provider.testing",
            "--port",
            "0",
            "--ingest-per-second",
            "7",
            "--retry-after",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        limits = requests.get(f"{url}/_emulator/limits", timeout=5).json()["limits"]
        assert (
            limits["ingest_per_second"] == 7 and limits["retry_after"] is True and limits["enabled"] is True
        )
        lines = [process.stdout.readline() for _ in range(4)]
        assert any(line.startswith("Rate limits: ") and "ingest_per_second=7" in line for line in lines), (
            lines
        )
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
        process.stdout.close()


# -- the pytest plugin ---------------------------------------------------------------------------
def test_the_plugin_fixture_enforces_the_limits_by_default(m3ter_emulator: M3terEmulator) -> None:
    assert m3ter_emulator.limits == RateLimits()


@pytest.mark.m3ter_emulator(limits=False, retry_after=True)
def test_the_plugin_fixture_takes_emulator_arguments_from_a_marker(m3ter_emulator: M3terEmulator) -> None:
    assert m3ter_emulator.limits.enabled is False and m3ter_emulator.limits.retry_after is True
