"""Measurement validation and batching to m3ter's ingest limits (no Airflow import).

m3ter takes 1 to 1,000 measurements per request and fewer than 512,000 bytes of body (it answers
403 above that). Every measurement is checked and encoded once, before anything is sent, so bad
input fails the task without a partial upload. A measurement without a ``uid`` can be given one
derived from a namespace and its position, so a retried task re-sends the same uids and m3ter,
which ingests a re-sent uid once within 35 days, does not count it twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from m3ter_provider.errors import M3terValidationError

MAX_MEASUREMENTS_PER_REQUEST = 1000
#: m3ter's limit is "under 512,000 bytes"
MAX_REQUEST_BYTES = 512_000
MAX_CODE_LENGTH = 80
MAX_UID_LENGTH = 50

REQUIRED_FIELDS = ("account", "meter", "ts")
STRING_MAPS = ("who", "where", "what", "other", "metadata")
NUMBER_MAPS = ("measure", "cost", "income")
KNOWN_FIELDS = frozenset({*REQUIRED_FIELDS, "uid", "ets", *STRING_MAPS, *NUMBER_MAPS})
_STRING_MAP_SET = frozenset(STRING_MAPS)
_NUMBER_MAP_SET = frozenset(NUMBER_MAPS)

_PREFIX = b'{"measurements":['
#: control characters anywhere, or white space at either end: m3ter's pattern for codes refuses both
_BAD_CODE = re.compile(r"[\x00-\x1f\x7f]|^\s|\s$")
#: m3ter's ``date-time`` format (RFC 3339): a date, a time and a UTC offset
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)\Z"
)
#: one encoder for every measurement (json.dumps with options builds a new one per call)
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_SUFFIX = b"]}"


@dataclasses.dataclass(frozen=True)
class Batch:
    """One request's worth of measurements, already encoded."""

    body: bytes
    count: int


def deterministic_uid(namespace: str, position: int) -> str:
    """A uid (40 hex chars, under m3ter's 50) fixed by ``namespace`` and ``position``."""
    return hashlib.sha256(f"{namespace}\x1f{position}".encode()).hexdigest()[:40]


