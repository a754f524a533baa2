"""The upload's PUT, without a network: m3ter's headers are sent, the bearer token never is, and the
file goes as it was written (requests-mock)."""

from __future__ import annotations

import json

import pytest
import requests

from m3ter_provider.core.ingest.upload import prepare, start_upload, summarize
from m3ter_provider.core.transport import Answer
from m3ter_provider.errors import M3terAPIError, M3terConfigError

URL = "https://uploads.example.com/bucket/key?X-Amz-Signature=secret-signature"


class FakeTransport:
    def call(self, method, url, send, *, idempotent, json_body=True):
        assert (method, idempotent, json_body) == ("PUT", True, False)
        return Answer(send())


class FakeClient:
    user_agent = "test-agent"
    timeout = 5.0
    transport = FakeTransport()

    def __init__(self, answer):
        self.answer = answer
        self.posted = []

    def request(self, method, path, json=None):
        self.posted.append((method, path, json))
        return self.answer


def test_the_put_sends_m3ters_headers_and_the_file_but_no_token(requests_mock):
    received = {}

    def answer(request, context):
        body = request.body
        received["body"] = body if isinstance(body, bytes) else b"".join(body)  # streamed: read now
        return ""

    requests_mock.put(URL, text=answer)
    headers = {"Content-Type": "application/json", "x-amz-server-side-encryption": "AES256"}
    client = FakeClient({"jobId": "job-1", "url": URL, "headers": headers})
    rows = [
        {"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "measure": {"x": i}} for i in range(3)
    ]
    with prepare(rows, uid_namespace="n") as batch:
        (upload,) = batch.files
        assert start_upload(client, upload) == "job-1"
        upload.file.seek(0)
        written = upload.file.read()
    [(method, path, body)] = client.posted
    assert (method, path) == ("POST", "fileuploads/measurements/generateUploadUrl")
    assert body == {"fileName": upload.name, "contentType": "application/json", "contentLength": len(written)}
    assert len(upload.name) <= 100
    sent = requests_mock.last_request
    assert sent.headers["x-amz-server-side-encryption"] == "AES256"
    assert sent.headers["Content-Type"] == "application/json"
    assert "Authorization" not in sent.headers
    assert received["body"] == written
    items = json.loads(written)["measurements"]
    assert [item["measure"]["x"] for item in items] == [0, 1, 2] and all(item["uid"] for item in items)


def test_a_refused_put_names_the_path_but_not_the_signature(requests_mock):
    requests_mock.put(URL, status_code=403, text="<Error>Request has expired</Error>")
    client = FakeClient({"jobId": "job-1", "url": URL, "headers": {}})
    one = [{"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z"}]
    with prepare(one, uid_namespace="n") as batch, pytest.raises(M3terAPIError, match="one minute") as caught:
        start_upload(client, batch.files[0])
    assert "secret-signature" not in str(caught.value)


def test_an_answer_without_a_url_is_an_error():
    client = FakeClient({"jobId": "job-1"})
    one = [{"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z"}]
    with prepare(one, uid_namespace="n") as batch, pytest.raises(M3terAPIError, match="without a jobId"):
        start_upload(client, batch.files[0])


def test_the_same_input_gives_the_same_file_digest_and_other_input_another():
    rows = [
        {"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "measure": {"x": i}} for i in range(5)
    ]
    with prepare(rows, uid_namespace="n") as one, prepare(rows[::-1], uid_namespace="n") as reordered:
        assert one.files[0].digest != reordered.files[0].digest  # same uids, other order in the file
    with prepare(rows, uid_namespace="n") as again:
        assert again.files[0].digest == one.files[0].digest
    with prepare(rows[:4], uid_namespace="n") as fewer:
        assert fewer.files[0].digest != one.files[0].digest


def test_max_file_bytes_is_checked():
    with pytest.raises(M3terConfigError, match="max_file_bytes"):
        prepare([], max_file_bytes=10)
    with pytest.raises(M3terConfigError, match="max_file_bytes"):
        prepare([], max_file_bytes=(1 << 30) + 1)


def test_summarize_reports_the_worst_status_and_row_totals():
    jobs = [
        {"id": "1", "status": "succeeded", "totalRows": 3, "processedRows": 3, "failedRows": 0},
        {"id": "2", "status": "failed", "totalRows": 2, "processedRows": 1, "failedRows": 1},
    ]
    assert summarize(jobs) == {
        "job_ids": ["1", "2"],
        "status": "failed",
        "total_rows": 5,
        "processed_rows": 4,
        "failed_rows": 1,
    }
    assert summarize([{"id": "3", "status": "running"}])["total_rows"] is None


def test_requests_streams_the_file_in_blocks():
    from m3ter_provider.core.ingest.upload import _Reader

    class Handle:
        def __init__(self):
            self.reads = 0

        def read(self, size):
            self.reads += 1
            return b"x" * size if self.reads <= 3 else b""

    reader = _Reader(Handle(), 3 << 20)
    request = requests.Request("PUT", URL, data=reader).prepare()
    assert request.headers["Content-Length"] == str(3 << 20)
    assert "Transfer-Encoding" not in request.headers
