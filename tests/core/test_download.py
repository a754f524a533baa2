"""download(): streams a presigned URL without the bearer token; failures stay in the error family."""

from __future__ import annotations

import os
import pathlib

import pytest
import requests

from m3ter_provider.core.client import M3terClient
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.download import download
from m3ter_provider.core.tokens.cache import TokenCache
from m3ter_provider.errors import M3terAPIError, M3terDestinationError, M3terTransportError

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


def test_a_destination_that_cannot_be_written_is_a_destination_error(client, requests_mock, tmp_path):
    requests_mock.get(PRESIGNED, content=b"a,b\n1,2\n")
    (tmp_path / "a-file").write_bytes(b"kept")
    target = tmp_path / "a-file" / "export.csv"  # its folder is a file: mkdir fails
    with pytest.raises(M3terDestinationError, match="Could not write the download") as caught:
        download(client, PRESIGNED, target)
    assert "sig-do-not-log" not in str(caught.value)
    assert (tmp_path / "a-file").read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_download_that_breaks_off_is_a_transport_error(client, requests_mock, tmp_path, monkeypatch):
    requests_mock.get(PRESIGNED, content=b"x" * 100)

    def broken(self, chunk_size=1):
        yield b"x" * 10
        raise requests.exceptions.ChunkedEncodingError("connection broken")

    monkeypatch.setattr(requests.Response, "iter_content", broken)
    with pytest.raises(M3terTransportError, match="broke off after 10 bytes") as err:
        download(client, PRESIGNED, tmp_path / "x.csv")
    assert "sig-do-not-log" not in str(err.value)


# ---------------------------------------------------------------- atomic downloads (local server)
def _broken_off(server, path="/files/export.csv"):
    from tests.core.local_server import Answer

    server.answer(path, Answer(body=b"n" * 1000, content_type="text/csv", cut_after=100))
    return f"{server.url}{path}?X-Amz-Signature=sig-do-not-log"


@pytest.fixture
def server():
    from tests.core.local_server import LocalServer

    with LocalServer() as local:
        yield local


def test_a_broken_off_download_leaves_the_previous_file_and_no_temporary(client, server, tmp_path):
    target = tmp_path / "export.csv"
    target.write_bytes(b"the previous good file")
    with pytest.raises(M3terTransportError) as err:
        download(client, _broken_off(server), target)
    text = str(err.value)
    assert "broke off after 100 of 1,000 bytes" in text and "left as it was" in text
    assert "after 6 attempts" in text and server.count("/files/export.csv") == 6  # 1 + max_retries
    assert "sig-do-not-log" not in text
    assert target.read_bytes() == b"the previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["export.csv"]


def test_a_download_that_broke_off_once_is_started_again(client, server, tmp_path):
    from tests.core.local_server import Answer

    body = b"0123456789" * 100
    server.answer(
        "/files/export.csv",
        Answer(body=body, content_type="text/csv", cut_after=300),
        Answer(body=body, content_type="text/csv"),
    )
    target = tmp_path / "export.csv"
    assert download(client, f"{server.url}/files/export.csv", target)["bytes"] == 1000
    assert target.read_bytes() == body
    assert server.count("/files/export.csv") == 2
    assert [p.name for p in tmp_path.iterdir()] == ["export.csv"]


def test_a_complete_download_replaces_the_file_through_a_temporary_beside_it(client, server, tmp_path):
    from tests.core.local_server import Answer

    server.answer("/files/export.csv", Answer(body=b"a,b\n" * 500, content_type="text/csv"))
    target = tmp_path / "export.csv"
    target.write_bytes(b"old")
    seen = []
    real_replace = os.replace

    def spy(source, destination):
        seen.append((pathlib.Path(source).parent, pathlib.Path(source).name, pathlib.Path(destination)))
        real_replace(source, destination)

    os.replace = spy
    try:
        assert download(client, f"{server.url}/files/export.csv", target)["bytes"] == 2000
    finally:
        os.replace = real_replace
    assert target.read_bytes() == b"a,b\n" * 500
    [(folder, name, destination)] = seen
    assert folder == tmp_path and name.startswith(".export.csv.") and name.endswith(".part")
    assert destination == target
    assert [p.name for p in tmp_path.iterdir()] == ["export.csv"]


def test_object_storage_paths_are_written_beside_and_renamed(client, server, tmp_path):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    from tests.core.local_server import Answer

    target = ObjectStoragePath(f"file://{tmp_path}/bucket/export.csv")
    with pytest.raises(M3terTransportError, match="after 100 of 1,000 bytes"):
        download(client, _broken_off(server), target)
    assert sorted(p.name for p in (tmp_path / "bucket").iterdir()) == []
    server.answer("/files/good.csv", Answer(body=b"x" * 300, content_type="text/csv"))
    assert download(client, f"{server.url}/files/good.csv", target)["bytes"] == 300
    assert (tmp_path / "bucket" / "export.csv").read_bytes() == b"x" * 300
    assert [p.name for p in (tmp_path / "bucket").iterdir()] == ["export.csv"]
    with pytest.raises(M3terTransportError):
        download(client, _broken_off(server), target)
    assert (tmp_path / "bucket" / "export.csv").read_bytes() == b"x" * 300
    assert [p.name for p in (tmp_path / "bucket").iterdir()] == ["export.csv"]


def test_a_destination_with_a_signed_query_never_reaches_the_result_or_the_log(
    client, requests_mock, tmp_path, caplog
):
    import logging

    requests_mock.get(PRESIGNED, content=b"a,b\n")
    target = tmp_path / "export.csv?X-Amz-Signature=dst-secret&X-Amz-Credential=cred"
    with caplog.at_level(logging.INFO, logger="m3ter_provider.core.download"):
        result = download(client, PRESIGNED, target)
    assert target.read_bytes() == b"a,b\n"
    assert result == {"destination": str(tmp_path / "export.csv") + "?<query hidden>", "bytes": 4}
    assert "dst-secret" not in caplog.text and "Downloaded 4 bytes to" in caplog.text


def test_plural_counts():
    from m3ter_provider.core._text import plural

    assert [plural(n, "bill") for n in (0, 1, 2, 12000)] == ["0 bills", "1 bill", "2 bills", "12,000 bills"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"
