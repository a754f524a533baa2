"""The emulator's state and request dispatch: faults, stats, auth, then the route's handler."""

from __future__ import annotations

import copy
import http
import itertools
import sys
import threading
import time
import traceback
from collections.abc import Callable

from . import api_billing, api_config, api_control, api_events, api_exports, api_finance
from .auth import TokenIssuer, service_user_id
from .common import ApiError, iso, utcnow
from .control import FaultBook, Stats
from .events import EventLog, failure_reason
from .files import PresignedUrls
from .jobs import Job, JobBoard
from .limits import RateLimiter, RateLimits
from .measurements import MeasurementLog
from .routing import Request, Response, Router, error_response, json_response
from .spec import clean, clean_query, operation, request_schema
from .store import EntityStore


class EmulatorApp:
    """Everything the emulator knows; ``handle`` answers one request.

    ``lock`` guards the shared state (store, measurements, jobs, stats, tokens, faults), not request
    handling: bodies are decoded and validated before it is taken, and the measurements handler
    holds it only while it records a validated batch, so concurrent ingest requests overlap.
    """

    def __init__(
        self,
        *,
        org_id: str,
        access_key_id: str,
        api_secret: str,
        token_expires_in: int,
        job_duration: float,
        limits: RateLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.RLock()
        self.limiter = RateLimiter(limits, clock)
        self.org_id = org_id
        self.access_key_id = access_key_id
        self.base_url = ""
        self.tokens = TokenIssuer(org_id, access_key_id, api_secret, token_expires_in)
        self.service_user_id = service_user_id(access_key_id)
        self.actor = f"SERVICE_USER_{self.service_user_id}"
        sequence = itertools.count().__next__
        self.store = EntityStore(self.actor, sequence)
        self.measurements = MeasurementLog()
        self.events = EventLog(sequence)
        self.jobs = JobBoard(job_duration, self._settle, sequence=sequence)
        self.urls = PresignedUrls()
        self.stats = Stats()
        self.faults = FaultBook()
        self.settle_hooks: dict[str, Callable[[Job], None]] = {}
        created = iso(utcnow())
        self.org_config = self._org_config(created)
        self.me = self._me(created)
        self.router = Router()
        api_config.register(self.router, self)
        api_control.register(self.router, self)
        api_exports.register(self.router, self)
        api_billing.register(self.router, self)
        api_events.register(self.router, self)
        api_finance.register(self.router, self)

    # -- dispatch ---------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        """Answer one request: route, count, apply a planned fault, authorize, run the handler."""
        try:
            route, req.params = self.router.resolve(req.method, req.path)
        except ApiError as error:
            if not req.path.startswith("/_emulator/"):
                with self.lock:
                    key = f"{req.method} (unmatched)"
                    self.stats.count_request(key, req.client)
                    self.stats.count_status(key, error.status)
            return error_response(error.status, error.message, error.headers)
        fault = refusal = None
        if route.counted:
            with self.lock:
                self.stats.count_request(route.key, req.client)
                fault = self.faults.take(req.method, route.template)
                # a delay alone answers normally after it: the limits apply as to any request
                answers = fault is None or (fault.status is None and not fault.drop)
                if answers and route.auth:
                    refusal = self.limiter.check(route.key, req.client)
                    if refusal is not None:
                        self.stats.count_rate_limited(route.key, req.client, refusal.limit)
                        self.stats.count_status(route.key, 429)
        if refusal is not None:
            return error_response(429, refusal.message, refusal.headers(self.limiter.limits.retry_after))
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop or fault.status is not None:
                response = self._fault_response(fault.status, fault.retry_after, fault.body, fault.drop)
                with self.lock:
                    self.stats.count_status(route.key, "dropped" if fault.drop else response.status)
                return response
        try:
            if route.auth:
                with self.lock:
                    self._authorize(req)
            if route.auth and route.locked:  # (an unlocked handler validates its own body)
                check_request(req, route.method, route.template)  # decode + validate, unlocked
            if route.locked:
                with self.lock:
                    self.jobs.advance()
                    response = route.handler(req)
            else:
                response = route.handler(req)  # takes the lock itself around shared state
        except ApiError as error:
            response = error_response(error.status, error.message, error.headers)
        except Exception as error:  # a bug in the emulator: say so, loudly
            traceback.print_exc(file=sys.stderr)
            response = error_response(500, f"m3ter emulator internal error: {error!r}")
        if route.counted:
            with self.lock:
                self.stats.count_status(route.key, response.status)
        return response

    def _authorize(self, req: Request) -> None:
        self.tokens.check_bearer(req.header("Authorization"))
        org = req.params.get("orgId")
        if org is not None and org != self.org_id:
            raise ApiError(403, f"Forbidden: no access to organization {org!r}")

    @staticmethod
    def _fault_response(status: int | None, retry_after: str | None, body: object, drop: bool) -> Response:
        if drop or status is None:
            return Response(drop=True)
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        if body is None:
            try:
                phrase = http.HTTPStatus(status).phrase
            except ValueError:
                phrase = "Error"
            body = {"message": f"{phrase} (emulated fault)"}
        return json_response(body, status, headers)

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Clear data, stats, faults, tokens, jobs and URLs (configuration stays)."""
        with self.lock:
            self.store.reset()
            self.measurements.reset()
            self.events.reset()
            self.jobs.reset()
            self.urls.reset()
            self.stats.reset()
            self.faults.clear()
            self.tokens.reset()
            self.limiter.reset()

    def snapshot_stats(self) -> dict:
        """The stats as ``GET /_emulator/stats`` answers them."""
        with self.lock:
            self.jobs.advance()
            return self.stats.snapshot(
                measurements_stored=len(self.measurements.items),
                measurements_duplicates=self.measurements.duplicates,
            )

    def fault_views(self) -> list[dict]:
        """The planned faults, JSON-ready."""
        with self.lock:
            return [fault.as_dict() for fault in self.faults.faults]

    def expire_tokens(self) -> int:
        """Expire every issued token now; return how many."""
        with self.lock:
            return self.tokens.expire_all()

    def stored_measurements(self) -> list[dict]:
        """Copies of the stored measurements in arrival order (settling due jobs first)."""
        with self.lock:
            self.jobs.advance()
            return copy.deepcopy(self.measurements.items)

    def absolute(self, path: str) -> str:
        """``path`` on this server (for presigned-style URLs)."""
        return f"{self.base_url}{path}"

    def ingest(self, items: list[dict], *, owned: bool = False) -> int:
        """m3ter's asynchronous enrichment stage for measurements it accepted (hold ``lock``).

        A measurement for an unknown Meter, for an Account code that only nearly matches an existing
        one (other letter case), missing a numeric Data Field of its Meter, or re-using a uid, is not
        stored: it becomes an ``ingest.validation.failure`` Event. An unknown Account code (no near
        match) auto-creates a skeleton Account, as m3ter does. Returns how many were stored.
        """
        stored = 0
        near: dict[str, str] | None = None
        download = self.absolute(f"/organizations/{self.org_id}/measurements/failedIngest/getDownloadUrl")
        for item in items:
            code = item["account"]
            account = self.store.find_by_code("accounts", code)
            problem = None
            if account is None:
                if near is None:
                    near = {
                        a["code"].lower(): a["code"] for _, a in self.store.rows("accounts") if "code" in a
                    }
                if code.lower() in near:
                    problem = (
                        f"Account code {code!r} does not exactly match the existing Account code "
                        f"{near[code.lower()]!r}, so no Account could be created for it"
                    )
            reason = failure_reason(item, self.store.find_by_code("meters", item["meter"]), problem)
            if reason is None:
                if self.measurements.add([item], owned=owned):
                    stored += 1
                    if account is None:
                        account = self.store.insert("accounts", {"code": code, "name": code})
                        near = None
                    continue
                reason = ("DuplicateUid", f"uid {item.get('uid')!r} was already ingested")
            self.events.record_ingest_failure(item, *reason, account and account["id"], download)
        return stored

    def _settle(self, job: Job) -> None:
        hook = self.settle_hooks.get(job.kind)
        if hook is not None:
            hook(job)

    def _org_config(self, created: str) -> dict:
        return {
            "id": self.org_id,
            "version": 1,
            "timezone": "UTC",
            "yearEpoch": "2022-01-01",
            "monthEpoch": "2022-01-01",
            "weekEpoch": "2022-01-04",
            "dayEpoch": "2022-01-01",
            "currency": "USD",
            "daysBeforeBillDue": 1,
            "standingChargeBillInAdvance": False,
            "commitmentFeeBillInAdvance": False,
            "minimumSpendBillInAdvance": False,
            "externalInvoiceDate": "FIRST_DAY_OF_NEXT_PERIOD",
            "suppressedEmptyBills": False,
            "consolidateBills": False,
            "autoGenerateStatementMode": "NONE",
            "creditApplicationOrder": ["PREPAYMENT", "BALANCE"],
            "allowNegativeBalances": False,
            "allowOverlappingPlans": False,
            "createdBy": self.actor,
            "dtCreated": created,
            "lastModifiedBy": self.actor,
            "dtLastModified": created,
        }

    def _me(self, created: str) -> dict:
        audit = {
            "createdBy": self.actor,
            "dtCreated": created,
            "lastModifiedBy": self.actor,
            "dtLastModified": created,
        }
        return {
            "serviceUser": {
                "id": self.service_user_id,
                "version": 1,
                "name": "m3ter emulator service user",
                **audit,
            },
            "organization": {
                "id": self.org_id,
                "version": 1,
                "orgId": self.org_id,
                "organizationName": "m3ter emulator",
                "shortName": self.org_id,
                "type": "SANDBOX",
                "status": "ACTIVE",
                **audit,
            },
        }


def check_request(req: Request, method: str, template: str) -> None:
    """Validate the query and JSON body against the spec's operation; keep only declared keys.

    Runs before the emulator's lock is taken. 400 ``{"message": "<field>: <reason>"}`` on the first
    problem, as m3ter answers a wrongly typed field; keys the spec does not declare are dropped.
    """
    op = operation(method, template)
    if op is None:
        return
    clean_query(req.query, op)
    schema = request_schema(op)
    if schema is None or method not in ("POST", "PUT"):
        return
    if not req.body.strip():
        if op.get("requestBody", {}).get("required"):
            raise ApiError(400, "request body is required")
        return
    req.set_json(clean(req.json(), schema, ""))
