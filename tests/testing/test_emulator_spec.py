"""Spec conformance: every emulated operation exists in m3ter's OpenAPI spec and answers its schemas.

The spec is the copy shipped in the package (``m3ter_provider/testing/m3ter-openapi.json``) unless
``$M3TER_OPENAPI_SPEC`` names another; a missing spec fails these tests (it never skips them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest
import requests

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.store import COLLECTIONS, PAGE_SIZE_MAXIMA
from tests.testing.helpers import Api

if TYPE_CHECKING:
    from tests.testing.openapi import Spec

ID36 = "00000000-0000-0000-0000-000000000000"
# A valid body (per the *Request schema) for every collection; ids are filled in by the scenario.
VALID_BODIES: dict[str, dict] = {
    "accounts": {"code": "acme", "name": "Acme", "emailAddress": "billing@acme.test", "currency": "USD"},
    "products": {"code": "api", "name": "API"},
    "meters": {
        "code": "api_calls",
        "name": "API calls",
        "dataFields": [{"category": "MEASURE", "code": "calls", "name": "Calls", "unit": "calls"}],
        "derivedFields": [],
    },
    "aggregations": {
        "code": "calls_sum",
        "name": "Calls",
        "meterId": ID36,
        "aggregation": "SUM",
        "quantityPerUnit": 1,
        "rounding": "NONE",
        "targetField": "calls",
        "unit": "calls",
    },
    "compoundaggregations": {
        "code": "calls_x2",
        "name": "Calls x2",
        "calculation": "aggr.calls_sum * 2",
        "quantityPerUnit": 1,
        "rounding": "NONE",
        "unit": "calls",
    },
    "plantemplates": {
        "code": "std",
        "name": "Standard",
        "productId": ID36,
        "currency": "USD",
        "standingCharge": 0,
        "billFrequency": "MONTHLY",
    },
    "plans": {"code": "std_plan", "name": "Standard plan", "planTemplateId": ID36},
    "pricings": {
        "planId": ID36,
        "startDate": "2024-01-01T00:00:00Z",
        "pricingBands": [{"lowerLimit": 0, "fixedPrice": 0, "unitPrice": 0.01}],
    },
    "accountplans": {"accountId": ID36, "planId": ID36, "startDate": "2024-01-01T00:00:00Z"},
    "contracts": {"accountId": ID36, "name": "2024", "startDate": "2024-01-01", "endDate": "2025-01-01"},
    "counters": {"code": "seats", "name": "Seats", "unit": "seats"},
    "commitments": {
        "accountId": ID36,
        "amount": 1000,
        "currency": "USD",
        "startDate": "2024-01-01",
        "endDate": "2025-01-01",
    },
    "plangroups": {"code": "bundle", "name": "Bundle", "currency": "USD"},
    "balances": {"accountId": ID36, "code": "prepaid", "name": "Prepaid", "currency": "USD",
                 "startDate": "2024-01-01T00:00:00Z", "endDate": "2025-01-01T00:00:00Z"},
    "statementdefinitions": {"name": "Monthly", "aggregationFrequency": "MONTH"},
    "picklists/currency": {"code": "EUR", "name": "Euro", "maxDecimalPlaces": 2},
    "picklists/transactiontypes": {"code": "topup", "name": "Top-up"},
    "dataexports/destinations": {"destinationType": "S3", "code": "lake", "name": "Lake",
                                 "bucketName": "usage", "iamRoleArn": "arn:aws:iam::123456789012:role/x"},
    "dataexports/schedules": {"sourceType": "OPERATIONAL", "code": "nightly", "name": "Nightly",
                              "operationalDataTypes": ["BILLS"], "scheduleType": "DAY", "period": 1},
}  # fmt: skip
# The spec documents POST/PUT compoundaggregations as answering an AggregationResponse (no
# `calculation`), GET/DELETE as CompoundAggregationResponse: the emulator answers the compound
# aggregation everywhere, so only the undocumented-key check is relaxed there.
# Likewise the lists of export destinations and schedules are documented with the base schema
# (no bucketName, no operationalDataTypes...), while each item is a whole S3/GCS destination or
# USAGE/OPERATIONAL schedule, as GET {id} documents it.
SPEC_QUIRKS = {
    ("POST", "/organizations/{orgId}/compoundaggregations"),
    ("PUT", "/organizations/{orgId}/compoundaggregations/{id}"),
    ("GET", "/organizations/{orgId}/dataexports/destinations"),
    ("GET", "/organizations/{orgId}/dataexports/schedules"),
}
MEASUREMENT = {"uid": "u1", "account": "acme", "meter": "api_calls", "ts": "2024-05-01T10:00:00Z"}


def _flatten_required(spec: Spec, schema: dict) -> set[str]:
    schema = spec.resolve(schema)
    required = set(schema.get("required", []))
    for part in schema.get("allOf", []):
        required |= _flatten_required(spec, part)
    return required


def _request_schema(spec: Spec, method: str, template: str) -> dict:
    op = spec.operation(method, template)
    assert op is not None, f"{method} {template} is not in the spec"
    return spec.resolve(op["requestBody"]["content"]["application/json"]["schema"])


def _query_params(spec: Spec, template: str) -> dict[str, dict]:
    op = spec.operation("GET", template)
    assert op is not None, f"GET {template} is not in the spec"
    return {p["name"]: p for p in op.get("parameters", []) if p["in"] == "query"}


# -- static checks ----------------------------------------------------------------------------
def test_every_emulated_route_is_a_spec_operation(spec: Spec) -> None:
    with M3terEmulator() as emu:
        keys = emu.routes()
    for key in keys:
        method, template = key.split(" ", 1)
        if template.startswith("/_emulator/"):
            continue
        assert spec.operation(method, template) is not None, f"{key} is not in the spec"


def test_page_size_maxima_match_the_spec(spec: Spec) -> None:
    for template, maximum in PAGE_SIZE_MAXIMA.items():
        schema = _query_params(spec, template)["pageSize"]["schema"]
        assert (schema["minimum"], schema["maximum"]) == (1, maximum), template


def test_required_fields_and_filters_match_the_spec(spec: Spec) -> None:
    for name, collection in COLLECTIONS.items():
        template = f"/organizations/{{orgId}}/{name}"
        required = _flatten_required(spec, _request_schema(spec, "POST", template))
        assert set(collection.required) == required, name
        params = _query_params(spec, template)
        for param in collection.filters:
            assert param in params, f"{name}: the spec has no {param!r} filter"


def test_the_test_bodies_are_valid_requests(spec: Spec) -> None:
    for name, body in VALID_BODIES.items():
        spec.validate(body, _request_schema(spec, "POST", f"/organizations/{{orgId}}/{name}"))
    measurements = _request_schema(spec, "POST", "/organizations/{orgId}/measurements")
    spec.validate({"measurements": [MEASUREMENT]}, measurements)


# -- live responses ---------------------------------------------------------------------------
class Checked:
    """Validates every response to a spec path; remembers (method, template, status) seen."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, response: requests.Response, *args: object, **kwargs: object) -> None:
        path = urlsplit(response.request.url).path
        if path.startswith("/_emulator/"):
            return
        template = self.spec.template_for(path)
        assert template is not None, f"{path} matches no spec path"
        method = response.request.method
        schema = self.spec.response_schema(method, template, response.status_code)
        if schema is not None:
            try:
                strict = (method, template) not in SPEC_QUIRKS
                self.spec.validate(response.json(), schema, strict=strict)
            except AssertionError as error:
                raise AssertionError(f"{method} {path} -> {response.status_code}: {error}") from None
        self.seen.add((method, template, response.status_code))

    def statuses(self, method: str, template: str) -> set[int]:
        return {status for m, t, status in self.seen if (m, t) == (method, template)}


