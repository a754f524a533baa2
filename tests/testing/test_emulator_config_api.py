"""Config API entities: CRUD, versions, validation, paging and filters."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.store import COLLECTIONS, DEFAULT_PAGE_SIZE
from tests.testing.test_emulator_spec import related_bodies

if TYPE_CHECKING:
    from tests.testing.helpers import Api

ACCOUNT = {"code": "acme", "name": "Acme Ltd", "emailAddress": "billing@acme.test"}


def test_create_get_update_delete_an_account(api: Api) -> None:
    created = api.post("accounts", json=ACCOUNT)
    assert created.status_code == 200
    account = created.json()
    assert account["version"] == 1
    assert account["code"] == "acme"
    for key in ("id", "createdBy", "dtCreated", "dtLastModified", "lastModifiedBy"):
        assert account[key]

    assert api.get(f"accounts/{account['id']}").json() == account

    updated = api.put(f"accounts/{account['id']}", json={**ACCOUNT, "name": "Acme plc", "version": 1})
    assert updated.status_code == 200
    assert updated.json()["version"] == 2
    assert updated.json()["name"] == "Acme plc"
    assert updated.json()["dtCreated"] == account["dtCreated"]

    deleted = api.delete(f"accounts/{account['id']}")
    assert deleted.status_code == 200
    assert deleted.json()["id"] == account["id"]
    missing = api.get(f"accounts/{account['id']}")
    assert missing.status_code == 404
    assert missing.json()["message"]


def test_put_needs_the_current_version(api: Api) -> None:
    account = api.post("accounts", json=ACCOUNT).json()
    stale = api.put(f"accounts/{account['id']}", json={**ACCOUNT, "version": 7})
    assert stale.status_code == 409
    assert "version" in stale.json()["message"]
    missing = api.put(f"accounts/{account['id']}", json=ACCOUNT)
    assert missing.status_code == 400
    assert api.get(f"accounts/{account['id']}").json()["version"] == 1


def test_put_replaces_the_entity(api: Api) -> None:
    account = api.post("accounts", json={**ACCOUNT, "purchaseOrderNumber": "PO-1"}).json()
    updated = api.put(f"accounts/{account['id']}", json={**ACCOUNT, "version": 1}).json()
    assert "purchaseOrderNumber" not in updated


@pytest.mark.parametrize("missing", ["code", "name", "emailAddress"])
def test_account_required_fields(api: Api, missing: str) -> None:
    body = {k: v for k, v in ACCOUNT.items() if k != missing}
    response = api.post("accounts", json=body)
    assert response.status_code == 400
    assert missing in response.json()["message"]


def test_invalid_body_code_and_duplicate_code(api: Api) -> None:
    not_json = api.post("accounts", data="{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert api.post("accounts", json=[ACCOUNT]).status_code == 400
    assert api.post("accounts", json={**ACCOUNT, "code": "has\ttab"}).status_code == 400
    assert api.post("accounts", json={**ACCOUNT, "code": "x" * 81}).status_code == 400
    assert api.post("accounts", json=ACCOUNT).status_code == 200
    duplicate = api.post("accounts", json=ACCOUNT)
    assert duplicate.status_code == 400
    assert "acme" in duplicate.json()["message"]


def test_unknown_ids_answer_404(api: Api) -> None:
    for method in ("get", "put", "delete"):
        body = {"code": "p", "name": "P", "version": 1}  # valid, so the unknown id is what fails
        response = getattr(api, method)("products/00000000-0000-0000-0000-000000000000", json=body)
        assert response.status_code == 404, method
        assert response.json()["message"]


def test_every_collection_round_trips(emu: M3terEmulator, api: Api) -> None:
    """Limits off: four requests per collection in a burst exceed m3ter's 50/s per Organization."""
    emu.set_limits(enabled=False)
    bodies = related_bodies(api)
    for name in COLLECTIONS:
        body = {
            **bodies[name],
            **({"code": f"{name.replace('/', '_')}_code"} if "code" in bodies[name] else {}),
        }
        created = api.post(name, json=body)
        assert created.status_code == 200, (name, created.text)
        entity_id = created.json()["id"]
        assert api.get(f"{name}/{entity_id}").status_code == 200
        assert [e["id"] for e in api.get(name, params={"pageSize": 100}).json()["data"]][-1] == entity_id
        assert [e["id"] for e in emu.entities(name)][-1] == entity_id


