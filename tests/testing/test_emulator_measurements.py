"""Measurement ingest: limits, validation, de-duplication, storage and stats."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import requests

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.measurements import MAX_REQUEST_BYTES
from tests.testing.helpers import know_meters

if TYPE_CHECKING:
    from tests.testing.helpers import Api


@pytest.fixture(autouse=True)
def _known_meters(emu: M3terEmulator) -> None:
    know_meters(emu, "api_calls", "m", "m" * 80)


def _m(i: int, **extra) -> dict:
    return {
        "uid": f"u{i}",
        "account": "acme",
        "meter": "api_calls",
        "ts": "2024-05-01T10:00:00Z",
        "measure": {"calls": 1},
        **extra,
    }


def test_accepts_and_stores_measurements(emu: M3terEmulator, api: Api) -> None:
    response = api.post("measurements", json={"measurements": [_m(1), _m(2)]})
    assert response.status_code == 200
    assert response.json() == {"result": "accepted"}
    assert [m["uid"] for m in emu.measurements()] == ["u1", "u2"]
    stats = emu.stats()
    assert stats["measurements_stored"] == 2
    assert stats["measurement_requests"] == 1
    assert stats["max_measurements_per_request"] == 2


def test_same_uid_is_accepted_but_stored_once(emu: M3terEmulator, api: Api) -> None:
    assert api.post("measurements", json={"measurements": [_m(1), _m(2)]}).status_code == 200
    again = api.post("measurements", json={"measurements": [_m(2), _m(3), _m(3)]})
    assert again.status_code == 200
    assert [m["uid"] for m in emu.measurements()] == ["u1", "u2", "u3"]
    assert emu.stats()["measurements_duplicates"] == 2


def test_measurements_without_uid_are_all_stored(emu: M3terEmulator, api: Api) -> None:
    item = {k: v for k, v in _m(0).items() if k != "uid"}
    api.post("measurements", json={"measurements": [item, item]})
    assert len(emu.measurements()) == 2


def test_item_count_limits(emu: M3terEmulator, api: Api) -> None:
    too_many = api.post("measurements", json={"measurements": [_m(i) for i in range(1001)]})
    assert too_many.status_code == 400
    assert "1000" in too_many.json()["message"]
    assert api.post("measurements", json={"measurements": []}).status_code == 400
    assert api.post("measurements", json={}).status_code == 400
    assert api.post("measurements", json={"measurements": [_m(i) for i in range(1000)]}).status_code == 200
    assert emu.stats()["max_measurements_per_request"] == 1001  # largest body seen, even rejected


def test_body_of_512000_bytes_or_more_answers_403(emu: M3terEmulator, api: Api) -> None:
    def body_of(size: int) -> bytes:
        base = json.dumps({"measurements": [_m(1, other={"pad": ""})]})
        return base.replace('"pad": ""', '"pad": "' + "x" * (size - len(base)) + '"').encode()

    at_limit = body_of(MAX_REQUEST_BYTES)
    assert len(at_limit) == MAX_REQUEST_BYTES
    headers = {"Content-Type": "application/json"}
    rejected = api.post("measurements", data=at_limit, headers=headers)
    assert rejected.status_code == 403
    assert "512000" in rejected.json()["message"]
    assert emu.measurements() == []
    under = body_of(MAX_REQUEST_BYTES - 1)
    assert api.post("measurements", data=under, headers=headers).status_code == 200
    assert emu.stats()["max_request_bytes"] == MAX_REQUEST_BYTES


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"account": None}, "account"),
        ({"meter": None}, "meter"),
        ({"ts": None}, "ts"),
        ({"account": "a" * 81}, "account"),
        ({"meter": "m" * 81}, "meter"),
        ({"uid": "u" * 51}, "uid"),
        ({"ts": "yesterday"}, "ts"),
        ({"ts": "2024-05-01T10:00:00"}, "ts"),  # date-time needs an offset
        ({"ets": "2024-13-01T00:00:00Z"}, "ets"),
        ({"measure": {"calls": "one"}}, "measure.calls"),
        ({"who": {"user": 7}}, "who.user"),
        ({"account": " acme"}, "account"),
    ],
)
def test_an_invalid_item_rejects_the_whole_request(
    emu: M3terEmulator, api: Api, change: dict, field: str
) -> None:
    bad = {k: v for k, v in {**_m(2), **change}.items() if v is not None}
    response = api.post("measurements", json={"measurements": [_m(1), bad]})
    assert response.status_code == 400
    assert f"measurements[1].{field}" in response.json()["message"]
    assert emu.measurements() == []


def test_boundary_lengths_and_timestamp_forms_are_accepted(emu: M3terEmulator, api: Api) -> None:
    items = [
        _m(1, account="a" * 80, meter="m" * 80, uid="u" * 50),
        _m(2, ts="2024-05-01T10:00:00.123+02:00", ets="2024-05-01T11:00:00.1234567Z"),
    ]
    assert api.post("measurements", json={"measurements": items}).status_code == 200
    assert len(emu.measurements()) == 2


def test_unknown_account_code_creates_a_skeleton_account(emu: M3terEmulator, api: Api) -> None:
    emu.seed("accounts", [{"code": "acme", "name": "Acme"}])
    api.post("measurements", json={"measurements": [_m(1), _m(2, account="newco")]})
    assert [a["code"] for a in emu.entities("accounts")] == ["acme", "newco"]


def test_measurements_listed_over_http(emu: M3terEmulator, api: Api) -> None:
    api.post("measurements", json={"measurements": [_m(1)]})
    listed = requests.get(f"{emu.url}/_emulator/measurements", timeout=5).json()
    assert [m["uid"] for m in listed["measurements"]] == ["u1"]


def test_chunked_request_body(emu: M3terEmulator, api: Api) -> None:
    payload = json.dumps({"measurements": [_m(1), _m(2)]}).encode()
    chunks = iter([payload[:10], payload[10:]])  # a generator body is sent chunked
    response = api.post("measurements", data=chunks, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert len(emu.measurements()) == 2
