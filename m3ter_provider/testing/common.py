"""Small shared pieces of the emulator: the API error, ids, timestamps, code rules."""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import date, datetime, timezone

_DATE_TIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ApiError(Exception):
    """An error answered to the client as ``{"message": ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def new_id() -> str:
    """A fresh entity id (uuid4, as m3ter uses)."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """Format like m3ter does: ``2022-10-28T13:54:48.081781Z``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_datetime(value: object) -> datetime | None:
    """Parse an RFC 3339 date-time (offset required); None when ``value`` is not one."""
    if not isinstance(value, str):
        return None
    match = _DATE_TIME.match(value)
    if not match:
        return None
    text = value.upper().replace("Z", "+00:00")
    fraction = match.group(7)
    if fraction:  # fromisoformat (3.10) accepts only 3 or 6 fraction digits
        text = text.replace(fraction, "." + (fraction[1:] + "000000")[:6], 1)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def parse_date(value: object) -> date | None:
    """Parse an ISO ``YYYY-MM-DD`` date; None when ``value`` is not one."""
    if not isinstance(value, str) or not _DATE.match(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def code_problem(value: object, max_length: int = 80) -> str | None:
    """Why ``value`` is not a valid m3ter code (account/meter/entity code), or None.

    m3ter's pattern: no control characters, no whitespace other than interior spaces.
    """
    if not isinstance(value, str):
        return "must be a string"
    if not value:
        return "must not be empty"
    if len(value) > max_length:
        return f"must be at most {max_length} characters"
    for char in value:
        if unicodedata.category(char) == "Cc" or (char.isspace() and char != " "):
            return "must not contain control or whitespace characters"
    if value[0] == " " or value[-1] == " ":
        return "must not start or end with a space"
    return None
