"""Routes of bill jobs, the bills they create, and statement jobs."""

from __future__ import annotations

import copy
import json
from datetime import date, datetime, time, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING

from . import files
from .common import ApiError, iso, new_id, parse_date, parse_datetime, utcnow
from .events import BILL_CREATED, BILL_DELETED, BILL_JOB_UPDATED, BILL_UPDATED, STATEMENT_JOB_UPDATED
from .jobs import Job
from .relations import predicate_filter
from .routing import Request, Response, Router, json_response
from .search import search
from .store import PAGE_SIZE_MAXIMA, filter_rows, paginate, query_value

if TYPE_CHECKING:
    from .app import EmulatorApp

ORG = "/organizations/{orgId}"
BILL_JOBS = f"{ORG}/billjobs"
BILLS = f"{ORG}/bills"
STATEMENT_JOBS = f"{ORG}/statementjobs"
BILLING_FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "ANNUALLY", "AD_HOC")
BILL_JOB_DATES = (
    "lastDateInBillingPeriod", "billDate", "externalInvoiceDate", "dueDate",
    "yearEpoch", "monthEpoch", "weekEpoch", "dayEpoch",
)  # fmt: skip
BILL_JOB_ECHO = (*BILL_JOB_DATES, "billingFrequency", "billFrequencyInterval", "accountIds",
                 "targetCurrency", "currencyConversions")  # fmt: skip


def register(router: Router, app: EmulatorApp) -> None:
    """Add the bill job, bill and statement job routes and their completion hooks."""
    router.add("POST", BILL_JOBS, partial(create_bill_job, app))
    router.add("POST", f"{BILL_JOBS}/recalculate", partial(recalculate_bills, app))
    router.add("GET", BILL_JOBS, partial(list_bill_jobs, app))
    router.add("GET", f"{BILL_JOBS}/{{id}}", partial(get_bill_job, app))
    router.add("POST", f"{BILL_JOBS}/{{id}}/cancel", partial(cancel_bill_job, app))
    router.add("GET", BILLS, partial(list_bills, app))
    router.add("GET", f"{BILLS}/search", lambda req: json_response(search(app.store.all("bills"), req.query)))
    router.add("GET", f"{BILLS}/{{id}}", partial(get_bill, app))
    router.add("DELETE", f"{BILLS}/{{id}}", partial(delete_bill, app))
    router.add("POST", STATEMENT_JOBS, partial(create_statement_job, app))
    router.add("POST", f"{STATEMENT_JOBS}/batch", partial(create_statement_jobs, app))
    router.add("GET", STATEMENT_JOBS, partial(list_statement_jobs, app))
    router.add("GET", f"{STATEMENT_JOBS}/{{id}}", partial(get_statement_job, app))
    router.add("POST", f"{STATEMENT_JOBS}/{{id}}/cancel", partial(cancel_statement_job, app))
    app.settle_hooks["billjob"] = partial(finish_bill_job, app)
    app.settle_hooks["statementjob"] = partial(finish_statement_job, app)


# -- bill jobs --------------------------------------------------------------------------------
def create_bill_job(app: EmulatorApp, req: Request) -> Response:
    """``POST /billjobs``: validate, refuse an 11th concurrent job (429), start the job."""
    body = req.json_object()
    for name in BILL_JOB_DATES:
        if body.get(name) is not None and parse_date(body[name]) is None:
            raise ApiError(400, f"{name} must be an ISO-8601 date (YYYY-MM-DD), got {body[name]!r}")
    frequency = body.get("billingFrequency")
    if frequency is not None and frequency not in BILLING_FREQUENCIES:
        raise ApiError(400, f"billingFrequency must be one of {', '.join(BILLING_FREQUENCIES)}")
    currency = body.get("targetCurrency")
    if currency is not None and (not isinstance(currency, str) or len(currency) != 3):
        raise ApiError(400, "targetCurrency must be a 3-letter currency code")
    account_ids = body.get("accountIds")
    if account_ids is not None:
        if not isinstance(account_ids, list) or not 1 <= len(account_ids) <= 100:
            raise ApiError(400, "accountIds must be an array of 1 to 100 Account ids")
        unknown = [i for i in account_ids if not isinstance(i, str) or app.store.find("accounts", i) is None]
        if unknown:
            raise ApiError(400, f"accountIds: unknown Account ids {unknown}")
    active = sum(1 for job in app.jobs.of_kind("billjob") if job.active)
    refusal = app.limiter.refuse_bill_job(active, app.jobs.job_duration)
    if refusal is not None:
        app.stats.count_rate_limited(f"POST {BILL_JOBS}", req.client, refusal.limit)
        raise ApiError(429, refusal.message, refusal.headers(app.limiter.limits.retry_after))
    request = {k: body[k] for k in (*BILL_JOB_ECHO, "timezone") if body.get(k) is not None}
    job = app.jobs.create("billjob", request)
    job.result["targets"] = list(account_ids or (a["id"] for a in app.store.all("accounts")))
    app.jobs.advance()
    return json_response(bill_job_view(app, job))


