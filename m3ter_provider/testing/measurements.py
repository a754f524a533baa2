"""Measurement ingest: m3ter's request limits, per-item validation and uid de-duplication."""

from __future__ import annotations

import copy
import json

from .common import ApiError, code_problem, parse_datetime

MAX_REQUEST_BYTES = 512_000
"""A measurements request body must be *under* this many bytes (else 403, as m3ter answers)."""
MAX_MEASUREMENTS = 1000
MAX_UID_LENGTH = 50
STRING_MAPS = ("who", "where", "what", "other", "metadata")
NUMBER_MAPS = ("measure", "cost", "income")
FIELDS = frozenset(("uid", "account", "meter", "ts", "ets", *STRING_MAPS, *NUMBER_MAPS))
"""The MeasurementRequest schema's properties: other keys are ignored (not stored, not exported)."""


def check_size(body: bytes) -> None:
    """403 unless the raw body is under 512,000 bytes (m3ter's documented answer, not 413)."""
    if len(body) >= MAX_REQUEST_BYTES:
        raise ApiError(
            403, f"Request body is {len(body)} bytes: the payload must be less than {MAX_REQUEST_BYTES} bytes"
        )


def decode(body: bytes) -> list:
    """The ``measurements`` array of a request body; 400 when absent or not JSON."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ApiError(400, f"request body is not valid JSON: {error}") from error
    items = payload.get("measurements") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        raise ApiError(400, "measurements is required and must be an array")
    return items


def validate(items: list) -> None:
    """400 unless there are 1..1000 valid items; the message names the first bad index and field."""
    if not 1 <= len(items) <= MAX_MEASUREMENTS:
        raise ApiError(400, f"measurements must hold 1 to {MAX_MEASUREMENTS} items, got {len(items)}")
    for index, item in enumerate(items):
        problem = measurement_problem(item)
        if problem:
            raise ApiError(400, f"measurements[{index}].{problem}")
        if not item.keys() <= FIELDS:
            for key in item.keys() - FIELDS:
                del item[key]


def measurement_problem(item: object) -> str | None:
    """``"<field>: <reason>"`` for the first problem in one measurement, or None when valid."""
    if not isinstance(item, dict):
        return "measurement: must be an object"
    for name in ("account", "meter"):
        if item.get(name) is None:
            return f"{name}: is required"
        problem = code_problem(item[name])
        if problem:
            return f"{name}: {problem}"
    if item.get("ts") is None:
        return "ts: is required"
    for name in ("ts", "ets"):
        if item.get(name) is not None and parse_datetime(item[name]) is None:
            return f"{name}: must be an ISO-8601 date-time with an offset, got {item[name]!r}"
    uid = item.get("uid")
    if uid is not None and (not isinstance(uid, str) or len(uid) > MAX_UID_LENGTH):
        return f"uid: must be a string of at most {MAX_UID_LENGTH} characters"
    return maps_problem(item)


def maps_problem(item: dict) -> str | None:
    """``"<map>.<key>: <reason>"`` for the first bad entry of a measurement's maps, or None."""
    for name in STRING_MAPS + NUMBER_MAPS:
        value = item.get(name)
        if value is None:
            continue
        if not isinstance(value, dict):
            return f"{name}: must be an object"
        for key, entry in value.items():
            if name in STRING_MAPS and not isinstance(entry, str):
                return f"{name}.{key}: must be a string"
            if name in NUMBER_MAPS and (isinstance(entry, bool) or not isinstance(entry, (int, float))):
                return f"{name}.{key}: must be a number"
    return None


class MeasurementLog:
    """Accepted measurements in arrival order; a uid seen before is not stored again."""

    def __init__(self) -> None:
        self.items: list[dict] = []
        self.uids: set[str] = set()
        self.duplicates = 0

    def reset(self) -> None:
        """Forget every measurement and uid."""
        self.items.clear()
        self.uids.clear()
        self.duplicates = 0

    def add(self, items: list[dict], *, owned: bool = False) -> int:
        """Store valid ``items`` (de-duplicated by uid); return how many were stored.

        :param owned: the caller hands the items over (freshly decoded): store them without copying.
        """
        stored = 0
        for item in items:
            uid = item.get("uid")
            if uid is not None:
                if uid in self.uids:
                    self.duplicates += 1
                    continue
                self.uids.add(uid)
            self.items.append(item if owned else copy.deepcopy(item))
            stored += 1
        return stored
