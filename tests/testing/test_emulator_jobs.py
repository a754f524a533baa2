"""Long-running jobs: data exports and downloads, bill jobs and bills, statement jobs, file uploads."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
import requests

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.jobs import TIMELINES, JobBoard
from tests.testing.helpers import know_meters

if TYPE_CHECKING:
    from tests.testing.helpers import Api

USAGE_WINDOW = {"startDate": "2024-05-01T00:00:00Z", "endDate": "2024-06-01T00:00:00Z"}


@pytest.fixture(autouse=True)
def _known_meters(emu: M3terEmulator) -> None:
    know_meters(emu, "calls", "storage")


def _poll(
    fetch: Callable[[], dict], field: str, final: set[str], timeout: float = 5.0
) -> tuple[dict, list[str]]:
    """Poll until ``field`` is final; return the last body and every status seen (deduplicated in order)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        body = fetch()
        if not seen or seen[-1] != body[field]:
            seen.append(body[field])
        if body[field] in final:
            return body, seen
        assert time.monotonic() < deadline, f"still {body[field]} after {timeout}s"
        time.sleep(0.02)


def _in_order(seen: list[str], order: tuple[str, ...]) -> bool:
    positions = [order.index(status) for status in seen]
    return positions == sorted(positions)


def _measure(uid: str, account: str, meter: str, ts: str) -> dict:
    return {"uid": uid, "account": account, "meter": meter, "ts": ts, "measure": {"calls": 1}}


