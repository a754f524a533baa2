"""How the emulator's entities refer to each other: reference checks, derived fields, list filters.

m3ter refuses a request whose body names an entity that does not exist (the emulator answers 400
naming the field), keeps an Account that still has AccountPlans, and filters lists by the
relations and dates its spec documents (e.g. Pricings active on a ``date``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time, timezone
from typing import TYPE_CHECKING

from .common import ApiError, parse_date, parse_datetime

if TYPE_CHECKING:
    from .store import EntityStore

# collection -> body field -> the collection it names (a list field names one entity per item)
REFERENCES: dict[str, dict[str, str]] = {
    "accounts": {"parentAccountId": "accounts"},
    "meters": {"productId": "products"},
    "aggregations": {"meterId": "meters", "accountingProductId": "products"},
    "compoundaggregations": {"productId": "products", "accountingProductId": "products"},
    "plantemplates": {"productId": "products"},
    "plans": {"planTemplateId": "plantemplates", "accountId": "accounts"},
    "pricings": {"planId": "plans", "planTemplateId": "plantemplates", "aggregationId": "aggregations",
                 "compoundAggregationId": "compoundaggregations"},
    "accountplans": {"accountId": "accounts", "planId": "plans", "planGroupId": "plangroups",
                     "contractId": "contracts"},
    "contracts": {"accountId": "accounts"},
    "counters": {"productId": "products"},
    "commitments": {"accountId": "accounts", "contractId": "contracts", "productIds": "products",
                    "billingPlanId": "plans"},
    "plangroups": {"accountId": "accounts"},
    "balances": {"accountId": "accounts", "contractId": "contracts", "productIds": "products"},
    "dataexports/schedules": {"destinationIds": "dataexports/destinations", "meterIds": "meters",
                              "accountIds": "accounts"},
}  # fmt: skip

# collection -> (referring collection, its field): deleting a referred-to entity is refused
RESTRICT_DELETE: dict[str, tuple[tuple[str, str], ...]] = {
    "accounts": (("accountplans", "accountId"),),
}


def check_references(store: EntityStore, collection: str, body: dict) -> None:
    """400 naming the field when the body refers to an entity that does not exist."""
    for field, target in REFERENCES.get(collection, {}).items():
        value = body.get(field)
        for entity_id in value if isinstance(value, list) else [value]:
            if isinstance(entity_id, str) and entity_id and store.find(target, entity_id) is None:
                raise ApiError(400, f"{field}: no {store.singular(target)} with id {entity_id!r}")


def derived_fields(store: EntityStore, collection: str, body: dict) -> dict:
    """Fields m3ter fills in: from related entities (a Plan's and an AccountPlan's productId), and
    defaults where the request allows null but the response does not (a destination's partitionOrder)."""
    if collection == "dataexports/destinations" and body.get("partitionOrder") is None:
        return {"partitionOrder": "TIME_FIRST"}  # "Time first (Default)", says the spec
    if collection == "plans":
        template = store.find("plantemplates", body.get("planTemplateId") or "")
        if template is not None and template.get("productId"):
            return {"productId": template["productId"]}
    if collection == "accountplans":
        plan = store.find("plans", body.get("planId") or "")
        if plan is not None and plan.get("productId"):
            return {"productId": plan["productId"]}
    return {}


def check_delete(store: EntityStore, collection: str, entity_id: str) -> None:
    """400 when other entities still depend on the one being deleted."""
    for other, field in RESTRICT_DELETE.get(collection, ()):
        if any(item.get(field) == entity_id for _, item in store.rows(other)):
            raise ApiError(
                400,
                f"{store.singular(collection)} {entity_id!r} cannot be deleted: it has "
                f"{store.singular(other)}s; delete them first",
            )


# -- list filters beyond "field equals one of the values" -------------------------------------
def moment(value: object) -> datetime | None:
    """A date or date-time string as an aware datetime (a date is its midnight UTC)."""
    parsed = parse_datetime(value)
    if parsed is not None:
        return parsed
    day = parse_date(value)
    return None if day is None else datetime.combine(day, time(), timezone.utc)


def _query_moment(name: str, text: str) -> datetime:
    value = moment(text)
    if value is None:
        raise ApiError(400, f"{name}: must be an ISO-8601 date or date-time, got {text!r}")
    return value


def active_on(start_field: str = "startDate", end_field: str = "endDate") -> Predicate:
    """Entities active at the query date: start <= date < end (no end: open-ended)."""

    def check(store: EntityStore, item: dict, name: str, text: str) -> bool:
        when = _query_moment(name, text)
        start, end = moment(item.get(start_field)), moment(item.get(end_field))
        return (start is None or start <= when) and (end is None or when < end)

    check.takes_date = True  # type: ignore[attr-defined]
    return check


def on_or_after(field: str) -> Predicate:
    """``field`` is on or after the query date."""

    def check(store: EntityStore, item: dict, name: str, text: str) -> bool:
        value = moment(item.get(field))
        return value is not None and value >= _query_moment(name, text)

    check.takes_date = True  # type: ignore[attr-defined]
    return check


def before(field: str) -> Predicate:
    """``field`` is before the query date."""

    def check(store: EntityStore, item: dict, name: str, text: str) -> bool:
        value = moment(item.get(field))
        return value is not None and value < _query_moment(name, text)

    check.takes_date = True  # type: ignore[attr-defined]
    return check


def same_day(field: str) -> Predicate:
    """``field`` falls on the query date."""

    def check(store: EntityStore, item: dict, name: str, text: str) -> bool:
        value, wanted = moment(item.get(field)), _query_moment(name, text)
        return value is not None and value.date() == wanted.date()

    check.takes_date = True  # type: ignore[attr-defined]
    return check


def contains(field: str) -> Predicate:
    """The list ``field`` holds the query value."""
    return lambda store, item, name, text: text in (item.get(field) or [])


def via(field: str, collection: str, target_field: str) -> Predicate:
    """The entity ``field`` refers to (in ``collection``) has ``target_field`` equal to the value."""

    def check(store: EntityStore, item: dict, name: str, text: str) -> bool:
        other = store.find(collection, item.get(field) or "")
        return other is not None and other.get(target_field) == text

    return check


Predicate = Callable[["EntityStore", dict, str, str], bool]

PREDICATES: dict[str, dict[str, Predicate]] = {
    "aggregations": {"productId": via("meterId", "meters", "productId")},
    "pricings": {"date": active_on()},
    "accountplans": {"date": active_on(), "product": lambda s, item, n, v: item.get("productId") == v},
    "commitments": {"date": active_on(), "productId": contains("productIds"),
                    "endDateStart": on_or_after("endDate"), "endDateEnd": before("endDate")},
    "plans": {"productId": lambda s, item, n, v: item.get("productId") == v},
    "balances": {"endDateStart": on_or_after("endDate"), "endDateEnd": before("endDate")},
    "bills": {"billDate": same_day("billDate"), "billDateStart": on_or_after("billDate"),
              "billDateEnd": before("billDate"),
              "externalInvoiceDateStart": on_or_after("externalInvoiceDate"),
              "externalInvoiceDateEnd": before("externalInvoiceDate")},
}  # fmt: skip


def predicate_filter(store: EntityStore, collection: str, rows, query: dict[str, list[str]]):
    """Keep the ``(seq, item)`` rows that pass every predicate filter present in ``query``."""
    wanted = [
        (name, raw[-1], check)
        for name, check in PREDICATES.get(collection, {}).items()
        if (raw := query.get(name)) and raw[-1] != ""
    ]
    for name, text, check in wanted:  # a bad filter is a 400 before any row is looked at, as in m3ter
        if getattr(check, "takes_date", False):
            _query_moment(name, text)
    return (
        (seq, item)
        for seq, item in rows
        if all(check(store, item, name, text) for name, text, check in wanted)
    )
