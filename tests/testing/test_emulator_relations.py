"""References are checked where m3ter checks them; lists honour every filter the spec documents."""

from __future__ import annotations

import http.client
import json
from typing import TYPE_CHECKING

from m3ter_provider.testing import M3terEmulator

if TYPE_CHECKING:
    from tests.testing.helpers import Api

ID36 = "00000000-0000-0000-0000-000000000000"
ACCOUNT = {"code": "acme", "name": "Acme", "emailAddress": "billing@acme.test"}


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def _graph(api: Api) -> dict:
    def post(path: str, body: dict) -> dict:
        response = api.post(path, json=body)
        assert response.status_code == 200, response.text
        return response.json()

    account = post("accounts", ACCOUNT)
    product = post("products", {"code": "api", "name": "API"})
    other_product = post("products", {"code": "other", "name": "Other"})
    meter = post("meters", {"code": "calls", "name": "Calls", "productId": product["id"],
                            "dataFields": [{"category": "MEASURE", "code": "n", "name": "N"}],
                            "derivedFields": []})  # fmt: skip
    template_body = {"code": "std", "name": "Std", "productId": product["id"], "currency": "USD",
                     "standingCharge": 0, "billFrequency": "MONTHLY"}  # fmt: skip
    template = post("plantemplates", template_body)
    plan = post("plans", {"code": "plan", "name": "Plan", "planTemplateId": template["id"]})
    return {"account": account, "product": product, "other_product": other_product, "meter": meter,
            "template": template, "plan": plan}  # fmt: skip


def test_unknown_references_answer_400_naming_the_field(api: Api) -> None:
    aggregation = {"code": "a", "name": "A", "meterId": ID36, "aggregation": "SUM", "quantityPerUnit": 1,
                   "rounding": "NONE", "targetField": "n", "unit": "n"}  # fmt: skip
    for path, body, field in (
        ("aggregations", aggregation, "meterId"),
        ("plans", {"code": "p", "name": "P", "planTemplateId": ID36}, "planTemplateId"),
        ("accountplans", {"accountId": ID36, "startDate": "2024-01-01T00:00:00Z"}, "accountId"),
        ("contracts", {"accountId": ID36, "name": "C", "startDate": "2024-01-01", "endDate": "2025-01-01"},
         "accountId"),
        ("dataexports/schedules", {"sourceType": "OPERATIONAL", "code": "s", "name": "S",
                                   "operationalDataTypes": ["BILLS"], "destinationIds": [ID36]},
         "destinationIds"),
    ):  # fmt: skip
        response = api.post(path, json=body)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["message"].startswith(f"{field}:"), response.text
    assert api.get("aggregations").json()["data"] == [] and api.get("plans").json()["data"] == []


def test_an_account_with_account_plans_cannot_be_deleted(api: Api) -> None:
    graph = _graph(api)
    account_id = graph["account"]["id"]
    body = {"accountId": account_id, "planId": graph["plan"]["id"], "startDate": "2024-01-01T00:00:00Z"}
    account_plan = api.post("accountplans", json=body).json()
    refused = api.delete(f"accounts/{account_id}")
    assert refused.status_code == 400 and "AccountPlan" in refused.json()["message"]
    assert api.delete(f"accountplans/{account_plan['id']}").status_code == 200
    assert api.delete(f"accounts/{account_id}").status_code == 200


