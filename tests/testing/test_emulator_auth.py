"""Token exchange and bearer-token checks."""

from __future__ import annotations

import base64
import json

import requests

from m3ter_provider.testing import M3terEmulator


def _token(emu: M3terEmulator, **kwargs) -> requests.Response:
    kwargs.setdefault("auth", (emu.access_key_id, emu.api_secret))
    kwargs.setdefault("data", {"grant_type": "client_credentials"})
    return requests.post(f"{emu.url}/oauth/token", timeout=5, **kwargs)


def _jwt_payload(token: str) -> dict:
    segment = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def test_token_exchange_returns_a_jwt_shaped_bearer_token(emu: M3terEmulator) -> None:
    response = _token(emu)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 18000
    assert "scope" not in body  # the spec types scope as a string: null would not validate
    assert len(body["access_token"].split(".")) == 3
    payload = _jwt_payload(body["access_token"])
    assert payload["orgId"] == emu.org_id
    assert payload["exp"] - payload["iat"] == 18000
    assert payload["sub"]


def test_each_exchange_issues_a_new_token_and_json_grant_works(emu: M3terEmulator) -> None:
    first = _token(emu).json()["access_token"]
    second = _token(emu, data=None, json={"grant_type": "client_credentials"}).json()["access_token"]
    assert first != second
    assert emu.stats()["token_exchanges"] == 2


def test_configured_credentials_and_lifetime() -> None:
    with M3terEmulator(access_key_id="k", api_secret="s", org_id="o", token_expires_in=60) as emu:
        body = _token(emu).json()
        assert body["expires_in"] == 60
        assert _jwt_payload(body["access_token"])["orgId"] == "o"
        assert _token(emu, auth=("emulator-access-key", "emulator-api-secret")).status_code == 401


def test_wrong_or_missing_credentials_answer_401(emu: M3terEmulator) -> None:
    wrong = _token(emu, auth=(emu.access_key_id, "nope"))
    assert wrong.status_code == 401
    assert wrong.json()["message"]
    assert _token(emu, auth=None).status_code == 401
    assert emu.stats()["token_failures"] == 2
    assert emu.stats()["token_exchanges"] == 0


def test_wrong_grant_type_answers_400(emu: M3terEmulator) -> None:
    response = _token(emu, data={"grant_type": "password"})
    assert response.status_code == 400
    assert "grant_type" in response.json()["message"]
    assert _token(emu, data={}).status_code == 400


def test_api_calls_need_a_valid_bearer_token(emu: M3terEmulator) -> None:
    url = f"{emu.url}/organizations/{emu.org_id}/accounts"
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 403
    assert missing.json()["message"]
    unknown = requests.get(url, headers={"Authorization": "Bearer not-a-token"}, timeout=5)
    assert unknown.status_code == 403
    token = _token(emu).json()["access_token"]
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 200


def test_expired_token_answers_403_and_a_new_one_works(emu: M3terEmulator) -> None:
    url = f"{emu.url}/organizations/{emu.org_id}/accounts"
    old = _token(emu).json()["access_token"]
    assert emu.expire_tokens() == 1
    expired = requests.get(url, headers={"Authorization": f"Bearer {old}"}, timeout=5)
    assert expired.status_code == 403
    assert "expired" in expired.json()["message"]
    fresh = _token(emu).json()["access_token"]
    assert requests.get(url, headers={"Authorization": f"Bearer {fresh}"}, timeout=5).status_code == 200


def test_expire_tokens_over_http(emu: M3terEmulator) -> None:
    token = _token(emu).json()["access_token"]
    response = requests.post(f"{emu.url}/_emulator/expire-tokens", timeout=5)
    assert response.json() == {"expired": 1}
    url = f"{emu.url}/organizations/{emu.org_id}/organizationconfig"
    assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 403


def test_token_lifetime_elapses() -> None:
    with M3terEmulator(token_expires_in=0) as emu:
        token = _token(emu).json()["access_token"]
        url = f"{emu.url}/organizations/{emu.org_id}/accounts"
        assert requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5).status_code == 403


def test_another_org_answers_403(emu: M3terEmulator) -> None:
    token = _token(emu).json()["access_token"]
    response = requests.get(
        f"{emu.url}/organizations/someone-else/accounts",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == 403
    assert "someone-else" in response.json()["message"]
