"""Measurements m3ter accepts (200) and then refuses: ingest.validation.failure Events and files."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import requests

from m3ter_provider.testing import M3terEmulator

if TYPE_CHECKING:
    from tests.testing.helpers import Api

TS = "2024-05-01T10:00:00Z"
FAILURE = "ingest.validation.failure"


@pytest.fixture(autouse=True)
def _catalogue(emu: M3terEmulator) -> None:
    emu.seed("accounts", [{"code": "acme", "name": "Acme"}])
    emu.seed("meters", [
        {"code": "calls", "name": "Calls", "derivedFields": [],
         "dataFields": [{"category": "MEASURE", "code": "n", "name": "N"},
                        {"category": "WHERE", "code": "region", "name": "Region"}]},
    ])  # fmt: skip


def _m(uid: str, **change) -> dict:
    return {"uid": uid, "account": "acme", "meter": "calls", "ts": TS, "measure": {"n": 1}, **change}


def _failures(api: Api, **params) -> list[dict]:
    response = api.get("events", params={"eventName": FAILURE, "pageSize": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def test_bad_measurements_are_accepted_then_refused_with_events(emu: M3terEmulator, api: Api) -> None:
    batch = [
        _m("good-1"),
        _m("no-meter", meter="storage"),
        _m("missing-field", measure={"other": 2}),
        _m("near-account", account="ACME"),
        _m("good-2", account="newco", where={"region": "eu"}),  # unknown code: skeleton Account
        _m("good-1"),  # re-sent uid
    ]
    response = api.post("measurements", json={"measurements": batch})
    assert response.status_code == 200 and response.json() == {"result": "accepted"}
    assert [m["uid"] for m in emu.measurements()] == ["good-1", "good-2"]
    assert sorted(a["code"] for a in emu.entities("accounts")) == ["acme", "newco"]
    events = _failures(api)
    by_uid = {e["m3terEvent"]["eventData"]["uid"]: e["m3terEvent"]["eventData"]["errorType"] for e in events}
    assert by_uid == {
        "no-meter": "UndefinedMeter",
        "missing-field": "MissingField",
        "near-account": "InvalidAccountCode",
        "good-1": "DuplicateUid",
    }
    assert [e["m3terEvent"]["eventData"]["uid"] for e in events] == [  # newest first
        "good-1", "near-account", "missing-field", "no-meter"
    ]  # fmt: skip


def test_event_detail_file_says_what_went_wrong(emu: M3terEmulator, api: Api) -> None:
    api.post("measurements", json={"measurements": [_m("x", meter="storage")]})
    (event,) = _failures(api)
    data = event["m3terEvent"]["eventData"]
    assert data["getDownloadUrl"].startswith(
        f"{emu.url}/organizations/{emu.org_id}/measurements/failedIngest/"
    )
    url = api.session.get(data["getDownloadUrl"], timeout=5).json()["url"]
    detail = requests.get(url, timeout=5).json()  # presigned: no bearer token
    assert detail["errorType"] == "UndefinedMeter" and "storage" in detail["errorMessage"]
    assert detail["measurement"]["uid"] == "x"
    assert api.get(f"events/{event['id']}").json() == event
    assert api.get("measurements/failedIngest/getDownloadUrl").status_code == 400


def test_event_list_filters_and_paging(emu: M3terEmulator, api: Api) -> None:
    api.post("measurements", json={"measurements": [_m(f"bad-{i}", meter="storage") for i in range(5)]})
    first = api.get("events", params={"eventName": FAILURE, "pageSize": 2}).json()
    second = api.get("events", params={"eventName": FAILURE, "pageSize": 2, "nextToken": first["nextToken"]})
    uids = [e["m3terEvent"]["eventData"]["uid"] for e in first["data"] + second.json()["data"]]
    assert uids == ["bad-4", "bad-3", "bad-2", "bad-1"]
    assert len(_failures(api, eventType="IngestValidationFailure")) == 5
    assert _failures(api, eventName="configuration.account.created") == []
    one = first["data"][0]["id"]
    assert [e["id"] for e in api.get("events", params={"ids": one}).json()["data"]] == [one]
    account_id = emu.entities("accounts")[0]["id"]
    assert len(api.get("events", params={"accountId": account_id}).json()["data"]) == 5
    fields = api.get("events/fields", params={"eventName": FAILURE}).json()["events"][FAILURE]
    assert {"errorType", "uid", "getDownloadUrl"} <= set(fields)
    assert "includeActioned" in api.get("events", params={"includeActioned": "maybe"}).json()["message"]


def test_uploaded_files_are_checked_the_same_way(emu: M3terEmulator, api: Api) -> None:
    import json

    emu.job_duration = 0
    content = json.dumps({"measurements": [_m("f-good"), _m("f-bad", meter="nope")]}).encode()
    job = api.post("fileuploads/measurements/generateUploadUrl",
                   json={"fileName": "m.json", "contentType": "application/json",
                         "contentLength": len(content)}).json()  # fmt: skip
    assert requests.put(job["url"], data=content, headers=job["headers"], timeout=5).status_code == 200
    assert api.get(f"fileuploads/measurements/jobs/{job['jobId']}").json()["status"] == "succeeded"
    assert [m["uid"] for m in emu.measurements()] == ["f-good"]
    assert [e["m3terEvent"]["eventData"]["uid"] for e in _failures(api)] == ["f-bad"]


def test_reset_forgets_events(emu: M3terEmulator, api: Api) -> None:
    api.post("measurements", json={"measurements": [_m("x", meter="nope")]})
    emu.reset()
    assert _failures(Api_after_reset(emu)) == []


def Api_after_reset(emu: M3terEmulator) -> Api:
    from tests.testing.helpers import Api

    return Api(emu)
