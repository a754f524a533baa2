"""The month-end core without a server: account rows refused before anything is sent, pacing,
AccountPlan coverage, statement formats, and the bill calls' decisions (requests-mock)."""

from __future__ import annotations

import json

import pytest

from m3ter_provider.core import accounts, billing, statements
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.pacing import Pacer
from m3ter_provider.errors import M3terConfigError, M3terValidationError

GOOD = {"code": "acme", "name": "Acme", "emailAddress": "billing@acme.example"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"name": "x"}, "row 1: 'code' None is not an Account code"),
        ({**GOOD, "code": " acme"}, "no leading or trailing space"),
        ({**GOOD, "colour": "red"}, "unknown column(s) ['colour']"),
        ({**GOOD, "plan_code": "std"}, "plan_start_date is missing"),
        ({**GOOD, "plan_start_date": "2026-01-01"}, "plan_start_date needs a plan_code or plan_id"),
        ({**GOOD, "plan_code": "std", "plan_id": "x", "plan_start_date": "2026-01-01"}, "not both"),
        (
            {**GOOD, "plan_code": "std", "plan_start_date": "01/02/2026"},
            "plan_start_date '01/02/2026' is not a date",
        ),
        ({**GOOD, "emailAddress": "nobody"}, "'emailAddress' 'nobody' is not an e-mail address"),
        ({**GOOD, "daysBeforeBillDue": "soon"}, "'daysBeforeBillDue' 'soon' is not a whole number"),
        ({**GOOD, "address": "{not json"}, "'address' '{not json' is not JSON"),
        (
            {**GOOD, "plan_code": "s", "plan_start_date": "2026-02-01", "plan_end_date": "2026-01-01"},
            "is not after plan_start_date",
        ),
    ],
)
def test_a_bad_row_is_refused_naming_row_and_field(row, message):
    with pytest.raises(M3terValidationError) as info:
        accounts.check_rows([row])
    assert message in str(info.value)


def test_a_code_given_twice_names_both_rows():
    with pytest.raises(M3terValidationError, match=r"row 3: Account code 'acme' is already in row 1"):
        accounts.check_rows([GOOD, {**GOOD, "code": "other"}, GOOD])


def test_csv_cells_become_fields_and_empty_cells_are_not_given(tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(
        "code,name,emailAddress,daysBeforeBillDue,address,plan_code,plan_start_date\n"
        'acme,Acme,a@acme.example,7,"{""city"": ""Leeds""}",std,2026-01-01\n'
        "bolt,Bolt,,,,,\n",
        encoding="utf-8",
    )
    first, second = accounts.check_rows(accounts.read_rows(path))
    assert first.fields == {
        "name": "Acme",
        "emailAddress": "a@acme.example",
        "daysBeforeBillDue": 7,
        "address": {"city": "Leeds"},
    }
    assert (first.plan_code, first.plan_start) == ("std", "2026-01-01T00:00:00Z")
    assert second.fields == {"name": "Bolt"} and second.plan_code is None


def test_json_lines_and_json_files(tmp_path):
    lines = tmp_path / "a.jsonl"
    lines.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({**GOOD, "code": "b"}) + "\n", encoding="utf-8")
    array = tmp_path / "a.json"
    array.write_text(json.dumps([GOOD]), encoding="utf-8")
    assert [r.code for r in accounts.check_rows(accounts.read_rows(lines))] == ["acme", "b"]
    assert [r.code for r in accounts.check_rows(accounts.read_rows(array))] == ["acme"]
    with pytest.raises(M3terValidationError, match=r"use a \.csv, \.jsonl or \.json file"):
        list(accounts.read_rows(tmp_path / "a.xlsx"))


def test_pacer_spaces_calls_by_the_rate():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))
        now[0] += seconds

    pacer = Pacer(4, clock=lambda: now[0])
    for _ in range(5):
        pacer.wait(sleep)
    assert slept == [0.25, 0.25, 0.25, 0.25] and now[0] == 1.0
    with pytest.raises(M3terConfigError):
        Pacer(0)


@pytest.mark.parametrize(
    ("plan", "day", "covers"),
    [
        ({"startDate": "2026-01-01T00:00:00Z"}, "2026-03-01T00:00:00Z", True),
        ({"startDate": "2026-02-01T00:00:00Z"}, "2026-01-01T00:00:00Z", False),
        (
            {"startDate": "2025-01-01T00:00:00Z", "endDate": "2026-01-01T00:00:00Z"},
            "2026-01-01T00:00:00Z",
            False,
        ),
        (
            {"startDate": "2025-01-01T00:00:00Z", "endDate": "2026-01-02T00:00:00Z"},
            "2026-01-01T00:00:00Z",
            True,
        ),
    ],
)
def test_an_account_plan_covers_a_day_from_its_start_to_before_its_end(plan, day, covers):
    assert accounts._covers(plan, day) is covers


def test_statement_formats_are_json_and_csv_only():
    assert statements.statement_formats("csv, JSON, csv") == ["CSV", "JSON"]
    with pytest.raises(M3terConfigError, match="no HTML statement"):
        statements.statement_formats(["HTML"])


def test_bill_ids_are_checked():
    assert billing.bill_id_list("a, b,a") == ["a", "b"]
    with pytest.raises(M3terConfigError, match="is not a Bill id"):
        billing.bill_id_list(["a/../b"])


# ---------------------------------------------------------------- bill calls (requests-mock)
API = "https://api.m3ter.test/organizations/org"


@pytest.fixture
def client(requests_mock):
    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.tokens.cache import TokenCache

    requests_mock.post(
        "https://api.m3ter.test/oauth/token", json={"access_token": "tok", "expires_in": 18000}
    )
    settings = M3terSettings.from_connection_fields(
        "m3ter_default",
        login="key",
        password="secret",
        host="https://api.m3ter.test",
        port=None,
        schema=None,
        extra={"org_id": "org"},
    )
    made = M3terClient(settings, user_agent="test", token_cache=TokenCache())
    made.sleep = lambda seconds: None
    return made


def test_an_approve_refused_because_a_retry_already_approved_is_not_an_error(client, requests_mock):
    """The POST's answer was lost, the retry finds the bills APPROVED: reported approved, no error."""
    bills = [{"id": "b1", "status": "PENDING", "locked": False}]
    approved = [{"id": "b1", "status": "APPROVED", "locked": False}]
    requests_mock.get(f"{API}/bills", [{"json": {"data": bills}}, {"json": {"data": approved}}])
    requests_mock.post(f"{API}/bills/approve", status_code=400, json={"message": "Bill b1 is APPROVED"})
    assert billing.approve_bills(client, ["b1"]) == {"approved": ["b1"], "already_approved": [], "locked": []}


def test_lock_refuses_a_pending_bill_before_locking_any(client, requests_mock):
    bills = [{"id": "b1", "status": "APPROVED"}, {"id": "b2", "status": "PENDING"}]
    requests_mock.get(f"{API}/bills", json={"data": bills})
    lock = requests_mock.put(f"{API}/bills/b1/lock", json={})
    with pytest.raises(M3terValidationError, match=r"1 bill still PENDING \(\['b2'\]\).*Approve them first"):
        billing.lock_bills(client, ["b1", "b2"])
    assert lock.call_count == 0


def test_an_unknown_bill_id_is_named(client, requests_mock):
    requests_mock.get(f"{API}/bills", json={"data": [{"id": "b1", "status": "PENDING"}]})
    with pytest.raises(M3terValidationError, match=r"no Bill with id\(s\) \['nope'\]"):
        billing.approve_bills(client, ["b1", "nope"])