# -- timelines --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(TIMELINES))
def test_statuses_follow_the_timeline_with_elapsed_time(kind: str) -> None:
    now = [100.0]
    settled = []
    board = JobBoard(job_duration=3.0, on_settle=settled.append, clock=lambda: now[0])
    timeline = TIMELINES[kind]
    job = board.create(kind, {}, start=timeline.not_started is None)
    if timeline.not_started:
        assert board.status(job) == timeline.not_started
        now[0] += 50
        board.start(job)
    seen = []
    for _ in range(7):
        board.advance()
        seen.append(board.status(job))
        now[0] += 0.5
    expected_running = [s for s in timeline.running for _ in range(6 // len(timeline.running))]
    assert seen == [*expected_running, timeline.done]
    assert settled == [job]


def test_planned_failure_and_cancel() -> None:
    now = [0.0]
    board = JobBoard(job_duration=1.0, on_settle=lambda job: None, clock=lambda: now[0])
    board.plan_failures("dataexport")
    failing, passing = board.create("dataexport", {}), board.create("dataexport", {})
    bill_job = board.create("billjob", {})
    board.cancel(bill_job)
    now[0] = 1.0
    board.advance()
    assert [board.status(j) for j in (failing, passing, bill_job)] == ["FAILED", "SUCCEEDED", "CANCELLED"]
    with pytest.raises(ValueError, match="unknown job kind 'nonsense'"):
        board.plan_failures("nonsense")


# -- data exports -----------------------------------------------------------------------------
@pytest.fixture
def usage(emu: M3terEmulator, api: Api) -> dict:
    acme, globex = emu.seed(
        "accounts", [{"code": "acme", "name": "Acme"}, {"code": "globex", "name": "Globex"}]
    )
    calls, storage = emu.seed(
        "meters", [{"code": "calls", "name": "Calls"}, {"code": "storage", "name": "GB"}]
    )
    items = [
        _measure("a1", "acme", "calls", "2024-05-02T00:00:00Z"),
        _measure("a2", "acme", "storage", "2024-05-03T00:00:00Z"),
        _measure("g1", "globex", "calls", "2024-05-04T00:00:00Z"),
        _measure("old", "acme", "calls", "2024-04-30T23:59:59Z"),
        _measure("edge", "acme", "calls", "2024-06-01T00:00:00Z"),  # endDate is exclusive
    ]
    assert api.post("measurements", json={"measurements": items}).status_code == 200
    return {"acme": acme, "globex": globex, "calls": calls, "storage": storage}


def _export(api: Api, **body) -> str:
    response = api.post("dataexports/adhoc", json=body)
    assert response.status_code == 200, response.text
    return response.json()["jobId"]


def test_usage_export_runs_and_downloads_without_auth(emu: M3terEmulator, api: Api, usage: dict) -> None:
    job_id = _export(api, sourceType="USAGE", **USAGE_WINDOW, accountIds=[usage["acme"]["id"]])
    early = api.get(f"dataexports/jobs/{job_id}/getdownloadurl")
    assert early.status_code == 400
    assert early.json()["message"]
    job, seen = _poll(lambda: api.get(f"dataexports/jobs/{job_id}").json(), "status", {"SUCCEEDED", "FAILED"})
    assert seen[-1] == "SUCCEEDED" and _in_order(seen, ("PENDING", "RUNNING", "SUCCEEDED"))
    assert job["sourceType"] == "USAGE" and job["startedAt"] and job["dateCreated"]

    link = api.get(f"dataexports/jobs/{job_id}/getdownloadurl").json()
    assert link["url"].startswith(f"{emu.url}/_emulator/downloads/")
    assert link["expirationTime"]
    download = requests.get(link["url"], timeout=5)
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert sorted(row["uid"] for row in rows) == ["a1", "a2"]
    assert rows[0]["measure.calls"] == "1"
    assert emu.stats()["authorization_on_download"] == 0
    requests.get(link["url"], headers={"Authorization": "Bearer x"}, timeout=5)
    assert emu.stats()["authorization_on_download"] == 1


def test_usage_export_jsonl_filtered_by_meter(api: Api, usage: dict) -> None:
    job_id = _export(
        api, sourceType="USAGE", **USAGE_WINDOW, meterIds=[usage["calls"]["id"]], exportFileFormat="JSONL"
    )
    _poll(lambda: api.get(f"dataexports/jobs/{job_id}").json(), "status", {"SUCCEEDED"})
    download = requests.get(api.get(f"dataexports/jobs/{job_id}/getdownloadurl").json()["url"], timeout=5)
    rows = [json.loads(line) for line in download.text.splitlines()]
    assert sorted(row["uid"] for row in rows) == ["a1", "g1"]
    assert rows[0]["measure"] == {"calls": 1}


def test_operational_export_of_accounts(emu: M3terEmulator, api: Api, usage: dict) -> None:
    job_id = _export(
        api, sourceType="OPERATIONAL", operationalDataTypes=["ACCOUNTS"], exportFileFormat="JSONL"
    )
    _poll(lambda: api.get(f"dataexports/jobs/{job_id}").json(), "status", {"SUCCEEDED"})
    download = requests.get(api.get(f"dataexports/jobs/{job_id}/getdownloadurl").json()["url"], timeout=5)
    rows = [json.loads(line) for line in download.text.splitlines()]
    assert [row["code"] for row in rows] == ["acme", "globex"]
    assert {row["operationalDataType"] for row in rows} == {"ACCOUNTS"}


@pytest.mark.parametrize(
    "body",
    [
        {"sourceType": "NOPE"},
        {"sourceType": "USAGE", "startDate": "2024-05-01T00:00:00Z"},
        {"sourceType": "USAGE", "startDate": "2024-05-02T00:00:00Z", "endDate": "2024-05-01T00:00:00Z"},
        {"sourceType": "USAGE", "startDate": "2024-05-01", "endDate": "2024-06-01"},
        {"sourceType": "USAGE", "startDate": "2024-05-01T00:00:00Z", "endDate": "2999-01-01T00:00:00Z"},
        {"sourceType": "USAGE", **USAGE_WINDOW, "exportFileFormat": "XML"},
        {"sourceType": "OPERATIONAL"},
        {"sourceType": "OPERATIONAL", "operationalDataTypes": ["WIDGETS"]},
    ],
)
def test_invalid_export_requests_answer_400(api: Api, body: dict) -> None:
    response = api.post("dataexports/adhoc", json=body)
    assert response.status_code == 400
    assert response.json()["message"]


def test_failed_export_has_no_download(emu: M3terEmulator, api: Api) -> None:
    emu.fail_next_job("dataexport")
    failing = _export(api, sourceType="OPERATIONAL", operationalDataTypes=["PRODUCTS"])
    passing = _export(api, sourceType="OPERATIONAL", operationalDataTypes=["PRODUCTS"])
    job, _ = _poll(lambda: api.get(f"dataexports/jobs/{failing}").json(), "status", {"SUCCEEDED", "FAILED"})
    assert job["status"] == "FAILED"
    assert api.get(f"dataexports/jobs/{failing}/getdownloadurl").status_code == 400
    assert (
        _poll(lambda: api.get(f"dataexports/jobs/{passing}").json(), "status", {"SUCCEEDED", "FAILED"})[0][
            "status"
        ]
        == "SUCCEEDED"
    )


def test_export_jobs_list_and_unknown_job(emu: M3terEmulator, api: Api) -> None:
    emu.job_duration = 0
    ids = [_export(api, sourceType="OPERATIONAL", operationalDataTypes=["PLANS"]) for _ in range(3)]
    listed = api.get("dataexports/jobs", params={"pageSize": 2}).json()
    assert [job["id"] for job in listed["data"]] == ids[:2] and listed["nextToken"]
    assert (
        api.get("dataexports/jobs", params={"status": "SUCCEEDED"}).json()["data"][0]["status"] == "SUCCEEDED"
    )
    assert api.get("dataexports/jobs", params={"status": "RUNNING"}).json() == {"data": []}
    assert api.get("dataexports/jobs/nope").status_code == 404
    assert api.get("dataexports/jobs/nope/getdownloadurl").status_code == 404


def test_fail_jobs_over_http(emu: M3terEmulator, api: Api) -> None:
    response = requests.post(
        f"{emu.url}/_emulator/fail-jobs", json={"kind": "dataexport", "times": 1}, timeout=5
    )
    assert response.status_code == 200
    assert requests.post(f"{emu.url}/_emulator/fail-jobs", json={"kind": "x"}, timeout=5).status_code == 400
    emu.job_duration = 0
    job_id = _export(api, sourceType="OPERATIONAL", operationalDataTypes=["PLANS"])
    assert api.get(f"dataexports/jobs/{job_id}").json()["status"] == "FAILED"


def test_expired_or_unknown_download_url(emu: M3terEmulator) -> None:
    assert requests.get(f"{emu.url}/_emulator/downloads/nothing", timeout=5).status_code == 404


# -- bill jobs and bills ----------------------------------------------------------------------
def test_bill_job_completes_and_creates_one_bill_per_account(emu: M3terEmulator, api: Api) -> None:
    a, b, _ = emu.seed("accounts", [{"code": c, "name": c, "currency": "GBP"} for c in ("a", "b", "c")])
    created = api.post("billjobs", json={"accountIds": [a["id"], b["id"]], "billDate": "2024-06-01"})
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["status"] == "PENDING" and job["accountIds"] == [a["id"], b["id"]]
    done, seen = _poll(lambda: api.get(f"billjobs/{job['id']}").json(), "status", {"COMPLETE", "CANCELLED"})
    assert done["status"] == "COMPLETE"
    assert _in_order(seen, ("PENDING", "INITIALIZING", "RUNNING", "COMPLETE"))
    assert len(done["billIds"]) == 2 and done["total"] == 2 and done["pending"] == 0
    bills = api.get("bills", params={"billJobId": job["id"]}).json()["data"]
    assert sorted(bill["accountId"] for bill in bills) == sorted([a["id"], b["id"]])
    bill = api.get(f"bills/{bills[0]['id']}").json()
    assert bill["billJobId"] == job["id"] and bill["billDate"] == "2024-06-01" and bill["currency"] == "GBP"
    assert bill["startDate"] == "2024-05-01" and bill["status"] == "PENDING"
    by_account = api.get("bills", params={"accountId": a["id"], "pageSize": 1}).json()
    assert [x["accountId"] for x in by_account["data"]] == [a["id"]] and "nextToken" not in by_account


def test_bill_job_without_accounts_bills_every_account(emu: M3terEmulator, api: Api) -> None:
    emu.seed("accounts", [{"code": f"acct{i}", "name": f"{i}"} for i in range(3)])
    job = api.post("billjobs", json={}).json()
    done, _ = _poll(lambda: api.get(f"billjobs/{job['id']}").json(), "status", {"COMPLETE"})
    assert len(done["billIds"]) == 3
    first = api.get("bills", params={"pageSize": 2}).json()
    rest = api.get("bills", params={"pageSize": 2, "nextToken": first["nextToken"]}).json()
    assert len(first["data"]) + len(rest["data"]) == 3 and "nextToken" not in rest


def test_cancel_a_running_bill_job(emu: M3terEmulator, api: Api) -> None:
    emu.seed("accounts", [{"code": "a", "name": "a"}])
    emu.job_duration = 5
    job = api.post("billjobs", json={}).json()
    cancelled = api.post(f"billjobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    assert api.get(f"billjobs/{job['id']}").json()["status"] == "CANCELLED"
    again = api.post(f"billjobs/{job['id']}/cancel")
    assert again.status_code == 400 and again.json()["message"]
    assert api.get("bills").json() == {"data": []}


def test_fail_next_bill_job_ends_cancelled(emu: M3terEmulator, api: Api) -> None:
    emu.seed("accounts", [{"code": "a", "name": "a"}])
    emu.fail_next_job("billjob")
    job = api.post("billjobs", json={}).json()
    done, _ = _poll(lambda: api.get(f"billjobs/{job['id']}").json(), "status", {"COMPLETE", "CANCELLED"})
    assert done["status"] == "CANCELLED" and "billIds" not in done
    assert emu.entities("bills") == []


def test_an_eleventh_concurrent_bill_job_answers_429(emu: M3terEmulator, api: Api) -> None:
    emu.job_duration = 30
    for _ in range(10):
        assert api.post("billjobs", json={}).status_code == 200
    refused = api.post("billjobs", json={})
    assert refused.status_code == 429 and refused.json()["message"]
    assert len(api.get("billjobs", params={"active": "TRUE", "pageSize": 100}).json()["data"]) == 10
    first = api.get("billjobs", params={"pageSize": 1}).json()["data"][0]
    api.post(f"billjobs/{first['id']}/cancel")
    assert api.post("billjobs", json={}).status_code == 200
    cancelled = api.get("billjobs", params={"status": "CANCELLED"}).json()["data"]
    assert [job["id"] for job in cancelled] == [first["id"]]


@pytest.mark.parametrize(
    "body",
    [
        {"accountIds": []},
        {"accountIds": ["missing"]},
        {"billDate": "June"},
        {"billingFrequency": "HOURLY"},
        {"targetCurrency": "EURO"},
    ],
)
def test_invalid_bill_jobs_answer_400(api: Api, body: dict) -> None:
    assert api.post("billjobs", json=body).status_code == 400


# -- statement jobs ---------------------------------------------------------------------------
def _a_bill(emu: M3terEmulator) -> dict:
    account = emu.seed("accounts", [{"code": "acme", "name": "Acme"}])[0]
    return emu.seed("bills", [{"accountId": account["id"], "billDate": "2024-06-01", "status": "PENDING"}])[0]


def test_statement_job_completes_with_presigned_statements(emu: M3terEmulator, api: Api) -> None:
    bill = _a_bill(emu)
    created = api.post("statementjobs", json={"billId": bill["id"], "includeCsvFormat": True})
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["statementJobStatus"] == "PENDING" and "presignedJsonStatementUrl" not in job
    final = {"COMPLETE", "FAILED", "CANCELLED"}
    done, _ = _poll(lambda: api.get(f"statementjobs/{job['id']}").json(), "statementJobStatus", final)
    assert done["statementJobStatus"] == "COMPLETE"
    statement = requests.get(done["presignedJsonStatementUrl"], timeout=5).json()
    assert statement["id"] == bill["id"]
    csv_text = requests.get(done["presignedCsvStatementUrl"], timeout=5).text
    assert bill["id"] in csv_text
    listed = api.get("statementjobs", params={"billId": bill["id"]}).json()["data"]
    assert [j["id"] for j in listed] == [job["id"]]
    assert emu.stats()["authorization_on_download"] == 0


def test_statement_job_failure_cancel_and_validation(emu: M3terEmulator, api: Api) -> None:
    bill = _a_bill(emu)
    emu.fail_next_job("statementjob")
    job = api.post("statementjobs", json={"billId": bill["id"]}).json()
    final = {"COMPLETE", "FAILED", "CANCELLED"}
    done, _ = _poll(lambda: api.get(f"statementjobs/{job['id']}").json(), "statementJobStatus", final)
    assert done["statementJobStatus"] == "FAILED" and "presignedJsonStatementUrl" not in done
    emu.job_duration = 5
    running = api.post("statementjobs", json={"billId": bill["id"]}).json()
    assert api.post(f"statementjobs/{running['id']}/cancel").json()["statementJobStatus"] == "CANCELLED"
    assert api.get("statementjobs", params={"active": "true"}).json() == {"data": []}
    assert api.post("statementjobs", json={}).status_code == 400
    assert api.post("statementjobs", json={"billId": "missing"}).status_code == 400


# -- measurement file uploads -----------------------------------------------------------------
def _upload(api: Api, content: bytes) -> tuple[str, dict]:
    response = api.post(
        "fileuploads/measurements/generateUploadUrl",
        json={"fileName": "usage.json", "contentType": "application/json", "contentLength": len(content)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return body["jobId"], body


def test_file_upload_ingests_measurements(emu: M3terEmulator, api: Api) -> None:
    items = [_measure(f"f{i}", "acme", "calls", "2024-05-01T00:00:00Z") for i in range(3)]
    items.append({"account": "acme"})  # invalid: counted as a failed row
    content = json.dumps({"measurements": items}).encode()
    job_id, target = _upload(api, content)
    assert target["url"].startswith(f"{emu.url}/_emulator/uploads/")
    assert target["headers"] == {"Content-Type": "application/json"}
    assert api.get(f"fileuploads/measurements/jobs/{job_id}").json()["status"] == "notUploaded"
    put = requests.put(target["url"], data=content, headers=target["headers"], timeout=5)
    assert put.status_code == 200
    done, seen = _poll(
        lambda: api.get(f"fileuploads/measurements/jobs/{job_id}").json(), "status", {"succeeded", "failed"}
    )
    assert done["status"] == "succeeded" and seen[0] in ("running", "succeeded")
    assert (done["totalRows"], done["processedRows"], done["failedRows"]) == (4, 3, 1)
    assert [m["uid"] for m in emu.measurements()] == ["f0", "f1", "f2"]
    assert requests.put(target["url"], data=content, timeout=5).status_code == 404  # one use only
    assert [j["id"] for j in api.get("fileuploads/measurements/jobs").json()["data"]] == [job_id]
    assert emu.stats()["authorization_on_upload"] == 0


def test_file_upload_length_mismatch_failure_and_bad_json(emu: M3terEmulator, api: Api) -> None:
    _, target = _upload(api, b"[]")
    assert requests.put(target["url"], data=b"[ ]", timeout=5).status_code == 403
    emu.job_duration = 0
    emu.fail_next_job("fileupload")
    content = json.dumps([_measure("x", "acme", "calls", "2024-05-01T00:00:00Z")]).encode()
    failing, target = _upload(api, content)
    requests.put(target["url"], data=content, timeout=5)
    assert api.get(f"fileuploads/measurements/jobs/{failing}").json()["status"] == "failed"
    assert emu.measurements() == []
    broken, target = _upload(api, b"{oops")
    requests.put(target["url"], data=b"{oops", timeout=5)
    assert api.get(f"fileuploads/measurements/jobs/{broken}").json()["status"] == "failed"
    assert api.post("fileuploads/measurements/generateUploadUrl", json={"fileName": "x"}).status_code == 400
