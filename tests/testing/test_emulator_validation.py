"""Request bodies and queries are checked against the spec: wrong types 400, unknown keys ignored."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.common import ApiError
from m3ter_provider.testing.spec import clean, load_spec, resolve
from tests.testing.helpers import know_meters

if TYPE_CHECKING:
    from tests.testing.helpers import Api

ACCOUNT = {"code": "acme", "name": "Acme", "emailAddress": "billing@acme.test"}


@pytest.fixture(autouse=True)
def _known_meters(emu: M3terEmulator) -> None:
    know_meters(emu, "m")


def _message(response) -> str:
    assert response.status_code == 400, response.text
    return response.json()["message"]


def test_wrongly_typed_fields_answer_400_naming_the_field(api: Api) -> None:
    product = api.post("products", json={"code": "api", "name": "API"}).json()
    template = {"code": "std", "name": "Std", "productId": product["id"], "currency": "USD",
                "billFrequency": "MONTHLY"}  # fmt: skip
    assert "standingCharge" in _message(api.post("plantemplates", json={**template, "standingCharge": "ten"}))
    tier = api.post("products", json={"code": "api2", "name": "API 2", "customFields": {"tier": []}})
    assert "customFields.tier" in _message(tier)
    job = api.post("billjobs", json={"billFrequencyInterval": "monthly"})
    assert "billFrequencyInterval" in _message(job)
    assert "emailAddress" in _message(api.post("accounts", json={**ACCOUNT, "emailAddress": 5}))
    assert "daysBeforeBillDue" in _message(api.post("accounts", json={**ACCOUNT, "daysBeforeBillDue": "x"}))
    # nothing was stored by the refused requests
    assert [p["code"] for p in api.get("products").json()["data"]] == ["api"]
    assert api.get("accounts").json()["data"] == []


def test_unknown_keys_are_ignored_not_stored_or_echoed(emu: M3terEmulator, api: Api) -> None:
    assert "currency" in _message(api.post("accounts", json={**ACCOUNT, "currency": 5}))  # declared: typed
    created = api.post("accounts", json={**ACCOUNT, "bogusField": {"x": 1}})
    assert created.status_code == 200, created.text
    for view in (
        created.json(),
        api.get(f"accounts/{created.json()['id']}").json(),
        *emu.entities("accounts"),
    ):
        assert "bogusField" not in view
    updated = api.put(f"accounts/{created.json()['id']}", json={**ACCOUNT, "version": 1, "extra": True})
    assert updated.status_code == 200 and "extra" not in updated.json()


def test_unknown_measurement_keys_are_not_stored(emu: M3terEmulator, api: Api) -> None:
    item = {"uid": "u1", "account": "acme", "meter": "m", "ts": "2024-05-01T10:00:00Z", "junk": 1}
    assert api.post("measurements", json={"measurements": [item]}).status_code == 200
    assert "junk" not in emu.measurements()[0]


def test_query_parameters_are_typed(api: Api) -> None:
    assert "pageSize" in _message(api.get("accounts", params={"pageSize": "ten"}))
    assert "pageSize" in _message(api.get("accounts", params={"pageSize": 0}))


def test_the_validator_covers_the_spec_keywords() -> None:
    schemas = load_spec()["components"]["schemas"]
    meter = {"$ref": "#/components/schemas/MeterRequest"}
    ok = {"code": "m", "name": "M", "dataFields": [{"category": "MEASURE", "code": "c", "name": "C"}],
          "derivedFields": []}  # fmt: skip
    assert clean(ok, meter, "")["dataFields"][0]["category"] == "MEASURE"
    for bad, field in (
        ({**ok, "dataFields": [{"category": "NOPE", "code": "c", "name": "C"}]}, "dataFields[0].category"),
        ({**ok, "code": "has space "}, "code"),
        ({**ok, "name": "x" * 201}, "name"),
        ({k: v for k, v in ok.items() if k != "name"}, "name"),
    ):
        with pytest.raises(ApiError) as caught:
            clean(bad, meter, "")
        assert caught.value.message.startswith(f"{field}:"), caught.value.message
    assert "AccountRequest" in schemas and resolve({"$ref": "#/components/schemas/AccountRequest"})
    with pytest.raises(ApiError, match="date-time"):
        clean("2024-01-01", {"type": "string", "format": "date-time"}, "ts")
    with pytest.raises(ApiError, match="date"):
        clean("2024-13-01", {"type": "string", "format": "date"}, "d")
    assert clean(None, {"type": "string", "nullable": True}, "x") is None
    assert clean({"a": "1"}, {"type": "object", "additionalProperties": {"type": "string"}}, "m") == {
        "a": "1"
    }
    one_of = {"anyOf": [{"type": "string"}, {"type": "number"}]}
    assert clean(3, one_of, "v") == 3
    with pytest.raises(ApiError):
        clean([], one_of, "v")


def test_a_discriminated_body_is_checked_against_the_alternative_it_names(api: Api) -> None:
    bad_date = {"sourceType": "USAGE", "startDate": "yesterday", "endDate": "2026-01-02T00:00:00Z"}
    message = _message(api.post("dataexports/adhoc", json=bad_date))
    assert "startDate" in message and "operationalDataTypes" not in message
    operational = _message(api.post("dataexports/adhoc", json={"sourceType": "OPERATIONAL"}))
    assert "operationalDataTypes" in operational


def test_a_bad_date_filter_is_a_400_even_when_nothing_would_be_listed(api: Api) -> None:
    assert "billDateStart" in _message(api.get("bills", params={"billDateStart": "notadate"}))
    assert api.get("bills", params={"billDateStart": "2026-01-01"}).json()["data"] == []


def test_a_404_names_the_id_as_sent_unquoted(api: Api) -> None:
    response = api.get("accounts/abc%23frag")
    assert response.status_code == 404
    assert "'abc#frag'" in response.json()["message"] and "%23" not in response.json()["message"]