@pytest.fixture
def checked(spec: Spec) -> Checked:
    return Checked(spec)


@pytest.fixture
def checked_api(emu: M3terEmulator, checked: Checked) -> Iterator[Api]:
    session = requests.Session()
    session.hooks["response"].append(checked)
    client = Api(emu, session)
    yield client
    session.close()


def test_token_endpoint_conforms(emu: M3terEmulator, checked: Checked) -> None:
    session = requests.Session()
    session.hooks["response"].append(checked)
    url = f"{emu.url}/oauth/token"
    ok = session.post(
        url, auth=(emu.access_key_id, emu.api_secret), data={"grant_type": "client_credentials"}
    )
    assert ok.status_code == 200
    assert session.post(url, auth=("x", "y"), data={"grant_type": "client_credentials"}).status_code == 401
    bad_grant = session.post(url, auth=(emu.access_key_id, emu.api_secret), json={"grant_type": "password"})
    assert bad_grant.status_code == 400
    assert checked.statuses("POST", "/oauth/token") == {200, 400, 401}


REFERENCE_FIELDS = {"accountId": "accounts", "productId": "products", "meterId": "meters",
                    "planTemplateId": "plantemplates", "planId": "plans"}  # fmt: skip


def related_bodies(api: Api) -> dict[str, dict]:
    """VALID_BODIES with their reference fields pointing at entities created here (m3ter checks them)."""
    ids: dict[str, str] = {}
    for name in ("accounts", "products", "meters", "plantemplates", "plans"):
        body = {k: ids.get(REFERENCE_FIELDS.get(k, ""), v) for k, v in VALID_BODIES[name].items()}
        body["code"] = f"{body['code']}_ref"
        created = api.post(name, json=body)
        assert created.status_code == 200, created.text
        ids[name] = created.json()["id"]
    return {
        name: {k: ids.get(REFERENCE_FIELDS.get(k, ""), v) for k, v in body.items()}
        for name, body in VALID_BODIES.items()
    }


