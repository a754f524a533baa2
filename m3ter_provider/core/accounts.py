"""Sync m3ter Accounts and their AccountPlans from rows of a CRM or a warehouse (no Airflow import).

Each row is one Account, matched by ``code``: created when m3ter has none, updated (``PUT`` with the
current ``version``) only when a field the row gives differs from m3ter's (fields the row leaves out
are kept), and given an AccountPlan for ``plan_code`` or ``plan_id`` from ``plan_start_date`` when
the Account has no AccountPlan for that Plan covering that date. Re-running the same rows writes
nothing.

Every row is checked before the first request: a bad row (no ``code``, an unknown column, a Plan
without a start date, a code given twice...) refuses the whole input, naming the row and the field.
m3ter's own refusals of one row (HTTP 400, say a malformed e-mail m3ter rejects) are reported per
row and the others go on. Calls are paced client-side under the Config API's limit (50 requests
a second per Organization); a 429 is still retried by the client's policy.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import logging
import pathlib
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from m3ter_provider.core._text import plural
from m3ter_provider.core.pacing import Pacer
from m3ter_provider.errors import M3terAPIError, M3terValidationError

if TYPE_CHECKING:
    from m3ter_provider.core.client import M3terClient

log = logging.getLogger(__name__)

#: the fields of m3ter's ``AccountRequest`` a row may give (besides ``code``)
ACCOUNT_FIELDS = (
    "name", "emailAddress", "address", "parentAccountId", "billEpoch", "purchaseOrderNumber",
    "currency", "statementDefinitionId", "autoGenerateStatementMode", "creditApplicationOrder",
    "daysBeforeBillDue", "customFields",
)  # fmt: skip
#: columns that hold JSON when they arrive as text (a CSV cell, a SQL string)
JSON_FIELDS = frozenset({"address", "customFields", "creditApplicationOrder"})
INT_FIELDS = frozenset({"daysBeforeBillDue"})
PLAN_COLUMNS = ("plan_code", "plan_id", "plan_start_date", "plan_end_date")
#: the fields m3ter sets itself: never sent back in a PUT
SYSTEM_FIELDS = frozenset({"id", "version", "dtCreated", "dtLastModified", "createdBy", "lastModifiedBy"})
DEFAULT_RATE = 10.0
"""Requests a second at most (m3ter's Config API allows 50 per Organization, shared with others)."""
_CODES_PER_LOOKUP = 50
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclasses.dataclass
class AccountRow:
    """One checked input row: the Account's ``code``, the fields it gives, and its Plan if any."""

    number: int
    code: str
    fields: dict[str, Any]
    plan_code: str | None = None
    plan_id: str | None = None
    plan_start: str | None = None
    plan_end: str | None = None


# ---------------------------------------------------------------- reading and checking rows
def read_rows(source: Any) -> Iterator[Mapping[str, Any]]:
    """Rows from a list or iterable of dicts, or a JSON Lines / JSON array / CSV file (by suffix)."""
    if isinstance(source, (str, pathlib.PurePath)) or (hasattr(source, "open") and hasattr(source, "suffix")):
        yield from _read_file(source)
        return
    if isinstance(source, Mapping):
        raise M3terValidationError("rows: give a list of dicts (one per Account), not a single dict.")
    yield from source


def _read_file(path: Any) -> Iterator[Mapping[str, Any]]:
    target = pathlib.Path(path) if isinstance(path, str) else path
    suffix = str(target.suffix).lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
        raise M3terValidationError(f"rows file {str(path)!r}: use a .csv, .jsonl or .json file.")
    with target.open("r", encoding="utf-8", newline="") as handle:
        if suffix == ".csv":
            yield from csv.DictReader(handle)
        elif suffix == ".json":
            data = json.load(handle)
            if not isinstance(data, list):
                raise M3terValidationError(
                    f"rows file {str(path)!r}: a .json file must hold an array of objects."
                )
            yield from data
        else:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError as exc:
                        raise M3terValidationError(
                            f"rows file {str(path)!r}, line {number}: not JSON ({exc})."
                        ) from None


def check_rows(rows: Iterable[Mapping[str, Any]]) -> list[AccountRow]:
    """Check every row before anything is sent; the first problem raises, naming row and field.

    :raises M3terValidationError: a row is not a mapping, has no ``code``, a column that is not an
        Account field, a malformed value, a Plan without ``plan_start_date``, or repeats a code.
    """
    checked: list[AccountRow] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, 1):
        if not isinstance(row, Mapping):
            raise M3terValidationError(
                f"row {number}: expected a mapping of column to value, got {type(row).__name__}."
            )
        values = {str(k): v for k, v in row.items() if not _blank(v)}  # an empty CSV cell: not given
        code = values.pop("code", None)
        if not isinstance(code, str) or not code.strip() or code != code.strip() or len(code) > 80:
            raise M3terValidationError(
                f"row {number}: 'code' {code!r} is not an Account code: give 1 to 80 characters, "
                "no leading or trailing space."
            )
        if code in seen:
            raise M3terValidationError(
                f"row {number}: Account code {code!r} is already in row {seen[code]}: give each Account once."
            )
        seen[code] = number
        plan = {name: values.pop(name, None) for name in PLAN_COLUMNS}
        unknown = sorted(set(values) - set(ACCOUNT_FIELDS))
        if unknown:
            raise M3terValidationError(
                f"row {number} ({code}): unknown column(s) {unknown}: use m3ter's Account fields "
                f"({', '.join(ACCOUNT_FIELDS)}) or {', '.join(PLAN_COLUMNS)}."
            )
        fields = {name: _field_value(name, value, number, code) for name, value in values.items()}
        checked.append(AccountRow(number, code, fields, **_plan(plan, number, code)))
    return checked


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _field_value(name: str, value: Any, number: int, code: str) -> Any:
    where = f"row {number} ({code}): {name!r}"
    if name in JSON_FIELDS and isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise M3terValidationError(
                f"{where} {value!r} is not JSON: give an object or array as JSON text."
            ) from None
    if name in INT_FIELDS:
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise M3terValidationError(f"{where} {value!r} is not a whole number.") from None
    if name == "name" and (not isinstance(value, str) or len(value) > 200):
        raise M3terValidationError(f"{where} must be text of at most 200 characters.")
    if name == "emailAddress" and (not isinstance(value, str) or "@" not in value or " " in value.strip()):
        raise M3terValidationError(f"{where} {value!r} is not an e-mail address.")
    return value


