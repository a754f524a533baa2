"""Events the emulator produces from its own state changes, and the Events API's filters and paging."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.spec import load_spec
from tests.testing.helpers import Api
from tests.testing.openapi import Spec
from tests.testing.test_emulator_spec import Checked

EVENTS_ROUTE = "/organizations/{orgId}/events"


@pytest.fixture
def checked(spec: Spec) -> Checked:
    return Checked(spec)


@pytest.fixture
def api(emu: M3terEmulator, checked: Checked) -> Iterator[Api]:
    """A client whose every response is validated against the spec (events included)."""
    emu.job_duration = 0  # jobs finish at once
    session = requests.Session()
    session.hooks["response"].append(checked)
    client = Api(emu, session)
    yield client
    session.close()


def _accounts(api: Api, *codes: str) -> list[str]:
    return [
        api.post("accounts", json={"code": c, "name": c, "emailAddress": f"{c}@example.com"}).json()["id"]
        for c in codes
    ]


def _events(api: Api, **params: str) -> list[dict]:
    response = api.get("events", params={"pageSize": 100, **params})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _bill_job(api: Api) -> dict:
    job = api.post("billjobs", json={}).json()
    done = api.get(f"billjobs/{job['id']}").json()
    assert done["status"] == "COMPLETE"
    return done


def test_a_finished_bill_job_emits_billjob_updated_after_one_bill_created_per_bill(api: Api) -> None:
    acme, globex = _accounts(api, "acme", "globex")
    job = _bill_job(api)
    events = _events(api)
    assert [e["eventName"] for e in events] == [
        "billing.billjob.updated", "billing.bill.created", "billing.bill.created",
    ]  # fmt: skip
    updated = events[0]["m3terEvent"]["eventData"]
    assert updated["newDto"]["id"] == job["id"] and updated["newDto"]["status"] == "COMPLETE"
    assert sorted(updated["newDto"]["billIds"]) == sorted(job["billIds"])
    assert updated["oldDto"]["status"] == "RUNNING" and "billIds" not in updated["oldDto"]
    created = {e["m3terEvent"]["eventData"]["newDto"]["accountId"]: e for e in events[1:]}
    assert set(created) == {acme, globex}
    assert {e["m3terEvent"]["eventData"]["newDto"]["id"] for e in events[1:]} == set(job["billIds"])
    # filters: the job's own events, one account's, by name
    assert [e["eventName"] for e in _events(api, resourceId=job["id"])] == ["billing.billjob.updated"]
    assert [e["id"] for e in _events(api, accountId=acme)] == [created[acme]["id"]]
    assert len(_events(api, eventName="billing.bill.created")) == 2
    assert api.get(f"events/{events[0]['id']}").json() == events[0]


def test_a_cancelled_bill_job_emits_billjob_updated(emu: M3terEmulator, api: Api) -> None:
    emu.job_duration = 30
    job = api.post("billjobs", json={}).json()
    assert _events(api) == []
    api.post(f"billjobs/{job['id']}/cancel")
    (event,) = _events(api)
    assert event["eventName"] == "billing.billjob.updated"
    data = event["m3terEvent"]["eventData"]
    assert data["newDto"]["status"] == "CANCELLED" and data["oldDto"]["status"] != "CANCELLED"


def test_a_failed_bill_job_emits_billjob_updated_and_no_bill(emu: M3terEmulator, api: Api) -> None:
    _accounts(api, "acme")
    emu.fail_next_job("billjob")
    api.post("billjobs", json={})
    assert [e["m3terEvent"]["eventData"]["newDto"]["status"] for e in _events(api)] == ["CANCELLED"]


def test_approving_locking_and_deleting_a_bill_emit_bill_events(api: Api) -> None:
    _accounts(api, "acme")
    (bill_id,) = _bill_job(api)["billIds"]
    assert api.post("bills/approve", json={"billIds": [bill_id]}).status_code == 200
    assert api.put(f"bills/{bill_id}/status", json={"status": "PENDING"}).status_code == 200
    assert api.post("bills/approve", json={"billIds": [bill_id]}).status_code == 200
    assert api.put(f"bills/{bill_id}/lock").status_code == 200  # only an APPROVED bill locks
    updates = _events(api, eventName="billing.bill.updated")
    changes = [
        (e["m3terEvent"]["eventData"]["oldDto"], e["m3terEvent"]["eventData"]["newDto"])
        for e in reversed(updates)
    ]
    assert [(old["status"], new["status"]) for old, new in changes] == [
        ("PENDING", "APPROVED"), ("APPROVED", "PENDING"), ("PENDING", "APPROVED"), ("APPROVED", "APPROVED"),
    ]  # fmt: skip
    assert [new["locked"] for _, new in changes] == [False, False, False, True]
    assert [new["version"] - old["version"] for old, new in changes] == [1, 1, 1, 1]
    assert all(e["m3terEvent"]["eventData"]["newDto"]["id"] == bill_id for e in updates)
    assert api.delete(f"bills/{bill_id}").status_code == 200
    deleted = _events(api, eventName="billing.bill.deleted")
    assert [e["m3terEvent"]["eventData"] for e in deleted] == [{"oldDto": changes[-1][1]}]
    assert [e["eventName"] for e in _events(api, resourceId=bill_id)][:2] == [
        "billing.bill.deleted", "billing.bill.updated",
    ]  # fmt: skip


def test_a_failed_export_emits_dataexport_job_failure_and_a_good_one_nothing(
    emu: M3terEmulator, api: Api
) -> None:
    body = {"sourceType": "OPERATIONAL", "operationalDataTypes": ["ACCOUNTS"], "exportFileFormat": "JSONL"}
    good = api.post("dataexports/adhoc", json=body).json()["jobId"]
    assert api.get(f"dataexports/jobs/{good}").json()["status"] == "SUCCEEDED"
    assert _events(api) == []
    emu.fail_next_job("dataexport")
    bad = api.post("dataexports/adhoc", json=body).json()["jobId"]
    assert api.get(f"dataexports/jobs/{bad}").json()["status"] == "FAILED"
    (event,) = _events(api, eventType="DataExportJobFailure")
    assert event["eventName"] == "dataexport.job.failure"
    data = event["m3terEvent"]["eventData"]
    assert (data["jobId"], data["sourceType"], data["status"]) == (bad, "OPERATIONAL", "FAILED")
    assert _events(api, resourceId=bad) == [event]
    assert _events(api, eventType="IngestValidationFailure") == []


def test_a_finished_statement_job_emits_statementjob_updated_without_urls(api: Api) -> None:
    _accounts(api, "acme")
    (bill_id,) = _bill_job(api)["billIds"]
    job = api.post("statementjobs", json={"billId": bill_id}).json()
    (event,) = _events(api, eventName="billing.statementjob.updated")
    data = event["m3terEvent"]["eventData"]
    assert data["newDto"]["id"] == job["id"] and data["newDto"]["statementJobStatus"] == "COMPLETE"
    assert data["oldDto"]["statementJobStatus"] == "RUNNING"
    assert not [key for key in data["newDto"] if key.startswith("presigned")]


def test_events_page_newest_first(api: Api) -> None:
    _accounts(api, "a", "b", "c")
    _bill_job(api)  # 3 bills created, then the job updated: 4 events
    everything = _events(api)
    first = api.get("events", params={"pageSize": 3}).json()
    second = api.get("events", params={"pageSize": 3, "nextToken": first["nextToken"]}).json()
    assert [e["id"] for e in first["data"] + second["data"]] == [e["id"] for e in everything]
    assert "nextToken" not in second
    times = [e["eventTime"] for e in everything]
    assert times == sorted(times, reverse=True)


def test_event_filters_follow_the_spec(api: Api) -> None:
    _accounts(api, "acme")
    _bill_job(api)
    (_newest, oldest) = _events(api)
    assert [e["id"] for e in _events(api, ids=f"{oldest['id']},nope")] == [oldest["id"]]
    refused = api.get("events", params={"ids": oldest["id"], "eventName": "billing.bill.created"})
    assert refused.status_code == 400 and "ids cannot be used with other filters" in refused.json()["message"]
    assert _events(api, notificationId="n1") == []  # no Notification fires in the emulator
    assert len(_events(api, includeActioned="false")) == 2  # nothing is actioned


def test_event_types_and_fields_come_from_the_spec(api: Api) -> None:
    types = api.get("events/types").json()["events"]
    listed = load_spec()["components"]["schemas"]["EventTypeResponse"]["example"]["events"]
    assert set(listed) <= set(types)
    assert {"billing.billjob.updated", "billing.bill.updated", "dataexport.job.failure"} <= set(types)
    fields = api.get("events/fields", params={"eventName": "billing.bill.updated"}).json()["events"]
    bill_fields = fields["billing.bill.updated"]
    assert bill_fields["new.status"] == "string" and bill_fields["old.locked"] == "boolean"
    created = api.get("events/fields", params={"eventName": "billing.billjob.created"}).json()["events"]
    assert "new.status" in created["billing.billjob.created"]
    assert not [k for k in created["billing.billjob.created"] if k.startswith("old.")]