def test_config_api_conforms(emu: M3terEmulator, checked_api: Api, checked: Checked) -> None:
    """Every Config API route answers its schemas (limits off: ~10 requests per collection in a burst
    exceed m3ter's 50 requests/second per Organization; test_emulator_limits.py tests the limits)."""
    emu.set_limits(enabled=False)
    api = checked_api
    for name, body in related_bodies(api).items():
        created = api.post(name, json=body)
        assert created.status_code == 200, (name, created.text)
        entity = created.json()
        assert api.get(f"{name}/{entity['id']}").status_code == 200
        updated = api.put(f"{name}/{entity['id']}", json={**body, "version": entity["version"]})
        assert updated.status_code == 200, (name, updated.text)
        listed = api.get(name, params={"pageSize": 1})
        assert listed.status_code == 200
        second = {**body, "code": body["code"] + "2"} if "code" in body else body
        assert api.post(name, json=second).status_code == 200
        assert "nextToken" in api.get(name, params={"pageSize": 1}).json()
        # errors: validation, stale version, unknown id, page size
        assert api.post(name, json={}).status_code == 400
        stale = api.put(f"{name}/{entity['id']}", json={**body, "version": 1})
        assert stale.status_code == 409
        assert api.get(f"{name}/{ID36}").status_code == 404
        assert api.get(name, params={"pageSize": COLLECTIONS[name].max_page_size + 1}).status_code == 400
        assert api.delete(f"{name}/{entity['id']}").status_code == 200
    assert api.get("organizationconfig").status_code == 200
    assert api.get("users/me").status_code == 200
    for name in ("accounts", "commitments", "bills"):
        assert api.get(f"{name}/search", params={"pageSize": 1}).status_code == 200
    searched = api.get("accounts/search", params={"searchQuery": "code~acme", "pageSize": 1}).json()
    assert searched["data"] and searched["nextToken"] == "1"
    unauthorized = requests.Session()
    unauthorized.hooks["response"].append(checked)
    assert unauthorized.get(api.url("accounts")).status_code == 403
    assert unauthorized.get(f"{emu.url}/organizations/other-org/accounts").status_code == 403


