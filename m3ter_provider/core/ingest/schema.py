"""m3ter's measurement schema as a msgspec struct, validated and encoded in C.

msgspec is imported on first use (:func:`measurement_type`), never when an operator module is
imported. Errors are translated into messages that name the row, the field and the fix.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
import re
from typing import TYPE_CHECKING, Any

from m3ter_provider.errors import M3terValidationError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MAX_MEASUREMENTS_PER_REQUEST = 1000
#: m3ter's limit is "under 512,000 bytes"
MAX_REQUEST_BYTES = 512_000
MAX_CODE_LENGTH = 80
MAX_UID_LENGTH = 50

REQUIRED_FIELDS = ("account", "meter", "ts")
STRING_MAPS = ("who", "where", "what", "other", "metadata")
NUMBER_MAPS = ("measure", "cost", "income")
KNOWN_FIELDS = (*REQUIRED_FIELDS, "uid", "ets", *STRING_MAPS, *NUMBER_MAPS)

#: m3ter's code pattern: no control characters, no white space but interior spaces
_CODE_CHAR = r"[^\s\x00-\x1f\x7f-\x9f]"
CODE_PATTERN = re.compile(rf"\A{_CODE_CHAR}(?:(?:{_CODE_CHAR}| )*{_CODE_CHAR})?\Z")
_LARGEST = 1.7976931348623157e308

_FIXES = {
    "account": "give the m3ter Account code: a non-empty string of at most 80 characters, without "
    "leading/trailing white space or control characters",
    "meter": "give the m3ter Meter code: a non-empty string of at most 80 characters, without "
    "leading/trailing white space or control characters",
    "ts": "give the usage time as an RFC 3339 date-time with a UTC offset, e.g. '2026-01-31T12:00:00Z', "
    "or a timezone-aware datetime",
    "ets": "give the end time as an RFC 3339 date-time with a UTC offset, e.g. '2026-01-31T13:00:00Z', "
    "or leave it out",
    "uid": f"give a non-empty string of at most {MAX_UID_LENGTH} characters, or leave 'uid' out and "
    "let the provider derive one",
    **{name: "m3ter takes a dict of string keys to finite numbers there" for name in NUMBER_MAPS},
    **{name: "m3ter takes a dict of string keys to strings there" for name in STRING_MAPS},
}


@functools.cache
def measurement_type() -> Any:
    """The msgspec ``Measurement`` struct (built on first use, so msgspec loads only then)."""
    from typing import Annotated

    import msgspec
    from msgspec import UNSET, Meta, UnsetType

    code = Annotated[str, Meta(min_length=1, max_length=MAX_CODE_LENGTH)]
    when = Annotated[dt.datetime, Meta(tz=True)]
    number = Annotated[float, Meta(ge=-_LARGEST, le=_LARGEST)]  # refuses NaN and infinities
    uid = Annotated[str, Meta(min_length=1, max_length=MAX_UID_LENGTH)]
    fields: list[Any] = [("account", code), ("meter", code), ("ts", when), ("ets", when | None, None)]
    fields += [(name, dict[str, str] | None, None) for name in STRING_MAPS]
    fields += [(name, dict[str, number] | None, None) for name in NUMBER_MAPS]
    fields.append(("uid", uid | UnsetType, UNSET))
    # one measurement as m3ter's ingest API takes it (``MeasurementRequest`` in its spec); gc=False:
    # it holds no cycles, and tracking a million of them costs more than validating them
    Measurement = msgspec.defstruct(
        "Measurement", fields, forbid_unknown_fields=True, omit_defaults=True, gc=False
    )
    return Measurement


@functools.cache
def _codecs() -> tuple[Any, Any, Any]:
    import msgspec

    kind = measurement_type()
    #: sorted map keys: the encoding is canonical (the same content gives the same bytes)
    encoder = msgspec.json.Encoder(order="deterministic")
    return kind, encoder, msgspec.json.Decoder(kind)


def encoder() -> Any:
    return _codecs()[1]


def line_decoder() -> Any:
    return _codecs()[2]


_PATH = re.compile(r" - at `\$(?:\[(\d+)\])?\.?([A-Za-z_]*)")
_KEY_IN = re.compile(r"at `key` in `\$(?:\[(\d+)\])?\.?([A-Za-z_]*)")
_UNKNOWN = re.compile(r"unknown field `([^`]*)`")
_MISSING = re.compile(r"missing required field `([^`]*)`")


def explain(
    error: Exception, label: Callable[[int], str], rows: Sequence[Any] = (), index: int = 0
) -> M3terValidationError:
    """An msgspec error as a :class:`M3terValidationError` naming the row, the field and the fix.

    :param label: names the row at an index ("measurement #7", "usage.jsonl line 8").
    :param rows: the raw rows when the error came from converting a list of them (its ``$[i]``
        picks the row), to quote the bad value.
    :param index: the row's index when the error came from one row.
    """
    text = str(error)
    top = re.search(r"`\$\[(\d+)\]", text)
    if top:
        index = int(top.group(1))
    row = rows[index] if index < len(rows) else None
    where = label(index)
    match = _KEY_IN.search(text) or _PATH.search(text)
    field = match.group(2) if match else ""
    detail = text.split(" - at ")[0]
    if unknown := _UNKNOWN.search(text):
        return M3terValidationError(
            f"{where}: unknown field {unknown.group(1)!r}; m3ter takes {', '.join(KNOWN_FIELDS)}."
        )
    if missing := _MISSING.search(text):
        name = missing.group(1)
        return M3terValidationError(f"{where}: {name!r} is required: {_FIXES.get(name, 'add it')}.")
    if not field:
        return M3terValidationError(f"{where}: {detail}; each measurement must be a dict (a JSON object).")
    value = row.get(field) if isinstance(row, dict) else None
    if field in ("account", "meter") and isinstance(value, str) and len(value) > MAX_CODE_LENGTH:
        detail = f"{len(value)} characters long; m3ter allows at most {MAX_CODE_LENGTH}"
    elif field in ("ts", "ets") and "timezone" in detail:
        detail = f"{value!r} has no UTC offset" if value is not None else "has no UTC offset"
    elif field in ("ts", "ets"):
        detail = f"{value!r} is not an RFC 3339 date-time with a UTC offset ({detail})"
    elif match is not None and match.re is _KEY_IN:
        detail = f"has a non-string key ({detail})"
    elif isinstance(value, dict) and (bad := _bad_entry(value, numbers=field in NUMBER_MAPS)):
        detail = f"{field}[{bad[0]!r}] is {bad[1]!r}"
    elif value is not None and field not in (*STRING_MAPS, *NUMBER_MAPS):
        detail = f"{value!r}: {detail}"
    return M3terValidationError(f"{where}: {field!r} is invalid: {detail}; {_FIXES.get(field, 'fix it')}.")


def check_codes(rows: Sequence[Any], label: Callable[[int], str]) -> None:
    """m3ter's code pattern, checked once per distinct code in the chunk (codes repeat a lot)."""
    for field in ("account", "meter"):
        codes = list(map(operator.attrgetter(field), rows))
        bad = {code for code in set(codes) if not CODE_PATTERN.match(code)}
        if bad:
            index = next(i for i, code in enumerate(codes) if code in bad)
            raise M3terValidationError(
                f"{label(index)}: {field!r} {codes[index]!r} has leading/trailing white space or control "
                f"characters; {_FIXES[field]}."
            )


def _bad_entry(mapping: dict[Any, Any], *, numbers: bool) -> tuple[Any, Any] | None:
    """The first entry of a map m3ter would refuse, to quote it."""
    for key, item in mapping.items():
        if numbers:
            good = isinstance(item, (int, float)) and not isinstance(item, bool) and abs(item) <= _LARGEST
        else:
            good = isinstance(item, str)
        if not good:
            return key, item
    return None