def _page_all(api: Api, path: str, **params) -> tuple[list[dict], int]:
    items, pages, token = [], 0, None
    while True:
        query = dict(params, **({"nextToken": token} if token else {}))
        response = api.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items += body["data"]
        pages += 1
        token = body.get("nextToken")
        if not token:
            return items, pages


def test_paging_returns_every_item_once_in_creation_order(emu: M3terEmulator, api: Api) -> None:
    seeded = emu.seed("accounts", [{"code": f"acct{i:03}", "name": f"Account {i}"} for i in range(23)])
    items, pages = _page_all(api, "accounts", pageSize=5)
    assert [a["id"] for a in items] == [a["id"] for a in seeded]
    assert pages == 5


def test_no_next_token_when_the_last_page_is_exactly_full(emu: M3terEmulator, api: Api) -> None:
    emu.seed("products", [{"code": f"p{i}", "name": f"P{i}"} for i in range(4)])
    first = api.get("products", params={"pageSize": 2}).json()
    second = api.get("products", params={"pageSize": 2, "nextToken": first["nextToken"]}).json()
    assert len(second["data"]) == 2
    assert "nextToken" not in second


def test_default_page_size_and_empty_collection(emu: M3terEmulator, api: Api) -> None:
    assert api.get("meters").json() == {"data": []}
    emu.seed("meters", [{"code": f"m{i}", "name": f"M{i}"} for i in range(DEFAULT_PAGE_SIZE + 1)])
    body = api.get("meters").json()
    assert len(body["data"]) == DEFAULT_PAGE_SIZE
    assert body["nextToken"]


def test_page_size_limits(api: Api) -> None:
    assert api.get("accounts", params={"pageSize": 100}).status_code == 200
    assert api.get("products", params={"pageSize": 200}).status_code == 200
    for path, size in (("accounts", 101), ("products", 201), ("plans", 0), ("meters", "ten")):
        response = api.get(path, params={"pageSize": size})
        assert response.status_code == 400, (path, size)
        assert "pageSize" in response.json()["message"]
    assert api.get("accounts", params={"nextToken": "garbage!"}).status_code == 400


def test_ids_and_codes_filters(emu: M3terEmulator, api: Api) -> None:
    a, _, c = emu.seed("accounts", [{"code": x, "name": x} for x in ("a", "b", "c")])
    by_ids = api.get("accounts", params={"ids": f"{a['id']},{c['id']}"}).json()["data"]
    assert [x["code"] for x in by_ids] == ["a", "c"]
    repeated = api.get("accounts", params=[("codes", "b"), ("codes", "c")]).json()["data"]
    assert [x["code"] for x in repeated] == ["b", "c"]
    assert api.get("accounts", params={"codes": "zzz"}).json() == {"data": []}


def test_seed_returns_entities_with_system_fields(emu: M3terEmulator) -> None:
    [account] = emu.seed("accounts", [{"code": "acme", "name": "Acme"}])
    assert account["version"] == 1 and account["id"] and account["dtCreated"]
    with pytest.raises(ValueError, match="cannot seed 'nonsense'"):
        emu.seed("nonsense", [{}])


def test_organization_config_and_me(emu: M3terEmulator, api: Api) -> None:
    config = api.get("organizationconfig")
    assert config.status_code == 200
    assert config.json()["currency"] == "USD"
    me = api.get("users/me").json()
    assert me["organization"]["orgId"] == emu.org_id
    assert me["serviceUser"]["id"]


def test_unknown_route_and_method(api: Api) -> None:
    assert api.get("nothing-here").status_code == 404
    response = api.request("PATCH", "accounts")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
