"""Routes a billing pipeline reads after ingest: balance transactions, bill line items, bills by
account or billing period, the latest bill, bill approval, locking and status, and usage queries."""

from __future__ import annotations

import copy
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING

from . import usage
from .common import ApiError, iso, parse_date, utcnow
from .events import BILL_UPDATED
from .routing import Request, Response, Router, json_response
from .store import paginate, query_value

if TYPE_CHECKING:
    from .app import EmulatorApp

ORG = "/organizations/{orgId}"
BILLS = f"{ORG}/bills"
BALANCE_TRANSACTIONS = f"{ORG}/balances/{{balanceId}}/transactions"
BALANCE_KEY = "_balanceId"  # kept with each stored transaction, never answered
LINE_ITEM_AUDIT = ("version", "billId", "dtCreated", "dtLastModified", "createdBy", "lastModifiedBy")


def register(router: Router, app: EmulatorApp) -> None:
    """Add the balance transaction, bill and usage query routes."""
    router.add("GET", BALANCE_TRANSACTIONS, partial(list_transactions, app))
    router.add("POST", BALANCE_TRANSACTIONS, partial(create_transaction, app))
    router.add("GET", f"{BALANCE_TRANSACTIONS}/summary", partial(transactions_summary, app))
    router.add("GET", f"{BILLS}/{{billId}}/lineitems", partial(list_line_items, app))
    router.add("GET", f"{BILLS}/{{billId}}/lineitems/{{id}}", partial(get_line_item, app))
    router.add("GET", f"{BILLS}/latest/{{accountId}}", partial(latest_bill, app))
    router.add("GET", f"{BILLS}/accountid/{{accountId}}", partial(bills_of_account, app))
    period = f"{BILLS}/billingperiod/{{lastDateInBillingPeriod}}/{{billingFrequency}}"
    router.add("GET", period, partial(bills_in_period, app))
    router.add("POST", f"{period}/approve", partial(approve_period, app))
    router.add("POST", f"{BILLS}/approve", partial(approve_bills, app))
    router.add("PUT", f"{BILLS}/{{id}}/lock", partial(lock_bill, app))
    router.add("PUT", f"{BILLS}/{{id}}/status", partial(bill_status, app))
    router.add("POST", f"{ORG}/usage/query", partial(usage_query, app))


# -- balance transactions ---------------------------------------------------------------------
def _balance(app: EmulatorApp, req: Request) -> dict:
    balance = app.store.find("balances", req.params["balanceId"])
    if balance is None:
        raise ApiError(404, f"Balance with id {req.params['balanceId']!r} not found")
    return balance


def create_transaction(app: EmulatorApp, req: Request) -> Response:
    """``POST /balances/{balanceId}/transactions``: the Balance's ``amount`` moves by ``amount``."""
    balance = _balance(app, req)
    body = req.json_object()
    type_id = body.get("transactionTypeId")
    if type_id and app.store.find("picklists/transactiontypes", type_id) is None:
        raise ApiError(400, f"transactionTypeId: no TransactionType with id {type_id!r}")
    now = iso(utcnow())
    fields = {k: v for k, v in body.items() if k != "version"}
    item = {"entityType": "SERVICE_USER", "entityId": app.service_user_id, "transactionDate": now,
            "appliedDate": now, **fields, BALANCE_KEY: balance["id"]}  # fmt: skip
    created = app.store.insert("balancetransactions", item)
    balance["amount"] = balance.get("amount", 0) + body["amount"]
    return json_response(_transaction_view(created))


def _transaction_view(item: dict) -> dict:
    return {k: copy.deepcopy(v) for k, v in item.items() if k != BALANCE_KEY}


def _transactions(app: EmulatorApp, balance_id: str) -> list[tuple[int, dict]]:
    rows = app.store.rows("balancetransactions")
    return [(seq, _transaction_view(t)) for seq, t in rows if t[BALANCE_KEY] == balance_id]


