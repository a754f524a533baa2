"""A small authenticated client of a running emulator, for the emulator's tests."""

from __future__ import annotations

from typing import Any

import requests

from m3ter_provider.testing import M3terEmulator


def know_meters(emulator: M3terEmulator, *codes: str) -> None:
    """Create Meters (no Data Fields) so measurements for them are ingested, not refused by m3ter."""
    emulator.seed(
        "meters", [{"code": code, "name": code, "dataFields": [], "derivedFields": []} for code in codes]
    )


class Api:
    """A requests session authenticated against an emulator, with org-scoped URL helpers."""

    def __init__(self, emulator: M3terEmulator, session: requests.Session | None = None) -> None:
        self.emulator = emulator
        self.session = session or requests.Session()
        self.token = self.fetch_token()
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    def fetch_token(self) -> str:
        response = self.session.post(
            f"{self.emulator.url}/oauth/token",
            auth=(self.emulator.access_key_id, self.emulator.api_secret),
            data={"grant_type": "client_credentials"},
            timeout=5,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def url(self, path: str) -> str:
        return f"{self.emulator.url}/organizations/{self.emulator.org_id}/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)