def bill_job_view(app: EmulatorApp, job: Job) -> dict:
    """A BillJobResponse."""
    status = app.jobs.status(job)
    view = {"id": job.id, "version": job.result.get("version", 1), **job.request, "status": status}
    view["timezone"] = job.request.get("timezone", "UTC")
    view["type"] = job.result.get("type", "CREATE")
    view["total"] = len(job.result["targets"])
    view["pending"] = 0 if job.final else view["total"]
    if "billIds" in job.result:
        view["billIds"] = list(job.result["billIds"])
    view.update(_audit(app, job))
    return view


def get_bill_job(app: EmulatorApp, req: Request) -> Response:
    """``GET /billjobs/{id}``."""
    return json_response(bill_job_view(app, app.jobs.get("billjob", req.params["id"], "BillJob")))


def list_bill_jobs(app: EmulatorApp, req: Request) -> Response:
    """``GET /billjobs``: ``active=true`` keeps unfinished jobs, ``status`` one status."""
    return json_response(_list_jobs(app, req, "billjob", bill_job_view, "status", BILL_JOBS))


def cancel_bill_job(app: EmulatorApp, req: Request) -> Response:
    """``POST /billjobs/{id}/cancel``: a running job becomes CANCELLED (400 once finished)."""
    job = app.jobs.get("billjob", req.params["id"], "BillJob")
    old = bill_job_view(app, job)
    app.jobs.cancel(job)
    job.result["version"] = job.result.get("version", 1) + 1
    view = bill_job_view(app, job)
    app.events.record_change(BILL_JOB_UPDATED, view, old)
    return json_response(view)


def recalculate_bills(app: EmulatorApp, req: Request) -> Response:
    """``POST /billjobs/recalculate`` ``{"billIds": [...]}`` (1 to 100): a RECALCULATE bill job; when it
    completes, each bill's line items are computed again from the stored usage and the bill is back
    to PENDING. 400 for an unknown bill or a locked one (nothing is started)."""
    bill_ids = req.json_object().get("billIds")
    if not isinstance(bill_ids, list) or not 1 <= len(bill_ids) <= 100:
        raise ApiError(400, "billIds must be an array of 1 to 100 Bill ids")
    for bill_id in bill_ids:
        bill = app.store.find("bills", bill_id) if isinstance(bill_id, str) else None
        if bill is None:
            raise ApiError(400, f"billIds: no Bill with id {bill_id!r}")
        if bill.get("locked"):
            raise ApiError(400, f"Bill {bill_id} is locked: a locked Bill cannot be recalculated")
    active = sum(1 for job in app.jobs.of_kind("billjob") if job.active)
    refusal = app.limiter.refuse_bill_job(active, app.jobs.job_duration)
    if refusal is not None:
        app.stats.count_rate_limited(f"POST {BILL_JOBS}/recalculate", req.client, refusal.limit)
        raise ApiError(429, refusal.message, refusal.headers(app.limiter.limits.retry_after))
    job = app.jobs.create("billjob", {})
    job.result.update(type="RECALCULATE", targets=list(bill_ids), billIds=list(bill_ids))
    app.jobs.advance()
    return json_response(bill_job_view(app, job))