def test_measurements_conform(emu: M3terEmulator, checked_api: Api, checked: Checked) -> None:
    api = checked_api
    assert api.post("measurements", json={"measurements": [MEASUREMENT]}).status_code == 200
    assert api.post("measurements", json={"measurements": []}).status_code == 400
    too_big = json.dumps({"measurements": [dict(MEASUREMENT, other={"pad": "x" * 520_000})]})
    headers = {"Content-Type": "application/json"}
    assert api.post("measurements", data=too_big, headers=headers).status_code == 403
    emu.add_fault("POST /organizations/{orgId}/measurements", status=429, retry_after="1")
    assert api.post("measurements", json={"measurements": [MEASUREMENT]}).status_code == 429
    assert checked.statuses("POST", "/organizations/{orgId}/measurements") == {200, 400, 403, 429}


def test_rate_limit_refusals_conform(checked: Checked) -> None:
    """A real limit's 429 (not a planned fault) is m3ter's ``{"message"}`` error."""
    with M3terEmulator(clock=lambda: 0.0, limits={"config_per_second": 2}) as emu:
        session = requests.Session()
        session.hooks["response"].append(checked)
        api = Api(emu, session)
        assert [api.get("accounts").status_code for _ in range(3)] == [200, 200, 429]
    assert checked.statuses("GET", "/organizations/{orgId}/accounts") == {200, 429}


def test_every_emulated_route_was_checked(emu: M3terEmulator, spec: Spec) -> None:
    """The scenario tests above cover every route: run them into one Checked and compare."""
    checked = Checked(spec)
    session = requests.Session()
    session.hooks["response"].append(checked)
    api = Api(emu, session)
    test_config_api_conforms(emu, api, checked)
    test_measurements_conform(emu, api, checked)
    test_token_endpoint_conforms(emu, checked)
    _run_job_scenarios(emu, api)
    _run_finance_scenario(emu, api)
    missing = []
    for key in emu.routes():
        method, template = key.split(" ", 1)
        if template.startswith("/_emulator/"):
            continue
        if not any(200 <= status < 300 for status in checked.statuses(method, template)):
            missing.append(key)
    assert not missing, f"routes never answered 2xx under spec validation: {missing}"


def test_jobs_conform(emu: M3terEmulator, checked_api: Api, checked: Checked) -> None:
    _run_job_scenarios(emu, checked_api)
    assert 200 in checked.statuses("GET", "/organizations/{orgId}/dataexports/jobs/{jobId}/getdownloadurl")


def test_finance_conforms(emu: M3terEmulator, checked_api: Api, checked: Checked) -> None:
    _run_finance_scenario(emu, checked_api)
    assert 404 in checked.statuses("GET", "/organizations/{orgId}/bills/latest/{accountId}")