def _plan(plan: dict[str, Any], number: int, code: str) -> dict[str, Any]:
    where = f"row {number} ({code})"
    if plan["plan_code"] is not None and plan["plan_id"] is not None:
        raise M3terValidationError(f"{where}: give plan_code or plan_id, not both.")
    if plan["plan_code"] is None and plan["plan_id"] is None:
        if plan["plan_start_date"] is not None or plan["plan_end_date"] is not None:
            raise M3terValidationError(f"{where}: plan_start_date needs a plan_code or plan_id.")
        return {}
    if plan["plan_start_date"] is None:
        raise M3terValidationError(
            f"{where}: plan_start_date is missing: give the date the Plan applies from, e.g. '2026-01-01'."
        )
    start = plan_date(plan["plan_start_date"], f"{where}: plan_start_date")
    end = plan_date(plan["plan_end_date"], f"{where}: plan_end_date") if plan["plan_end_date"] else None
    if end is not None and end <= start:
        raise M3terValidationError(f"{where}: plan_end_date {end} is not after plan_start_date {start}.")
    return {
        "plan_code": None if plan["plan_code"] is None else str(plan["plan_code"]),
        "plan_id": None if plan["plan_id"] is None else str(plan["plan_id"]),
        "plan_start": start,
        "plan_end": end,
    }