def test_list_filters_the_spec_documents(api: Api) -> None:
    graph = _graph(api)
    account_id, plan_id, product_id = graph["account"]["id"], graph["plan"]["id"], graph["product"]["id"]
    assert graph["plan"]["productId"] == product_id  # m3ter fills it in from the PlanTemplate
    assert _ids(api.get("plans", params={"productId": product_id})) == [plan_id]
    assert _ids(api.get("plans", params={"productId": graph["other_product"]["id"]})) == []
    aggregation = api.post("aggregations", json={"code": "a", "name": "A", "meterId": graph["meter"]["id"],
                           "aggregation": "SUM", "quantityPerUnit": 1, "rounding": "NONE",
                           "targetField": "n", "unit": "n"}).json()  # fmt: skip
    assert _ids(api.get("aggregations", params={"productId": product_id})) == [aggregation["id"]]
    assert _ids(api.get("aggregations", params={"productId": graph["other_product"]["id"]})) == []
    # pricings and account plans active on a date
    early = api.post("pricings", json={"planId": plan_id, "startDate": "2024-01-01T00:00:00Z",
                     "endDate": "2024-06-01T00:00:00Z", "pricingBands": [{"lowerLimit": 0, "fixedPrice": 0,
                     "unitPrice": 1}]}).json()  # fmt: skip
    late = api.post("pricings", json={"planId": plan_id, "startDate": "2024-06-01T00:00:00Z",
                    "pricingBands": [{"lowerLimit": 0, "fixedPrice": 0, "unitPrice": 2}]}).json()  # fmt: skip
    assert _ids(api.get("pricings", params={"date": "2024-03-01T00:00:00Z"})) == [early["id"]]
    assert _ids(api.get("pricings", params={"date": "2025-01-01T00:00:00Z"})) == [late["id"]]
    plan_body = {"accountId": account_id, "planId": plan_id, "startDate": "2024-01-01T00:00:00Z",
                 "endDate": "2024-02-01T00:00:00Z"}  # fmt: skip
    account_plan = api.post("accountplans", json=plan_body).json()
    assert account_plan["productId"] == product_id
    assert _ids(api.get("accountplans", params={"date": "2024-01-15T00:00:00Z"})) == [account_plan["id"]]
    assert _ids(api.get("accountplans", params={"date": "2024-03-01T00:00:00Z"})) == []
    assert _ids(api.get("accountplans", params={"account": account_id, "product": product_id})) == [
        account_plan["id"]
    ]
    # commitments by date, end date window and product
    commitment = {"accountId": account_id, "amount": 10, "currency": "USD", "startDate": "2024-01-01",
                  "endDate": "2025-01-01", "productIds": [product_id]}  # fmt: skip
    first = api.post("commitments", json=commitment).json()
    second = api.post("commitments", json={**commitment, "startDate": "2025-01-01", "endDate": "2026-01-01",
                                           "productIds": []}).json()  # fmt: skip
    assert _ids(api.get("commitments", params={"date": "2024-05-01"})) == [first["id"]]
    assert _ids(api.get("commitments", params={"endDateStart": "2025-06-01"})) == [second["id"]]
    assert _ids(api.get("commitments", params={"endDateEnd": "2025-06-01"})) == [first["id"]]
    assert _ids(api.get("commitments", params={"productId": product_id})) == [first["id"]]
    assert "date" in api.get("commitments", params={"date": "not-a-date"}).json()["message"]
    # export jobs by scheduleId: ad-hoc jobs belong to no schedule
    usage = {"sourceType": "USAGE", "startDate": "2024-05-01T00:00:00Z", "endDate": "2024-06-01T00:00:00Z"}
    job_id = api.post("dataexports/adhoc", json=usage).json()["jobId"]
    assert _ids(api.get("dataexports/jobs")) == [job_id]
    assert _ids(api.get("dataexports/jobs", params={"scheduleId": ID36})) == []


def test_bill_filters(emu: M3terEmulator, api: Api) -> None:
    bills = emu.seed("bills", [
        {"accountId": "a", "billDate": "2024-02-01", "billingFrequency": "MONTHLY", "status": "PENDING"},
        {"accountId": "a", "billDate": "2024-03-01", "billingFrequency": "ANNUALLY", "status": "PENDING"},
        {"accountId": "b", "billDate": "2024-04-01", "billingFrequency": "MONTHLY", "status": "APPROVED"},
    ])  # fmt: skip
    ids = [bill["id"] for bill in bills]
    assert _ids(api.get("bills", params={"billDate": "2024-03-01"})) == [ids[1]]
    assert _ids(api.get("bills", params={"billDateStart": "2024-03-01"})) == ids[1:]
    assert _ids(api.get("bills", params={"billDateEnd": "2024-03-01"})) == ids[:1]
    assert _ids(api.get("bills", params={"billingFrequency": "MONTHLY"})) == [ids[0], ids[2]]
    assert _ids(api.get("bills", params={"billDateStart": "2024-02-01", "billDateEnd": "2024-04-01",
                                         "accountId": "a"})) == ids[:2]  # fmt: skip


def test_search_endpoints_page_with_from_document(emu: M3terEmulator, api: Api) -> None:
    emu.seed("accounts", [{"code": f"c{i}", "name": f"Premium {i}" if i % 2 else f"Basic {i}",
                           "currency": "USD" if i < 4 else "EUR"} for i in range(6)])  # fmt: skip
    page = api.get("accounts/search", params={"searchQuery": "name~premium", "pageSize": 2}).json()
    assert [a["code"] for a in page["data"]] == ["c1", "c3"] and page["nextToken"] == "2"
    rest = api.get(
        "accounts/search", params={"searchQuery": "name~premium", "pageSize": 2, "fromDocument": 2}
    )
    assert [a["code"] for a in rest.json()["data"]] == ["c5"] and "nextToken" not in rest.json()
    both = {"searchQuery": "name~premium$currency:USD", "pageSize": 10}
    assert [a["code"] for a in api.get("accounts/search", params=both).json()["data"]] == ["c1", "c3"]
    either = {**both, "operator": "OR", "sortBy": "code", "sortOrder": "DESC"}
    assert [a["code"] for a in api.get("accounts/search", params=either).json()["data"]] == [
        "c5",
        "c3",
        "c2",
        "c1",
        "c0",
    ]
    assert api.get("accounts/search", params={"searchQuery": "???"}).status_code == 400
    assert api.get("commitments/search").json() == {"data": []}


def test_head_options_and_trace_answer_json(emu: M3terEmulator, api: Api) -> None:
    path = f"/organizations/{emu.org_id}/accounts"
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=5)
    try:
        connection.request("HEAD", path, headers={"Authorization": f"Bearer {api.token}"})
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        assert int(head.getheader("Content-Length")) == len(b'{"data": []}')
        for method in ("OPTIONS", "TRACE"):
            connection.request(method, path, headers={"Authorization": f"Bearer {api.token}"})
            answer = connection.getresponse()
            assert answer.status == 405 and answer.getheader("Content-Type") == "application/json"
            assert method in json.loads(answer.read())["message"]
            assert "GET" in answer.getheader("Allow")
    finally:
        connection.close()