def _run_finance_scenario(emu: M3terEmulator, api: Api) -> None:
    """Balances and their transactions, bills with line items, approval, locking, usage queries."""
    emu.job_duration = 0
    account = api.post("accounts", json={**VALID_BODIES["accounts"], "code": "fin_account"}).json()
    meter = api.post("meters", json={**VALID_BODIES["meters"], "code": "fin_meter"}).json()
    usage = [dict(MEASUREMENT, uid=f"fin-{i}", account="fin_account", meter="fin_meter",
                  measure={"calls": i}) for i in range(3)]  # fmt: skip
    assert api.post("measurements", json={"measurements": usage}).status_code == 200
    # balances
    balance_body = {**VALID_BODIES["balances"], "accountId": account["id"], "code": "fin_balance"}
    balance = api.post("balances", json=balance_body).json()
    kind = api.post("picklists/transactiontypes", json={"code": "fin_topup", "name": "Top-up"}).json()
    transactions = f"balances/{balance['id']}/transactions"
    topup = {"amount": 100, "transactionTypeId": kind["id"], "description": "top-up"}
    assert api.post(transactions, json=topup).status_code == 200
    assert api.post(transactions, json={"amount": -30}).status_code == 200
    assert api.post(transactions, json={"amount": "lots"}).status_code == 400
    assert [t["amount"] for t in api.get(transactions).json()["data"]] == [100, -30]
    summary = api.get(f"{transactions}/summary").json()
    assert (summary["totalCreditAmount"], summary["totalDebitAmount"]) == (100, 30)
    assert api.get(f"balances/{balance['id']}").json()["amount"] == 70
    renamed = api.put(f"balances/{balance['id']}", json={**balance_body, "name": "Renamed", "version": 1})
    assert (renamed.json()["name"], renamed.json()["amount"]) == ("Renamed", 70)
    assert api.get(f"balances/{ID36}/transactions").status_code == 404
    # a bill for May 2024 with one usage line item
    job = api.post("billjobs", json={"accountIds": [account["id"]], "billingFrequency": "MONTHLY",
                                     "lastDateInBillingPeriod": "2024-05-31"}).json()  # fmt: skip
    (bill,) = api.get("bills", params={"billJobId": job["id"]}).json()["data"]
    (item,) = api.get(f"bills/{bill['id']}/lineitems").json()["data"]
    assert (item["meterId"], item["quantity"]) == (meter["id"], 3)
    assert api.get(f"bills/{bill['id']}/lineitems/{item['id']}").json()["billId"] == bill["id"]
    assert api.get(f"bills/{bill['id']}/lineitems/{ID36}").status_code == 404
    assert api.get(f"bills/latest/{account['id']}").json()["id"] == bill["id"]
    assert api.get(f"bills/latest/{ID36}").status_code == 404
    assert [b["id"] for b in api.get(f"bills/accountid/{account['id']}").json()["data"]] == [bill["id"]]
    period = "bills/billingperiod/2024-05-31/MONTHLY"
    assert [b["id"] for b in api.get(period).json()["data"]] == [bill["id"]]
    assert api.post(f"{period}/approve").json()["message"]
    assert api.get(f"bills/{bill['id']}").json()["status"] == "APPROVED"
    assert api.post("bills/approve", json={"billIds": [bill["id"]]}).status_code == 400  # not PENDING
    assert api.put(f"bills/{bill['id']}/status", json={"status": "PENDING"}).json()["status"] == "PENDING"
    assert api.put(f"bills/{bill['id']}/lock").status_code == 400  # only an APPROVED bill is locked
    recalc = api.post("billjobs/recalculate", json={"billIds": [bill["id"]]}).json()
    assert (recalc["type"], recalc["billIds"]) == ("RECALCULATE", [bill["id"]])
    assert api.post("billjobs/recalculate", json={"billIds": [ID36]}).status_code == 400
    assert api.post("bills/approve", json={"billIds": [bill["id"]]}).status_code == 200
    assert api.put(f"bills/{bill['id']}/lock").json()["locked"] is True
    assert api.put(f"bills/{bill['id']}/lock").json()["locked"] is True  # locked already: unchanged
    assert api.post("billjobs/recalculate", json={"billIds": [bill["id"]]}).status_code == 400
    batch = api.post("statementjobs/batch", json={"billIds": [bill["id"]], "includeCsvFormat": True}).json()
    assert [job["billId"] for job in batch] == [bill["id"]]
    assert api.post("statementjobs/batch", json={"billIds": [ID36]}).status_code == 400
    assert api.put(f"bills/{bill['id']}/status", json={"status": "APPROVED"}).status_code == 400
    # usage queries
    query = {"startDate": "2024-05-01T00:00:00Z", "endDate": "2024-06-01T00:00:00Z",
             "accountIds": [account["id"]], "meterIds": [meter["id"]], "limit": 2}  # fmt: skip
    answer = api.post("usage/query", json=query).json()
    assert [m["uid"] for m in answer["data"]] == ["fin-2", "fin-1"] and answer["hasMoreData"] is True
    assert api.post("usage/query", json={**query, "limit": 10}).json()["hasMoreData"] is False
    assert api.post("usage/query", json={**query, "limit": "all"}).status_code == 400
    for name in ("startDate", "endDate"):  # the time period is "(Required)", says the spec's description
        answer = api.post("usage/query", json={k: v for k, v in query.items() if k != name})
        assert answer.status_code == 400 and name in answer.json()["message"]
    # aggregated usage queries: the spec's functions, grouped by account, dimension and time
    field = {"meterId": meter["id"], "fieldCode": "calls"}
    aggregated = {**query, "limit": 100, "aggregations": [
        {**field, "fieldType": "MEASURE", "function": f}
        for f in ("SUM", "COUNT", "MIN", "MAX", "MEAN", "LATEST")
    ], "groups": [{"groupType": "ACCOUNT"}, {"groupType": "TIME", "frequency": "DAY"},
                  {"groupType": "DIMENSION", "meterId": meter["id"], "fieldCode": "region"}]}  # fmt: skip
    answer = api.post("usage/query", json=aggregated)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert {row["function"] for row in data} == {"SUM", "COUNT", "MIN", "MAX", "MEAN", "LATEST"}
    assert sum(row["value"] for row in data if row["function"] == "SUM") == 0 + 1 + 2
    assert all(row["accountCode"] == "fin_account" for row in data)
    refused = [
        {**query, "groups": [{"groupType": "ACCOUNT"}]},  # groups need aggregations
        {**query, "aggregations": [{**field, "fieldType": "MEASURE", "function": "AVG"}]},
        {**query, "aggregations": [{**field, "fieldType": "DIMENSION", "function": "SUM"}]},
        {**query, "groups": [{"groupType": "TIME"}], "aggregations": aggregated["aggregations"]},
        {**query, "dimensionFilters": [{**field, "values": []}]},
    ]
    for body in refused:
        assert api.post("usage/query", json=body).status_code == 400, body