def list_transactions(app: EmulatorApp, req: Request) -> Response:
    """``GET /balances/{balanceId}/transactions``: filters transactionTypeId, entityType, entityId."""
    rows = _transactions(app, _balance(app, req)["id"])
    for name in ("transactionTypeId", "entityType", "entityId"):
        wanted = query_value(req.query, name)
        if wanted is not None:
            rows = [(seq, t) for seq, t in rows if t.get(name) == wanted]
    return json_response(paginate(rows, req.query, 200))


def transactions_summary(app: EmulatorApp, req: Request) -> Response:
    """``GET /balances/{balanceId}/transactions/summary``: credits and debits so far."""
    amounts = [t["amount"] for _, t in _transactions(app, _balance(app, req)["id"])]
    return json_response(
        {
            "totalCreditAmount": sum(a for a in amounts if a > 0),
            "totalDebitAmount": -sum(a for a in amounts if a < 0),
            "initialCreditAmount": amounts[0] if amounts and amounts[0] > 0 else 0,
            "expiredBalanceAmount": 0,
            "rolloverConsumed": 0,
            "balanceConsumed": -sum(a for a in amounts if a < 0),
        }
    )


# -- bills ------------------------------------------------------------------------------------
def _bill(app: EmulatorApp, bill_id: str) -> dict:
    bill = app.store.find("bills", bill_id)
    if bill is None:
        raise ApiError(404, f"Bill with id {bill_id!r} not found")
    return bill


def _line_item_view(bill: dict, item: dict) -> dict:
    audit = {k: bill[k] for k in LINE_ITEM_AUDIT[2:] if k in bill}
    return {**copy.deepcopy(item), "version": 1, "billId": bill["id"], **audit}


def list_line_items(app: EmulatorApp, req: Request) -> Response:
    """``GET /bills/{billId}/lineitems``."""
    bill = _bill(app, req.params["billId"])
    rows = [(index, _line_item_view(bill, item)) for index, item in enumerate(bill.get("lineItems") or [])]
    return json_response(paginate(rows, req.query, 100))


def get_line_item(app: EmulatorApp, req: Request) -> Response:
    """``GET /bills/{billId}/lineitems/{id}``."""
    bill = _bill(app, req.params["billId"])
    for item in bill.get("lineItems") or []:
        if item.get("id") == req.params["id"]:
            return json_response(_line_item_view(bill, item))
    raise ApiError(404, f"BillLineItem with id {req.params['id']!r} not found")


def latest_bill(app: EmulatorApp, req: Request) -> Response:
    """``GET /bills/latest/{accountId}``: the Account's bill with the latest billDate."""
    bills = [b for _, b in app.store.rows("bills") if b.get("accountId") == req.params["accountId"]]
    if not bills:
        raise ApiError(404, f"No Bill for Account {req.params['accountId']!r}")
    return json_response(copy.deepcopy(max(bills, key=lambda b: str(b.get("billDate", "")))))


def bills_of_account(app: EmulatorApp, req: Request) -> Response:
    """``GET /bills/accountid/{accountId}``."""
    rows = [(s, b) for s, b in app.store.rows("bills") if b.get("accountId") == req.params["accountId"]]
    return json_response(paginate(rows, req.query, 100))


def _in_period(app: EmulatorApp, req: Request) -> list[tuple[int, dict]]:
    last_day = parse_date(req.params["lastDateInBillingPeriod"])
    if last_day is None:
        raise ApiError(400, "lastDateInBillingPeriod: must be an ISO-8601 date (YYYY-MM-DD)")
    frequency = req.params["billingFrequency"]
    end = (last_day + timedelta(days=1)).isoformat()
    return [
        (seq, bill)
        for seq, bill in app.store.rows("bills")
        if bill.get("endDate") == end and bill.get("billingFrequency") == frequency
    ]


