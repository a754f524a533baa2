"""Data Explorer usage queries (``POST /usage/query``) over the stored measurements: raw usage, and
aggregated usage (the spec's ``DataExplorerAggregationFunction``: SUM, MIN, MAX, COUNT, LATEST, MEAN,
UNIQUE) grouped by Account, dimension and time, with dimension filters.

The spec leaves the shape of an aggregated item open (``additionalProperties``); the emulator
answers one item per aggregation and group: ``meterId``, ``fieldCode``, ``function``, ``value``, and
the group keys (``accountId`` and ``accountCode`` for ACCOUNT, ``timeGroup`` (the period's start)
for TIME, ``dimensions`` ``{fieldCode: value}`` for DIMENSION). A guess at m3ter's shape, not a copy.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from .common import ApiError, iso, parse_datetime

if TYPE_CHECKING:
    from .app import EmulatorApp

MAX_LIMIT = 20_000
FUNCTIONS = ("SUM", "MIN", "MAX", "COUNT", "LATEST", "MEAN", "UNIQUE")
NUMBER_MAPS = ("measure", "cost", "income")
STRING_MAPS = ("who", "where", "what", "other")
FREQUENCIES = ("DAY", "HOUR", "WEEK", "MONTH", "QUARTER")


def query(app: EmulatorApp, body: dict) -> dict:
    """The ``UsageQueryResponse`` for a validated request body (400 for a request m3ter refuses)."""
    start, end = _date(body, "startDate"), _date(body, "endDate")
    # the spec's request schema lists neither field, but its description marks the time period
    # "(Required)": the emulator holds m3ter to the description
    for name, value in (("startDate", start), ("endDate", end)):
        if value is None:
            raise ApiError(400, f"{name} is required: the query's time period (ISO-8601 date-time)")
    if start and end and end <= start:
        raise ApiError(400, "endDate must be after startDate")
    limit = body.get("limit", MAX_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT}")
    aggregations = body.get("aggregations") or []
    groups = body.get("groups") or []
    if groups and not aggregations:
        raise ApiError(400, "groups: grouping needs aggregations")
    accounts = _codes(app, "accounts", body.get("accountIds"))
    meters = _codes(app, "meters", body.get("meterIds"))
    filters = [
        (_meter_code(app, f, "dimensionFilters"), f["fieldCode"], set(f["values"]))
        for f in body.get("dimensionFilters") or []
    ]
    items = []
    for item in reversed(app.measurements.items):  # most recently received first
        ts = parse_datetime(item["ts"])
        if (start and ts < start) or (end and ts >= end):
            continue
        if (accounts is not None and item["account"] not in accounts) or (
            meters is not None and item["meter"] not in meters
        ):
            continue
        if any(item["meter"] == m and _dimension(item, f) not in values for m, f, values in filters):
            continue
        items.append(item)
    rows = _aggregate(app, items, aggregations, groups) if aggregations else copy.deepcopy(items)
    return {"data": rows[:limit], "hasMoreData": len(rows) > limit}


def _date(body: dict, name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise ApiError(400, f"{name} must be an ISO-8601 date-time with an offset, got {value!r}")
    return parsed


def _codes(app: EmulatorApp, collection: str, ids: list | None) -> set[str] | None:
    if not ids:
        return None
    return {e["code"] for i in ids if (e := app.store.find(collection, i)) is not None and "code" in e}


def _meter_code(app: EmulatorApp, spec: dict, where: str) -> str | None:
    meter = app.store.find("meters", spec["meterId"])
    if meter is None:
        raise ApiError(400, f"{where}: no Meter with id {spec['meterId']!r}")
    return meter.get("code")


def _dimension(item: dict, field: str) -> str | None:
    for name in STRING_MAPS:
        value = (item.get(name) or {}).get(field)
        if value is not None:
            return value
    return None


def _measure(item: dict, field: str) -> float | None:
    for name in NUMBER_MAPS:
        value = (item.get(name) or {}).get(field)
        if value is not None:
            return float(value)
    return None


def _period(ts: datetime, frequency: str) -> str:
    ts = ts.astimezone(timezone.utc)
    day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    if frequency == "HOUR":
        start = ts.replace(minute=0, second=0, microsecond=0)
    elif frequency == "DAY":
        start = day
    elif frequency == "WEEK":
        start = day - timedelta(days=day.weekday())
    elif frequency == "MONTH":
        start = day.replace(day=1)
    else:
        start = day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return iso(start)


def _aggregate(  # noqa: C901 - one branch per function and group kind of the spec's enums
    app: EmulatorApp, items: list[dict], aggregations: list[dict], groups: list[dict]
) -> list[dict]:
    keyed: dict[tuple, dict] = {}
    for spec in aggregations:
        if spec["function"] not in FUNCTIONS:
            raise ApiError(400, f"aggregations: function must be one of {', '.join(FUNCTIONS)}")
        dimension = spec["fieldType"] == "DIMENSION"
        if dimension and spec["function"] not in ("COUNT", "UNIQUE"):
            raise ApiError(400, "aggregations: a DIMENSION field takes COUNT or UNIQUE")
        if not dimension and spec["function"] == "UNIQUE":
            raise ApiError(400, "aggregations: UNIQUE applies to DIMENSION fields")
        meter = _meter_code(app, spec, "aggregations")
        for item in items:
            if item["meter"] != meter:
                continue
            value = _dimension(item, spec["fieldCode"]) if dimension else _measure(item, spec["fieldCode"])
            if value is None:
                continue
            group = _group_of(app, item, groups)
            key = (spec["meterId"], spec["fieldCode"], spec["function"], json.dumps(group, sort_keys=True))
            row = keyed.setdefault(key, {"values": [], "group": group, "spec": spec})
            row["values"].append((parse_datetime(item["ts"]), value))
    out = []
    for row in keyed.values():
        spec, values = row["spec"], row["values"]
        numbers = [v for _, v in values]
        function = spec["function"]
        if function == "SUM":
            value: Any = sum(numbers)
        elif function == "MIN":
            value = min(numbers)
        elif function == "MAX":
            value = max(numbers)
        elif function == "COUNT":
            value = len(numbers)
        elif function == "MEAN":
            value = sum(numbers) / len(numbers)
        elif function == "UNIQUE":
            value = len(set(numbers))
        else:  # LATEST: the value with the latest timestamp (among equals, the last received)
            value = max(enumerate(values), key=lambda pair: (pair[1][0], -pair[0]))[1][1]
        out.append(
            {
                "meterId": spec["meterId"],
                "fieldCode": spec["fieldCode"],
                "function": function,
                "value": value,
                **copy.deepcopy(row["group"]),
            }
        )
    out.sort(key=lambda r: json.dumps(r, sort_keys=True, default=str))
    return out


def _group_of(app: EmulatorApp, item: dict, groups: list[dict]) -> dict:
    group: dict[str, Any] = {}
    for spec in groups:
        kind = spec.get("groupType")
        if kind == "ACCOUNT":
            account = app.store.find_by_code("accounts", item["account"])
            group["accountCode"] = item["account"]
            group["accountId"] = account["id"] if account else None
        elif kind == "TIME":
            if spec.get("frequency") not in FREQUENCIES:
                raise ApiError(400, f"groups: frequency must be one of {', '.join(FREQUENCIES)}")
            group["timeGroup"] = _period(parse_datetime(item["ts"]), spec["frequency"])
        elif kind == "DIMENSION":
            meter = _meter_code(app, spec, "groups")
            dimensions = group.setdefault("dimensions", {})
            same_meter = item["meter"] == meter
            dimensions[spec["fieldCode"]] = _dimension(item, spec["fieldCode"]) if same_meter else None
        else:
            raise ApiError(400, "groups: groupType must be ACCOUNT, DIMENSION or TIME")
    return group