def _run_job_scenarios(emu: M3terEmulator, api: Api) -> None:
    """Every job route, successes and errors (jobs finish at once unless made long on purpose)."""
    emu.job_duration = 0
    account = api.post("accounts", json={**VALID_BODIES["accounts"], "code": "jobs_account"}).json()
    assert api.post("measurements", json={"measurements": [MEASUREMENT]}).status_code == 200
    # data exports
    usage = {"sourceType": "USAGE", "startDate": "2024-05-01T00:00:00Z", "endDate": "2024-06-01T00:00:00Z"}
    export_id = api.post("dataexports/adhoc", json=usage).json()["jobId"]
    operational = {
        "sourceType": "OPERATIONAL",
        "operationalDataTypes": ["ACCOUNTS"],
        "exportFileFormat": "JSONL",
    }
    assert api.post("dataexports/adhoc", json=operational).status_code == 200
    assert api.post("dataexports/adhoc", json={"sourceType": "USAGE"}).status_code == 400
    assert api.get(f"dataexports/jobs/{export_id}").json()["status"] == "SUCCEEDED"
    assert api.get("dataexports/jobs").status_code == 200
    assert api.get(f"dataexports/jobs/{export_id}/getdownloadurl").status_code == 200
    assert api.get(f"dataexports/jobs/{ID36}").status_code == 404
    # bill jobs and bills
    bill_job = api.post(
        "billjobs", json={"accountIds": [account["id"]], "billingFrequency": "MONTHLY"}
    ).json()
    assert api.get(f"billjobs/{bill_job['id']}").json()["status"] == "COMPLETE"
    assert api.get("billjobs", params={"active": "FALSE"}).status_code == 200
    assert api.post(f"billjobs/{bill_job['id']}/cancel").status_code == 400
    bills = api.get("bills", params={"billJobId": bill_job["id"]}).json()["data"]
    bill_id = bills[0]["id"]
    assert api.get(f"bills/{bill_id}").status_code == 200
    # statement jobs
    statement = api.post("statementjobs", json={"billId": bill_id, "includeCsvFormat": True}).json()
    assert api.get(f"statementjobs/{statement['id']}").json()["statementJobStatus"] == "COMPLETE"
    assert api.get("statementjobs").status_code == 200
    emu.job_duration = 30
    running = api.post("billjobs", json={}).json()
    assert api.post(f"billjobs/{running['id']}/cancel").status_code == 200
    running = api.post("statementjobs", json={"billId": bill_id}).json()
    assert api.post(f"statementjobs/{running['id']}/cancel").status_code == 200
    assert api.post("statementjobs", json={"billId": ID36}).status_code == 400
    emu.job_duration = 0
    # measurement file uploads
    content = json.dumps({"measurements": [dict(MEASUREMENT, uid="file-1")]}).encode()
    upload = api.post(
        "fileuploads/measurements/generateUploadUrl",
        json={"fileName": "m.json", "contentType": "application/json", "contentLength": len(content)},
    ).json()
    assert requests.put(upload["url"], data=content, headers=upload["headers"], timeout=5).status_code == 200
    assert api.get(f"fileuploads/measurements/jobs/{upload['jobId']}").json()["status"] == "succeeded"
    assert api.get("fileuploads/measurements/jobs").status_code == 200
    assert api.post("fileuploads/measurements/generateUploadUrl", json={}).status_code == 400
    assert api.delete(f"bills/{bill_id}").status_code == 200
    _run_event_scenario(api)