def bills_in_period(app: EmulatorApp, req: Request) -> Response:
    """``GET /bills/billingperiod/{lastDateInBillingPeriod}/{billingFrequency}``."""
    return json_response(paginate(_in_period(app, req), req.query, 100))


def _approve(app: EmulatorApp, bills: list[dict], *, skip_others: bool) -> Response:
    """Approve PENDING bills: a locked one is refused (400); one not PENDING is refused when named
    explicitly, skipped when the call approves a whole billing period."""
    now = iso(utcnow())
    for bill in bills:
        if bill.get("locked"):
            raise ApiError(400, f"Bill {bill['id']} is locked: it cannot be approved")
        if bill.get("status") != "PENDING" and not skip_others:
            raise ApiError(
                400, f"Bill {bill['id']} is {bill.get('status')}: only a PENDING Bill can be approved"
            )
    pending = [bill for bill in bills if bill.get("status") == "PENDING"]
    for bill in pending:
        _change_bill(app, bill, status="APPROVED", dtApproved=now, approvedBy=app.actor, dtLastModified=now)
    return json_response({"message": f"{len(pending)} Bills approved"})


def approve_period(app: EmulatorApp, req: Request) -> Response:
    """``POST /bills/billingperiod/{lastDateInBillingPeriod}/{billingFrequency}/approve``: every
    PENDING, unlocked bill of the period (an APPROVED one is left as it is)."""
    bills = [bill for _, bill in _in_period(app, req) if not bill.get("locked")]
    return _approve(app, bills, skip_others=True)


def approve_bills(app: EmulatorApp, req: Request) -> Response:
    """``POST /bills/approve`` ``{"billIds": [...]}``: 404 naming an unknown bill, 400 a locked or not
    PENDING one; then nothing is approved."""
    return _approve(app, [_bill(app, bill_id) for bill_id in req.json_object()["billIds"]], skip_others=False)


def lock_bill(app: EmulatorApp, req: Request) -> Response:
    """``PUT /bills/{id}/lock``: only an APPROVED bill (400 for a PENDING one, as the spec says); a
    locked bill is answered unchanged. A locked bill is not recalculated and cannot change status."""
    bill = _bill(app, req.params["id"])
    if bill.get("locked"):
        return json_response(copy.deepcopy(bill))
    if bill.get("status") != "APPROVED":
        raise ApiError(400, f"Bill {bill['id']} is {bill.get('status')}: approve it before locking it")
    now = iso(utcnow())
    _change_bill(app, bill, locked=True, dtLocked=now, lockedBy=app.actor, dtLastModified=now)
    return json_response(copy.deepcopy(bill))


def bill_status(app: EmulatorApp, req: Request) -> Response:
    """``PUT /bills/{id}/status`` ``{"status": ...}``: 400 once the bill is locked."""
    bill = _bill(app, req.params["id"])
    if bill.get("locked"):
        raise ApiError(400, f"Bill {bill['id']} is locked: its status cannot change")
    _change_bill(app, bill, status=req.json_object()["status"], dtLastModified=iso(utcnow()))
    return json_response(copy.deepcopy(bill))


def _change_bill(app: EmulatorApp, bill: dict, **changes: object) -> None:
    """Update a stored Bill, bump its version, and record a ``billing.bill.updated`` Event."""
    old = copy.deepcopy(bill)
    bill.update(changes)
    bill["version"] = bill.get("version", 1) + 1
    app.events.record_change(BILL_UPDATED, bill, old, account_id=bill.get("accountId"))


# -- usage query ------------------------------------------------------------------------------
def usage_query(app: EmulatorApp, req: Request) -> Response:
    """``POST /usage/query``: stored measurements in [startDate, endDate), most recently received
    first, for the given Account and Meter ids and dimension filters; aggregated and grouped when the
    body has ``aggregations`` (see :mod:`.usage`); ``limit`` (default and maximum 20,000) and
    ``hasMoreData``."""
    return json_response(usage.query(app, req.json_object()))
