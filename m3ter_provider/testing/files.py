"""Presigned-style file URLs (downloads and uploads) and export file rendering (CSV, JSONL)."""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .common import ApiError, parse_datetime

DOWNLOAD_TTL = 15 * 60
"""A presigned download URL is valid 15 minutes."""
UPLOAD_TTL = 60
"""A presigned measurements upload URL is valid one minute."""

CONTENT_TYPES = {"CSV": "text/csv", "JSONL": "application/x-ndjson", "JSON": "application/json"}

# The spec's OperationalDataType enum -> the emulator collection exported (None: no rows).
OPERATIONAL_DATA_TYPES: dict[str, str | None] = {
    "BILLS": "bills",
    "COMMITMENTS": "commitments",
    "ACCOUNTS": "accounts",
    "BALANCES": None,
    "CONTRACTS": "contracts",
    "ACCOUNT_PLANS": "accountplans",
    "AGGREGATIONS": "aggregations",
    "PLANS": "plans",
    "PRICING": "pricings",
    "PRICING_BANDS": None,
    "BILL_LINE_ITEMS": None,
    "METERS": "meters",
    "PRODUCTS": "products",
    "COMPOUND_AGGREGATIONS": "compoundaggregations",
    "PLAN_GROUPS": "plangroups",
    "PLAN_GROUP_LINKS": None,
    "PLAN_TEMPLATES": "plantemplates",
    "BALANCE_TRANSACTIONS": None,
    "TRANSACTION_TYPES": None,
    "CHARGES": None,
}


@dataclass
class StoredFile:
    """A file behind a presigned URL."""

    content: bytes
    content_type: str
    expires: float  # epoch seconds


@dataclass
class UploadSlot:
    """A presigned upload URL waiting for its PUT."""

    job_id: str
    content_type: str
    content_length: int
    expires: float


class PresignedUrls:
    """Random-token URLs under ``/_emulator/downloads/`` and ``/_emulator/uploads/``: no bearer needed."""

    def __init__(self) -> None:
        self.downloads: dict[str, StoredFile] = {}
        self.uploads: dict[str, UploadSlot] = {}

    def reset(self) -> None:
        """Forget every URL."""
        self.downloads.clear()
        self.uploads.clear()

    def publish(self, content: bytes, content_type: str, ttl: float = DOWNLOAD_TTL) -> tuple[str, datetime]:
        """Make ``content`` downloadable; return the URL path and its expiry time."""
        token = secrets.token_urlsafe(24)
        expires = time.time() + ttl
        self.downloads[token] = StoredFile(content, content_type, expires)
        return f"/_emulator/downloads/{token}", datetime.fromtimestamp(expires, timezone.utc)

    def fetch(self, token: str) -> StoredFile:
        """The file behind a download token; 404 unknown, 403 expired (as S3 answers)."""
        stored = self.downloads.get(token)
        if stored is None:
            raise ApiError(404, "The specified key does not exist")
        if time.time() >= stored.expires:
            raise ApiError(403, "Request has expired: the presigned URL is no longer valid")
        return stored

    def open_upload(self, job_id: str, content_type: str, content_length: int) -> str:
        """Reserve an upload URL path for a file upload job."""
        token = secrets.token_urlsafe(24)
        self.uploads[token] = UploadSlot(job_id, content_type, content_length, time.time() + UPLOAD_TTL)
        return f"/_emulator/uploads/{token}"

    def take_upload(self, token: str, body_length: int) -> UploadSlot:
        """Consume an upload URL: 404 unknown or used, 403 expired or length not as declared."""
        slot = self.uploads.get(token)
        if slot is None:
            raise ApiError(404, "The specified upload URL does not exist or was already used")
        if time.time() >= slot.expires:
            raise ApiError(403, "Request has expired: the presigned upload URL is valid one minute")
        if body_length != slot.content_length:
            raise ApiError(
                403,
                f"Content-Length {body_length} does not match the declared contentLength "
                f"{slot.content_length}",
            )
        del self.uploads[token]
        return slot


def render(rows: list[dict], file_format: str) -> bytes:
    """Rows as JSONL (one JSON object a line) or CSV (nested maps flattened to ``group.key``)."""
    if file_format == "JSONL":
        return "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode("utf-8")
    flat = [_flatten(row) for row in rows]
    columns: dict[str, None] = {}
    for row in flat:
        columns.update(dict.fromkeys(row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue().encode("utf-8")


def _flatten(row: dict) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = _cell(inner)
        else:
            flat[key] = _cell(value)
    return flat


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def usage_rows(
    measurements: list[dict],
    start: datetime,
    end: datetime,
    account_codes: set[str] | None,
    meter_codes: set[str] | None,
) -> list[dict]:
    """Measurements with ``start <= ts < end``, restricted to the given account and meter codes."""
    rows = []
    for item in measurements:
        ts = parse_datetime(item.get("ts"))
        if ts is None or not start <= ts < end:
            continue
        if account_codes is not None and item.get("account") not in account_codes:
            continue
        if meter_codes is not None and item.get("meter") not in meter_codes:
            continue
        rows.append(item)
    return rows