def _recalculate(app: EmulatorApp, job: Job) -> None:
    now = iso(utcnow())
    for bill_id in job.result["targets"]:
        bill = app.store.find("bills", bill_id)
        if bill is None or bill.get("locked"):
            continue
        account = app.store.find("accounts", bill["accountId"]) or {"code": bill.get("accountCode")}
        start, end = parse_date(bill["startDate"]), parse_date(bill["endDate"])
        items = usage_line_items(app, account, start, end, bill["currency"]) if start and end else []
        before = copy.deepcopy(bill)
        bill.update(lineItems=items, status="PENDING", lastCalculatedDate=now, dtLastModified=now)
        bill["statementStale"] = bool(bill.get("jsonStatementGenerated") or bill.get("csvStatementGenerated"))
        bill["version"] = bill.get("version", 1) + 1
        app.events.record_change(BILL_UPDATED, bill, before, account_id=bill.get("accountId"))


def finish_bill_job(app: EmulatorApp, job: Job) -> None:
    """On COMPLETE: one bill per target account still present, each carrying ``billJobId``, each with a
    ``billing.bill.created`` Event (a RECALCULATE job instead computes its bills again); then the job's
    ``billing.billjob.updated`` Event."""
    old = {**bill_job_view(app, job), "status": job.timeline.running[-1]}
    old["pending"] = old["total"]
    if job.final == job.timeline.done and job.result.get("type") == "RECALCULATE":
        _recalculate(app, job)
    elif job.final == job.timeline.done:
        job.result["billIds"] = []
        for account_id in job.result["targets"]:
            account = app.store.find("accounts", account_id)
            if account is not None:
                bill = app.store.insert("bills", _new_bill(app, job, account))
                job.result["billIds"].append(bill["id"])
                app.events.record_change(BILL_CREATED, bill, account_id=account_id)
    app.events.record_change(BILL_JOB_UPDATED, bill_job_view(app, job), old)


def _new_bill(app: EmulatorApp, job: Job, account: dict) -> dict:
    req = job.request
    last_day = parse_date(req.get("lastDateInBillingPeriod"))
    bill_date = parse_date(req.get("billDate")) or (
        last_day + timedelta(days=1) if last_day else utcnow().date()
    )
    end = bill_date
    start = (end - timedelta(days=1)).replace(day=1)
    now = iso(utcnow())
    currency = req.get("targetCurrency") or account.get("currency") or app.org_config["currency"]
    due = parse_date(req.get("dueDate")) or bill_date + timedelta(days=app.org_config["daysBeforeBillDue"])
    return {
        "accountId": account["id"],
        "accountCode": account.get("code", ""),
        "billJobId": job.id,
        "billDate": bill_date.isoformat(),
        "dueDate": due.isoformat(),
        "startDate": start.isoformat(),
        "endDate": end.isoformat(),
        "startDateTimeUTC": iso(_midnight(start)),
        "endDateTimeUTC": iso(_midnight(end)),
        "billingFrequency": req.get("billingFrequency", "MONTHLY"),
        "billFrequencyInterval": req.get("billFrequencyInterval", 1),
        "timezone": req.get("timezone", "UTC"),
        "currency": currency,
        "status": "PENDING",
        "locked": False,
        "lineItems": usage_line_items(app, account, start, end, currency),
        "billTotal": 0,
        "jsonStatementGenerated": False,
        "csvStatementGenerated": False,
        "statementStale": False,
        "createdDate": now,
        "lastCalculatedDate": now,
    }


def usage_line_items(app: EmulatorApp, account: dict, start: date, end: date, currency: str) -> list[dict]:
    """One USAGE line item per Meter the Account's stored measurements in [start, end) used:
    ``quantity`` is the number of measurements (the emulator prices nothing: subtotals are 0)."""
    counts: dict[str, int] = {}
    low, high = _midnight(start), _midnight(end)
    for item in app.measurements.items:
        ts = parse_datetime(item["ts"])
        if item["account"] == account.get("code") and ts is not None and low <= ts < high:
            counts[item["meter"]] = counts.get(item["meter"], 0) + 1
    items = []
    for code, count in counts.items():
        meter = app.store.find_by_code("meters", code) or {}
        items.append({
            "id": new_id(), "lineItemType": "USAGE", "description": f"{code} usage",
            "quantity": count, "units": count, "unit": "measurements", "subtotal": 0,
            "convertedSubtotal": 0, "conversionRate": 1, "averageUnitPrice": 0, "currency": currency,
            "servicePeriodStartDate": iso(low), "servicePeriodEndDate": iso(high),
            **({"meterId": meter["id"]} if "id" in meter else {}),
            **({"productId": meter["productId"]} if meter.get("productId") else {}),
        })  # fmt: skip
    return items


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), timezone.utc)