def plan_date(value: Any, where: str) -> str:
    """An AccountPlan date as m3ter wants it (``YYYY-MM-DDT00:00:00Z``) from a date or ISO text."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return f"{value.isoformat()}T00:00:00Z"
    text = str(value).strip()
    day = text[:10]
    if _DATE.match(day):
        try:
            dt.date.fromisoformat(day)
        except ValueError:
            pass
        else:
            if len(text) == 10 or text[10:] in ("T00:00:00Z", "T00:00:00.000Z", " 00:00:00", "T00:00:00"):
                return f"{day}T00:00:00Z"
    raise M3terValidationError(f"{where} {value!r} is not a date: give one as 'YYYY-MM-DD'.")


# ---------------------------------------------------------------- the sync
class _Paced:
    """The client's calls, each after the pacer's wait (reads and writes alike)."""

    def __init__(self, client: M3terClient, pacer: Pacer) -> None:
        self.client = client
        self.pacer = pacer

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.pacer.wait(self.client.sleep)
        return self.client.request(method, path, **kwargs)

    def list(self, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query = dict(params, pageSize=100)
        while True:
            page = self.request("GET", path, params=query)
            items.extend(item for item in page.get("data") or [] if isinstance(item, dict))
            token = page.get("nextToken")
            if not token:
                return items
            query["nextToken"] = token


def sync_accounts(
    client: M3terClient,
    rows: Any,
    *,
    dry_run: bool = False,
    rate: float = DEFAULT_RATE,
    max_failures: int = 20,
    report_path: Any = None,
) -> dict[str, Any]:
    """Create or update Accounts (and attach AccountPlans) so that m3ter matches ``rows``.

    :param client: the m3ter client.
    :param rows: dicts (a list or any iterable), or a ``.csv`` / ``.jsonl`` / ``.json`` file path.
        Columns: ``code`` (required), any of :data:`ACCOUNT_FIELDS` in m3ter's spelling
        (``name`` and ``emailAddress`` are required to create an Account), and optionally
        ``plan_code`` or ``plan_id`` with ``plan_start_date`` (and ``plan_end_date``).
    :param dry_run: read m3ter and report what would change; write nothing.
    :param rate: requests a second at most (default 10; m3ter allows 50 per Organization).
    :param max_failures: how many failed rows the returned summary lists (all go to ``report_path``).
    :param report_path: write one JSON line per row (code, outcome, reason, changed fields) there.
    :return: ``{"rows", "created", "updated", "unchanged", "failed", "plans_attached", "dry_run",
        "failures": [{"row", "code", "reason"}...], "report"?}``.
    :raises M3terValidationError: a bad row; nothing was sent.
    """
    checked = check_rows(read_rows(rows))
    paced = _Paced(client, Pacer(rate))
    existing = _existing_accounts(paced, [row.code for row in checked])
    plan_ids = _plan_ids(paced, checked)
    counts = {"created": 0, "updated": 0, "unchanged": 0, "failed": 0, "plans_attached": 0}
    report: list[dict[str, Any]] = []
    for row in checked:
        entry: dict[str, Any] = {"row": row.number, "code": row.code}
        try:
            if row.plan_code and row.plan_code not in plan_ids:
                raise M3terValidationError(f"plan_code {row.plan_code!r}: m3ter has no Plan with this code.")
            outcome, account, changed = _sync_account(paced, row, existing.get(row.code), dry_run)
            entry.update(outcome=outcome, changed=changed)
            if row.plan_code or row.plan_id:
                entry["plan"] = _sync_plan(paced, row, account, plan_ids, dry_run)
                counts["plans_attached"] += entry["plan"] == "attached"
        except (M3terAPIError, M3terValidationError) as exc:
            if isinstance(exc, M3terAPIError) and (
                exc.status is None or exc.status >= 500 or exc.status == 429
            ):
                raise  # m3ter or the network is failing, not this row: let the task retry
            entry.update(outcome="failed", reason=str(exc))
        counts[entry["outcome"]] += 1
        report.append(entry)
    summary: dict[str, Any] = {"rows": len(checked), **counts, "dry_run": dry_run}
    summary["failures"] = [
        {"row": e["row"], "code": e["code"], "reason": e["reason"]}
        for e in report
        if e["outcome"] == "failed"
    ][:max_failures]
    if report_path is not None:
        summary["report"] = _write_report(report_path, report)
    log.info(
        "m3ter Account sync%s: %s; %s created, %s updated, %s unchanged, %s failed; %s attached.",
        " (dry run: nothing written)" if dry_run else "",
        plural(len(checked), "row"),
        counts["created"],
        counts["updated"],
        counts["unchanged"],
        counts["failed"],
        plural(counts["plans_attached"], "AccountPlan"),
    )
    for failure in summary["failures"][:5]:
        log.warning("Row %s (%s) failed: %s", failure["row"], failure["code"], failure["reason"])
    return summary


def _existing_accounts(paced: _Paced, codes: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(codes), _CODES_PER_LOOKUP):
        chunk = codes[start : start + _CODES_PER_LOOKUP]
        for account in paced.list("accounts", {"codes": ",".join(chunk)}):
            found.setdefault(str(account.get("code")), account)
    return found


def _plan_ids(paced: _Paced, rows: list[AccountRow]) -> dict[str, str]:
    """Plan code -> id for the codes the rows name (one listing of the Plans, only if needed)."""
    wanted = {row.plan_code for row in rows if row.plan_code}
    if not wanted:
        return {}
    ids = {
        str(plan["code"]): str(plan["id"]) for plan in paced.list("plans", {}) if plan.get("code") in wanted
    }
    missing = sorted(wanted - set(ids))
    if missing:
        log.warning("m3ter has no Plan with code(s) %s: their rows fail.", missing)
    return ids


def _changes(account: Mapping[str, Any], fields: Mapping[str, Any]) -> list[str]:
    return sorted(name for name, value in fields.items() if not _same(account.get(name), value))


def _same(current: Any, wanted: Any) -> bool:
    if (
        isinstance(wanted, (int, float))
        and not isinstance(wanted, bool)
        and isinstance(current, (int, float))
    ):
        return float(current) == float(wanted)
    return bool(current == wanted)


def _sync_account(
    paced: _Paced, row: AccountRow, account: dict[str, Any] | None, dry_run: bool
) -> tuple[str, dict[str, Any] | None, list[str]]:
    if account is None:
        missing = [name for name in ("name", "emailAddress") if name not in row.fields]
        if missing:
            raise M3terValidationError(
                f"Account {row.code!r} does not exist in m3ter and the row has no {' or '.join(missing)}: "
                "m3ter needs name and emailAddress to create an Account."
            )
        if dry_run:
            return "created", None, sorted(row.fields)
        try:
            created = paced.request("POST", "accounts", json={"code": row.code, **row.fields})
        except M3terAPIError as exc:
            # a create retried after m3ter processed it finds the code taken: it is ours, update it
            again = _read_by_code(paced, row.code) if exc.status == 400 else None
            if again is None:
                raise
            return _sync_account(paced, row, again, dry_run)
        return "created", created, sorted(row.fields)
    changed = _changes(account, row.fields)
    if not changed:
        return "unchanged", account, []
    if dry_run:
        return "updated", account, changed
    for attempt in (1, 2):
        body = {k: v for k, v in account.items() if k not in SYSTEM_FIELDS}
        body.update(row.fields, code=row.code, version=account.get("version"))
        try:
            return "updated", paced.request("PUT", f"accounts/{account['id']}", json=body), changed
        except M3terAPIError as exc:
            if exc.status != 409 or attempt == 2:
                raise
            log.info("Account %s changed in m3ter meanwhile (409): read again, retried once.", row.code)
            account = paced.request("GET", f"accounts/{account['id']}")
            changed = _changes(account, row.fields)
            if not changed:
                return "unchanged", account, []
    raise AssertionError("unreachable")  # pragma: no cover


def _read_by_code(paced: _Paced, code: str) -> dict[str, Any] | None:
    found = [a for a in paced.list("accounts", {"codes": code}) if a.get("code") == code]
    return found[0] if found else None


def _sync_plan(
    paced: _Paced, row: AccountRow, account: dict[str, Any] | None, plan_ids: Mapping[str, str], dry_run: bool
) -> str:
    plan_id = row.plan_id or plan_ids.get(row.plan_code or "")
    if not plan_id:
        raise M3terValidationError(f"plan_code {row.plan_code!r}: m3ter has no Plan with this code.")
    assert row.plan_start is not None
    if account is None:  # a dry run's new Account
        return "attached"
    plans = paced.list("accountplans", {"account": account["id"], "plan": plan_id})
    if any(_covers(ap, row.plan_start) for ap in plans if ap.get("planId") == plan_id):
        return "present"
    if dry_run:
        return "attached"
    body = {"accountId": account["id"], "planId": plan_id, "startDate": row.plan_start}
    if row.plan_end:
        body["endDate"] = row.plan_end
    paced.request("POST", "accountplans", json=body)
    return "attached"


def _covers(account_plan: Mapping[str, Any], day: str) -> bool:
    """Whether an AccountPlan applies at ``day`` (start <= day < end; no end: from start on)."""
    start = str(account_plan.get("startDate") or "")[:10]
    end = str(account_plan.get("endDate") or "")[:10]
    return bool(start) and start <= day[:10] and (not end or day[:10] < end)


def _write_report(path: Any, report: list[dict[str, Any]]) -> str:
    target = pathlib.Path(path) if isinstance(path, str) else path
    parent = getattr(target, "parent", None)
    if parent is not None and hasattr(parent, "mkdir"):
        parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as handle:
        for entry in report:
            handle.write(json.dumps(entry, default=str) + "\n")
    return str(path)