def normalise_timestamp(value: Any, field: str, where: str) -> str:
    """Accept an ISO-8601 string or a datetime; return the ISO-8601 string m3ter takes."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise M3terValidationError(
                f"{where}: {field!r} is a naive datetime; give it a timezone (for example UTC)."
            )
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        raise M3terValidationError(
            f"{where}: {field!r} is a date; m3ter needs a date-time such as '2026-01-31T12:00:00Z'."
        )
    if not isinstance(value, str) or not value.strip():
        raise M3terValidationError(
            f"{where}: {field!r} must be an ISO-8601 date-time string such as '2026-01-31T12:00:00Z', "
            f"not {type(value).__name__}."
        )
    text = value.strip()
    match = _RFC3339.match(text)
    try:
        valid = match is not None and bool(dt.datetime(*map(int, match.groups())))
    except ValueError:  # a month 13, a February 30th...
        valid = False
    if not valid:
        raise M3terValidationError(
            f"{where}: {field!r} is {value!r}, not an RFC 3339 date-time with a UTC offset (m3ter's "
            "'date-time' format); give one such as '2026-01-31T12:00:00Z'."
        )
    return text


def _check_code(measurement: Mapping[str, Any], field: str, where: str) -> None:
    value = measurement.get(field)
    if not isinstance(value, str) or not value:
        raise M3terValidationError(
            f"{where}: {field!r} is required: give the m3ter {field.capitalize()} code as a non-empty string."
        )
    if len(value) > MAX_CODE_LENGTH:
        raise M3terValidationError(
            f"{where}: {field!r} is {len(value)} characters long; m3ter allows at most {MAX_CODE_LENGTH}."
        )
    if _BAD_CODE.search(value):
        raise M3terValidationError(
            f"{where}: {field!r} {value!r} has leading/trailing white space or control characters."
        )


def validate_measurement(measurement: Any, position: int) -> dict[str, Any]:
    """Check one measurement against m3ter's schema and return a normalised copy.

    :raises M3terValidationError: naming the position and the field, and how to fix it.
    """
    where = f"measurement #{position}"
    if not isinstance(measurement, Mapping):
        raise M3terValidationError(
            f"{where} is a {type(measurement).__name__}; each measurement must be a dict."
        )
    unknown = []
    for key, value in measurement.items():
        if key in _STRING_MAP_SET:
            _check_map(value, key, where, numbers=False)
        elif key in _NUMBER_MAP_SET:
            _check_map(value, key, where, numbers=True)
        elif key not in KNOWN_FIELDS:
            unknown.append(key)
    if unknown:
        raise M3terValidationError(
            f"{where}: unknown field(s) {sorted(map(str, unknown))}; m3ter takes {sorted(KNOWN_FIELDS)}."
        )
    _check_code(measurement, "account", where)
    _check_code(measurement, "meter", where)
    out = dict(measurement)
    if measurement.get("ts") is None:
        raise M3terValidationError(
            f"{where}: 'ts' is required: give the usage time as ISO-8601, e.g. '2026-01-31T12:00:00Z'."
        )
    out["ts"] = normalise_timestamp(measurement["ts"], "ts", where)
    if measurement.get("ets") is not None:
        out["ets"] = normalise_timestamp(measurement["ets"], "ets", where)
    uid = measurement.get("uid")
    if uid is not None and (not isinstance(uid, str) or not uid or len(uid) > MAX_UID_LENGTH):
        raise M3terValidationError(
            f"{where}: 'uid' must be a non-empty string of at most {MAX_UID_LENGTH} characters."
        )
    return out


def _check_map(value: Any, name: str, where: str, *, numbers: bool) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise M3terValidationError(f"{where}: {name!r} must be a dict of field name to value.")
    for key, item in value.items():
        if not isinstance(key, str):
            raise M3terValidationError(f"{where}: {name!r} has a non-string key {key!r}.")
        if numbers:
            if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                raise M3terValidationError(
                    f"{where}: {name}[{key!r}] is {item!r}; m3ter takes a finite number there."
                )
        elif not isinstance(item, str):
            raise M3terValidationError(f"{where}: {name}[{key!r}] is {item!r}; m3ter takes a string there.")


def prepare_batches(
    measurements: Iterable[Mapping[str, Any]],
    *,
    uid_namespace: str | None = None,
    max_items: int = MAX_MEASUREMENTS_PER_REQUEST,
    max_bytes: int = MAX_REQUEST_BYTES,
) -> list[Batch]:
    """Validate and encode every measurement, then pack them into request bodies.

    Each body holds at most ``max_items`` measurements and fewer than ``max_bytes`` bytes.

    :raises M3terValidationError: on the first bad measurement, or one too large to send alone;
        nothing has been sent then.
    """
    if isinstance(measurements, (str, bytes, Mapping)):
        raise M3terValidationError(
            "measurements must be a list of dicts, not a single " + type(measurements).__name__ + "."
        )
    if not 1 <= max_items <= MAX_MEASUREMENTS_PER_REQUEST:
        raise M3terValidationError(f"max_items must be between 1 and {MAX_MEASUREMENTS_PER_REQUEST}.")
    overhead = len(_PREFIX) + len(_SUFFIX)
    encoded: list[bytes] = []
    for position, measurement in enumerate(measurements):
        item = validate_measurement(measurement, position)
        if uid_namespace is not None and "uid" not in item:
            item["uid"] = deterministic_uid(uid_namespace, position)
        try:
            data = _ENCODER.encode(item).encode()
        except (TypeError, ValueError) as exc:
            raise M3terValidationError(f"measurement #{position} cannot be encoded as JSON: {exc}.") from None
        if overhead + len(data) >= max_bytes:
            raise M3terValidationError(
                f"measurement #{position} is {len(data):,} bytes of JSON: too large to send even alone "
                f"(m3ter takes requests under {max_bytes:,} bytes). Trim its maps."
            )
        encoded.append(data)

    batches: list[Batch] = []
    start, size = 0, overhead
    for index, data in enumerate(encoded):
        extra = len(data) + (1 if index > start else 0)  # the comma
        if index > start and (index - start >= max_items or size + extra >= max_bytes):
            batches.append(_batch(encoded[start:index]))
            start, size, extra = index, overhead, len(data)
        size += extra
    if start < len(encoded):
        batches.append(_batch(encoded[start:]))
    return batches


def _batch(items: list[bytes]) -> Batch:
    return Batch(body=_PREFIX + b",".join(items) + _SUFFIX, count=len(items))


class Progress:
    """Log long uploads in a few lines: at most one every 10 % or 30 s, and the total at the end."""

    def __init__(self, total: int, logger: logging.Logger, *, every_seconds: float = 30.0) -> None:
        self.total = total
        self.sent = 0
        self.log = logger
        self.started = time.monotonic()
        self._next_fraction = 0.1
        self._next_time = self.started + every_seconds
        self._every = every_seconds

    def update(self, count: int, requests_made: int) -> None:
        self.sent += count
        now = time.monotonic()
        if self.sent >= self.total:
            return
        if self.sent / max(self.total, 1) >= self._next_fraction or now >= self._next_time:
            self.log.info(
                "%s of %s measurements sent in %d requests.",
                f"{self.sent:,}",
                f"{self.total:,}",
                requests_made,
            )
            while self._next_fraction <= self.sent / max(self.total, 1):
                self._next_fraction += 0.1
            self._next_time = now + self._every

    def done(self, requests_made: int) -> None:
        elapsed = time.monotonic() - self.started
        self.log.info(
            "Sent %s measurements to m3ter in %d requests (%.1f s).", f"{self.sent:,}", requests_made, elapsed
        )