# -- bills ------------------------------------------------------------------------------------
def list_bills(app: EmulatorApp, req: Request) -> Response:
    """``GET /bills``: the spec's filters (ids, accountId, billJobId, status, locked, billingFrequency,
    billDate, billDateStart/End, externalInvoiceDateStart/End); ``excludeLineItems``."""
    filters = {"ids": "id", "accountId": "accountId", "billJobId": "billJobId", "status": "status",
               "locked": "locked", "billingFrequency": "billingFrequency"}  # fmt: skip
    rows = predicate_filter(
        app.store, "bills", filter_rows(app.store.rows("bills"), req.query, filters), req.query
    )
    page = paginate(rows, req.query, PAGE_SIZE_MAXIMA[BILLS])
    if (query_value(req.query, "excludeLineItems") or "").lower() == "true":
        for bill in page["data"]:
            bill.pop("lineItems", None)
    return json_response(page)


def get_bill(app: EmulatorApp, req: Request) -> Response:
    """``GET /bills/{id}``."""
    return json_response(app.store.get("bills", req.params["id"]))


def delete_bill(app: EmulatorApp, req: Request) -> Response:
    """``DELETE /bills/{id}`` (a ``billing.bill.deleted`` Event)."""
    bill = app.store.delete("bills", req.params["id"])
    app.events.record_change(BILL_DELETED, None, bill, account_id=bill.get("accountId"))
    return json_response(bill)


# -- statement jobs ---------------------------------------------------------------------------
def create_statement_job(app: EmulatorApp, req: Request) -> Response:
    """``POST /statementjobs``: a statement for one existing bill."""
    body = req.json_object()
    bill_id = body.get("billId")
    if not isinstance(bill_id, str) or not bill_id:
        raise ApiError(400, "billId is required")
    request = _statement_request(app, body, bill_id)
    job = app.jobs.create("statementjob", request)
    app.jobs.advance()
    return json_response(statement_job_view(app, job))


def create_statement_jobs(app: EmulatorApp, req: Request) -> Response:
    """``POST /statementjobs/batch`` ``{"billIds": [...]}`` (1 to 10): one statement job per bill,
    answered as an array; 400 for an unknown bill (nothing is started)."""
    body = req.json_object()
    bill_ids = body.get("billIds")
    if not isinstance(bill_ids, list) or not 1 <= len(bill_ids) <= 10:
        raise ApiError(400, "billIds must be an array of 1 to 10 Bill ids")
    requests = [_statement_request(app, body, bill_id) for bill_id in bill_ids]
    created = [app.jobs.create("statementjob", request) for request in requests]
    app.jobs.advance()
    return json_response([statement_job_view(app, job) for job in created])


def _statement_request(app: EmulatorApp, body: dict, bill_id: object) -> dict:
    if not isinstance(bill_id, str) or app.store.find("bills", bill_id) is None:
        raise ApiError(400, f"billId: no Bill with id {bill_id!r}")
    include_csv = body.get("includeCsvFormat", False)
    if not isinstance(include_csv, bool):
        raise ApiError(400, "includeCsvFormat must be a boolean")
    request = {"billId": bill_id, "includeCsvFormat": include_csv}
    if body.get("filters") is not None:
        request["filters"] = body["filters"]
    return request


