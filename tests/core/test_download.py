"""download(): streams a presigned URL without the bearer token; failures stay in the error family."""

from __future__ import annotations

import pytest
import requests

from m3ter_provider.auth import TokenCache
from m3ter_provider.client import M3terClient
from m3ter_provider.config import M3terSettings
from m3ter_provider.download import download
from m3ter_provider.errors import M3terAPIError, M3terTransportError

PRESIGNED = "https://files.m3ter.test/export.csv?X-Amz-Signature=sig-do-not-log"


@pytest.fixture
def client():
    settings = M3terSettings.from_connection_fields(
        "m3ter_test",
        login="AKID",
        password="secret-value",
        host="https://api.m3ter.test",
        extra={"org_id": "o"},
    )
    c = M3terClient(settings, token_cache=TokenCache())
    c.sleep = lambda _seconds: None
    return c


def test_streams_to_a_local_path_without_any_authorization(client, requests_mock, tmp_path):
    route = requests_mock.get(PRESIGNED, content=b"a,b\n1,2\n")
    target = tmp_path / "nested" / "export.csv"
    assert download(client, PRESIGNED, target) == {"destination": str(target), "bytes": 8}
    assert target.read_bytes() == b"a,b\n1,2\n"
    assert "Authorization" not in route.last_request.headers
    assert requests_mock.call_count == 1  # no token exchange either


def test_an_expired_url_is_a_clear_error_without_the_signature(client, requests_mock, tmp_path):
    requests_mock.get(PRESIGNED, status_code=403, text="<Error>Request has expired</Error>")
    with pytest.raises(M3terAPIError) as err:
        download(client, PRESIGNED, tmp_path / "x.csv")
    assert "HTTP 403" in str(err.value) and "15 minutes" in str(err.value)
    assert "sig-do-not-log" not in str(err.value)


def test_a_download_that_breaks_off_is_a_transport_error(client, requests_mock, tmp_path, monkeypatch):
    requests_mock.get(PRESIGNED, content=b"x" * 100)

    def broken(self, chunk_size=1):
        yield b"x" * 10
        raise requests.exceptions.ChunkedEncodingError("connection broken")

    monkeypatch.setattr(requests.Response, "iter_content", broken)
    with pytest.raises(M3terTransportError, match="broke off after 10 bytes") as err:
        download(client, PRESIGNED, tmp_path / "x.csv")
    assert "sig-do-not-log" not in str(err.value)
