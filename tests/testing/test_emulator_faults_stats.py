"""Fault injection (status, Retry-After, delay, drop) and the stats counters."""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING

import pytest
import requests

from m3ter_provider.testing import M3terEmulator
from tests.testing.helpers import know_meters

if TYPE_CHECKING:
    from tests.testing.helpers import Api

MEASUREMENTS = "POST /organizations/{orgId}/measurements"
ACCOUNTS = "/organizations/{orgId}/accounts"
ONE = {"measurements": [{"uid": "u1", "account": "acme", "meter": "m", "ts": "2024-05-01T10:00:00Z"}]}


@pytest.fixture(autouse=True)
def _known_meters(emu: M3terEmulator) -> None:
    know_meters(emu, "m")


def test_status_fault_counts_down_and_stores_nothing(emu: M3terEmulator, api: Api) -> None:
    emu.add_fault(MEASUREMENTS, status=429, times=2)
    first = api.post("measurements", json=ONE)
    second = api.post("measurements", json=ONE)
    third = api.post("measurements", json=ONE)
    assert [first.status_code, second.status_code, third.status_code] == [429, 429, 200]
    assert first.json()["message"]
    assert "Retry-After" not in first.headers
    assert len(emu.measurements()) == 1
    stats = emu.stats()
    assert stats["requests"][MEASUREMENTS] == 3
    assert stats["statuses"][MEASUREMENTS] == {"429": 2, "200": 1}
    assert stats["measurement_requests"] == 1  # fault-answered calls never reach the handler


def test_status_fault_with_retry_after_and_custom_body(emu: M3terEmulator, api: Api) -> None:
    emu.add_fault(MEASUREMENTS, status=503, retry_after="1", body={"message": "try later"})
    response = api.post("measurements", json=ONE)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.json() == {"message": "try later"}


def test_template_without_method_matches_any_method(emu: M3terEmulator, api: Api) -> None:
    emu.add_fault(ACCOUNTS, status=500, times=2)
    assert api.get("accounts").status_code == 500
    assert api.post("accounts", json={}).status_code == 500
    assert api.get("accounts").status_code == 200


def test_fault_on_the_token_endpoint_and_before_auth(emu: M3terEmulator) -> None:
    emu.add_fault("POST /oauth/token", status=429)
    response = requests.post(
        f"{emu.url}/oauth/token", auth=("x", "y"), data={"grant_type": "client_credentials"}, timeout=5
    )
    assert response.status_code == 429
    assert emu.stats()["token_failures"] == 0


def test_unlimited_fault_until_cleared(emu: M3terEmulator, api: Api) -> None:
    emu.add_fault("GET " + ACCOUNTS, status=502, times=None)
    assert [api.get("accounts").status_code for _ in range(3)] == [502, 502, 502]
    emu.clear_faults()
    assert api.get("accounts").status_code == 200


def test_delay_fault_then_answers_normally(emu: M3terEmulator, api: Api) -> None:
    emu.add_fault("GET " + ACCOUNTS, delay=0.3)
    started = time.monotonic()
    response = api.get("accounts")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3  # a sleep guarantees the lower bound
    assert requests.get(f"{emu.url}/_emulator/faults", timeout=5).json()["faults"] == []  # used up
    assert api.get("accounts").status_code == 200


def test_drop_fault_closes_the_connection(emu: M3terEmulator, api: Api) -> None:
    emu.add_fault(MEASUREMENTS, drop=True)
    with pytest.raises(requests.ConnectionError):
        api.post("measurements", json=ONE)
    assert emu.measurements() == []
    assert api.post("measurements", json=ONE).status_code == 200
    assert emu.stats()["statuses"][MEASUREMENTS] == {"dropped": 1, "200": 1}


def test_faults_over_http(emu: M3terEmulator, api: Api) -> None:
    added = requests.post(
        f"{emu.url}/_emulator/faults",
        json={"route": MEASUREMENTS, "status": 429, "times": 1, "retry_after": "2"},
        timeout=5,
    )
    assert added.status_code == 200
    assert requests.get(f"{emu.url}/_emulator/faults", timeout=5).json()["faults"][0]["status"] == 429
    response = api.post("measurements", json=ONE)
    assert (response.status_code, response.headers["Retry-After"]) == (429, "2")
    requests.post(f"{emu.url}/_emulator/faults", json={"route": MEASUREMENTS, "status": 500}, timeout=5)
    assert requests.delete(f"{emu.url}/_emulator/faults", timeout=5).json() == {"cleared": 1}
    assert api.post("measurements", json=ONE).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"route": "accounts", "status": 500},
        {"route": MEASUREMENTS},
        {"route": MEASUREMENTS, "status": 1000},
        {"route": MEASUREMENTS, "status": 429, "times": 0},
        {"route": MEASUREMENTS, "status": 429, "bogus": 1},
    ],
)
def test_invalid_faults_are_rejected(emu: M3terEmulator, body: dict) -> None:
    assert requests.post(f"{emu.url}/_emulator/faults", json=body, timeout=5).status_code == 400


def test_invalid_fault_in_python_raises(emu: M3terEmulator) -> None:
    with pytest.raises(ValueError, match="route 'FETCH /x': expected 'METHOD /template'"):
        emu.add_fault("FETCH /x", status=500)


def test_stats_count_requests_statuses_and_tokens(emu: M3terEmulator, api: Api) -> None:
    api.get("accounts")
    api.get("accounts", params={"pageSize": 1000})
    api.get("nothing")
    stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
    assert stats["token_exchanges"] == 1
    assert stats["requests"]["POST /oauth/token"] == 1
    assert stats["requests"]["GET " + ACCOUNTS] == 2
    assert stats["statuses"]["GET " + ACCOUNTS] == {"200": 1, "400": 1}
    assert stats["requests"]["GET (unmatched)"] == 1
    assert stats["requests_total"] == 4  # control routes are not counted
    assert stats["authorization_on_download"] == 0


def test_reset_clears_data_stats_faults_and_tokens(emu: M3terEmulator, api: Api) -> None:
    api.post("measurements", json=ONE)
    emu.seed("accounts", [{"code": "x", "name": "x"}])
    emu.add_fault(MEASUREMENTS, status=500)
    assert requests.post(f"{emu.url}/_emulator/reset", timeout=5).status_code == 200
    assert emu.measurements() == []
    assert emu.entities("accounts") == []
    assert emu.stats()["requests_total"] == 0
    assert api.get("accounts").status_code == 403  # the old token is gone
    fresh = type(api)(emu)
    assert fresh.post("measurements", json=ONE).status_code == 200  # the fault is gone and uids forgotten
    emu.reset()
    assert emu.measurements() == []


def test_keep_alive_serves_many_requests_on_one_fast_connection(emu: M3terEmulator, api: Api) -> None:
    before = emu.stats()["connections_accepted"]
    for _ in range(20):
        response = api.post("measurements", json=ONE)
        assert int(response.headers["Content-Length"]) == len(response.content)
    assert emu.stats()["connections_accepted"] - before <= 1
    # Nagle's algorithm would add ~40 ms per response: every accepted socket has TCP_NODELAY set
    open_sockets = list(emu._server._open)
    assert open_sockets
    assert all(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for sock in open_sockets)


def test_stop_closes_kept_alive_connections() -> None:
    emu = M3terEmulator().start()
    session = requests.Session()
    url = f"{emu.url}/_emulator/stats"
    assert session.get(url, timeout=5).status_code == 200
    emu.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url, timeout=5)