def statement_job_view(app: EmulatorApp, job: Job) -> dict:
    """A StatementJobResponse; presigned statement URLs once COMPLETE."""
    status = app.jobs.status(job)
    view = {"id": job.id, "version": job.result.get("version", 1), "statementJobStatus": status,
            "orgId": app.org_id, **job.request}  # fmt: skip
    if status == job.timeline.done:
        view["presignedJsonStatementUrl"] = _statement_url(app, job, "JSON")
        view["jsonStatementStatus"] = "LATEST"
        if job.request["includeCsvFormat"]:
            view["presignedCsvStatementUrl"] = _statement_url(app, job, "CSV")
            view["csvStatementStatus"] = "LATEST"
    view.update(_audit(app, job))
    return view


def _statement_url(app: EmulatorApp, job: Job, kind: str) -> str:
    """A fresh-enough presigned URL for the bill statement (re-issued once expired)."""
    cached = job.result.get(kind)
    if cached is None or cached[1] <= utcnow() + timedelta(seconds=5):
        bill = app.store.find("bills", job.request["billId"]) or {"id": job.request["billId"]}
        if kind == "JSON":
            content = json.dumps(bill).encode("utf-8")
        else:
            content = files.render([{k: v for k, v in bill.items() if k != "lineItems"}], "CSV")
        path, expires = app.urls.publish(content, files.CONTENT_TYPES[kind])
        cached = job.result[kind] = (app.absolute(path), expires)
    return cached[0]


def get_statement_job(app: EmulatorApp, req: Request) -> Response:
    """``GET /statementjobs/{id}``."""
    return json_response(
        statement_job_view(app, app.jobs.get("statementjob", req.params["id"], "StatementJob"))
    )


def list_statement_jobs(app: EmulatorApp, req: Request) -> Response:
    """``GET /statementjobs``: filters active, status, billId."""
    return json_response(
        _list_jobs(app, req, "statementjob", statement_job_view, "statementJobStatus", STATEMENT_JOBS)
    )


def cancel_statement_job(app: EmulatorApp, req: Request) -> Response:
    """``POST /statementjobs/{id}/cancel``."""
    job = app.jobs.get("statementjob", req.params["id"], "StatementJob")
    old = _statement_job_dto(app, job)
    app.jobs.cancel(job)
    job.result["version"] = job.result.get("version", 1) + 1
    app.events.record_change(STATEMENT_JOB_UPDATED, _statement_job_dto(app, job), old)
    return json_response(statement_job_view(app, job))


def finish_statement_job(app: EmulatorApp, job: Job) -> None:
    """When the job finishes: on COMPLETE the bill records that its statements were generated (and
    are current); either way (COMPLETE or FAILED) a ``billing.statementjob.updated`` Event."""
    bill = app.store.find("bills", job.request["billId"])
    if job.final == job.timeline.done and bill is not None:
        bill["jsonStatementGenerated"] = True
        bill["csvStatementGenerated"] = bill.get("csvStatementGenerated") or job.request["includeCsvFormat"]
        bill["statementStale"] = False
    old = {**_statement_job_dto(app, job), "statementJobStatus": job.timeline.running[-1]}
    app.events.record_change(STATEMENT_JOB_UPDATED, _statement_job_dto(app, job), old)


def _statement_job_dto(app: EmulatorApp, job: Job) -> dict:
    """The statement job in an Event: without its short-lived presigned URLs."""
    return {k: v for k, v in statement_job_view(app, job).items() if not k.startswith("presigned")}


# -- helpers ----------------------------------------------------------------------------------
def _list_jobs(app: EmulatorApp, req: Request, kind: str, view, status_field: str, template: str) -> dict:
    jobs = app.jobs.of_kind(kind)
    if (query_value(req.query, "active") or "").lower() == "true":
        jobs = [job for job in jobs if job.active]
    rows = [(job.seq, view(app, job)) for job in jobs]
    filters = (
        {"status": status_field, "billId": "billId"} if kind == "statementjob" else {"status": status_field}
    )
    return paginate(filter_rows(rows, req.query, filters), req.query, PAGE_SIZE_MAXIMA[template])


def _audit(app: EmulatorApp, job: Job) -> dict:
    return {
        "createdBy": app.actor,
        "dtCreated": iso(job.created),
        "lastModifiedBy": app.actor,
        "dtLastModified": iso(job.finished_at or job.created),
    }
