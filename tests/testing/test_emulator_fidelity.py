"""Gaps Schemathesis found between the emulator and m3ter's spec, each closed: methods, patterns,
integer formats, nulls, emails."""

from __future__ import annotations

import http.client

import pytest

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.common import ApiError
from m3ter_provider.testing.spec import clean
from tests.testing.helpers import Api

ACCOUNT = {"code": "acme", "name": "Acme", "emailAddress": "billing@acme.test"}
SCHEDULE = {"sourceType": "OPERATIONAL", "code": "nightly", "name": "Nightly",
            "operationalDataTypes": ["BILLS"], "scheduleType": "DAY", "period": 1}  # fmt: skip
DESTINATION = {"destinationType": "S3", "code": "lake", "name": "Lake", "bucketName": "usage",
               "iamRoleArn": "arn:aws:iam::123456789012:role/x"}  # fmt: skip


def _raw(emu: M3terEmulator, method: str, path: str, token: str) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    try:
        connection.request(method, path, headers={"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("method", ["QUERY", "PROPFIND", "BREW", "PATCH", "CONNECT"])
def test_an_unserved_method_answers_a_json_405_with_allow(emu: M3terEmulator, api: Api, method: str) -> None:
    status, headers, body = _raw(emu, method, f"/organizations/{emu.org_id}/accounts", api.token)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD, POST"
    assert headers["Content-Type"] == "application/json"
    assert body.decode().startswith('{"message": "Method ' + method)


def test_allow_lists_head_only_where_get_is_served(emu: M3terEmulator, api: Api) -> None:
    status, headers, _ = _raw(emu, "GET", f"/organizations/{emu.org_id}/dataexports/adhoc", api.token)
    assert status == 405 and headers["Allow"] == "POST"


def test_http_servers_own_errors_are_json(emu: M3terEmulator) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    connection.putrequest("GET", "/" + "x" * 70_000)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 414 and response.getheader("Content-Type") == "application/json"
    assert response.read() == b'{"message": "Request-URI Too Long"}'
    connection.close()


@pytest.mark.parametrize("schedule_type", ["xxDAYxx", "DAYS", "HOUR|DAY", ""])
def test_a_pattern_must_match_the_whole_value(api: Api, schedule_type: str) -> None:
    refused = api.post("dataexports/schedules", json={**SCHEDULE, "scheduleType": schedule_type})
    assert refused.status_code == 400 and "scheduleType" in refused.json()["message"]
    assert api.get("dataexports/schedules").json()["data"] == []


def test_a_pattern_that_matches_is_stored(api: Api) -> None:
    created = api.post("dataexports/schedules", json={**SCHEDULE, "scheduleType": "HOUR"})
    assert created.status_code == 200 and created.json()["scheduleType"] == "HOUR"


def test_a_null_partition_order_is_the_default_time_first(api: Api) -> None:
    created = api.post("dataexports/destinations", json={**DESTINATION, "partitionOrder": None}).json()
    assert created["partitionOrder"] == "TIME_FIRST"
    chosen = api.put(
        f"dataexports/destinations/{created['id']}",
        json={**DESTINATION, "partitionOrder": "TYPE_FIRST", "version": created["version"]},
    )
    assert chosen.json()["partitionOrder"] == "TYPE_FIRST"
    assert api.get(f"dataexports/destinations/{created['id']}").json()["partitionOrder"] == "TYPE_FIRST"


@pytest.mark.parametrize("interval", [-1843607582543462, 2**31, -(2**31) - 1])
def test_int32_fields_refuse_values_out_of_range(api: Api, interval: int) -> None:
    refused = api.post("billjobs", json={"billFrequencyInterval": interval})
    assert refused.status_code == 400
    assert refused.json()["message"].startswith("billFrequencyInterval: must be a 32-bit integer")
    assert api.get("billjobs").json()["data"] == []


def test_int32_and_int64_bounds() -> None:
    int32 = {"type": "integer", "format": "int32"}
    int64 = {"type": "integer", "format": "int64"}
    assert clean(2**31 - 1, int32, "n") == 2**31 - 1 and clean(-(2**31), int32, "n") == -(2**31)
    assert clean(2**40, int64, "n") == 2**40
    for value, schema in ((2**63, int64), (-(2**63) - 1, int64), (2**31, int32)):
        with pytest.raises(ApiError):
            clean(value, schema, "n")


def test_custom_field_values_must_not_be_null(api: Api) -> None:
    refused = api.post("accounts", json={**ACCOUNT, "customFields": {"tier": None}})
    assert refused.status_code == 400 and refused.json()["message"] == "customFields.tier: must not be null"
    fields = {"tier": "gold", "seats": 5, "rate": 0.5}
    assert api.post("accounts", json={**ACCOUNT, "customFields": fields}).json()["customFields"] == fields


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@b.com", "a b@c.com", "a@b..com", "a@@b.com"])
def test_an_email_field_must_hold_an_address(api: Api, email: str) -> None:
    refused = api.post("accounts", json={**ACCOUNT, "emailAddress": email})
    assert refused.status_code == 400 and refused.json()["message"].startswith(
        "emailAddress: must be an email"
    )


@pytest.mark.parametrize("email", ["billing@acme.test", "first.last+tag@sub.example.co.uk", "a@localhost"])
def test_an_email_address_is_accepted(api: Api, email: str) -> None:
    assert api.post("accounts", json={**ACCOUNT, "emailAddress": email}).status_code == 200


def test_every_value_of_a_repeated_query_parameter_is_checked(api: Api) -> None:
    refused = api.get("accounts", params=[("pageSize", "lots"), ("pageSize", "")])
    assert refused.status_code == 400 and refused.json()["message"].startswith("pageSize")
    assert api.get("accounts", params=[("pageSize", "5"), ("pageSize", "")]).status_code == 200