def _run_event_scenario(api: Api) -> None:
    """A measurement for an unknown Meter: accepted, then an ingest.validation.failure Event."""
    bad = dict(MEASUREMENT, uid="no-such-meter", meter="no_such_meter")
    assert api.post("measurements", json={"measurements": [bad]}).status_code == 200
    failures = {"eventName": "ingest.validation.failure", "pageSize": 100}
    event = next(
        e for e in api.get("events", params=failures).json()["data"]
        if e["m3terEvent"]["eventData"]["uid"] == "no-such-meter"
    )  # fmt: skip
    assert api.get(f"events/{event['id']}").status_code == 200
    assert api.get(f"events/{ID36}").status_code == 404
    assert "ingest.validation.failure" in api.get("events/types").json()["events"]
    assert api.get("events/fields", params={"eventName": "ingest.validation.failure"}).status_code == 200
    file = event["m3terEvent"]["eventData"]["file"]
    url = api.get("measurements/failedIngest/getDownloadUrl", params={"file": file}).json()["url"]
    assert requests.get(url, timeout=5).json()["errorType"] == "UndefinedMeter"
    assert api.get("measurements/failedIngest/getDownloadUrl", params={"file": "nope"}).status_code == 404


def test_spec_location(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from tests.testing import openapi

    monkeypatch.delenv(openapi.SPEC_ENV, raising=False)
    assert openapi.find_spec() == openapi.SPEC_FILE
    monkeypatch.setenv(openapi.SPEC_ENV, str(tmp_path / "missing.json"))
    assert openapi.find_spec() == openapi.SPEC_FILE
    explicit = tmp_path / "spec.json"
    explicit.write_text("{}")
    monkeypatch.setenv(openapi.SPEC_ENV, str(explicit))
    assert openapi.find_spec() == explicit
    monkeypatch.setattr(openapi, "SPEC_FILE", tmp_path / "not-shipped.json")
    monkeypatch.setenv(openapi.SPEC_ENV, str(tmp_path / "missing.json"))
    assert openapi.find_spec() is None


def test_the_spec_ships_as_package_data_with_its_checksum() -> None:
    import hashlib
    import re

    from m3ter_provider.testing.spec import SPEC_FILE

    digest = hashlib.sha256(SPEC_FILE.read_bytes()).hexdigest()
    readme = SPEC_FILE.with_name("README.md").read_text()
    assert re.search(r"sha256: `([0-9a-f]{64})`", readme).group(1) == digest
    pyproject = (SPEC_FILE.parents[2] / "pyproject.toml").read_text()
    assert '"testing/m3ter-openapi.json"' in pyproject
