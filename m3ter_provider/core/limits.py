"""The light limits operators check when a DAG file is parsed: ingest concurrency, ingest-failure checks.

Cheap to import (no Airflow, no HTTP stack): the submit operator checks ``concurrency`` when a DAG
file is parsed, before anything of the ingest machinery is loaded; the same for ``check_ingest_failures`` and
``ingest_failures_wait``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from m3ter_provider.errors import M3terConfigError

#: measurement batches in flight at once by default
DEFAULT_INGEST_CONCURRENCY = 4
#: the most batches in flight at once
MAX_INGEST_CONCURRENCY = 10


def check_concurrency(concurrency: Any) -> int:
    """``concurrency`` itself when it is a whole number from 1 to :data:`MAX_INGEST_CONCURRENCY`.

    :raises M3terConfigError: anything else (a bool, a float, a string, out of range).
    """
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= MAX_INGEST_CONCURRENCY
    ):
        raise M3terConfigError(
            f"concurrency {concurrency!r}: give a whole number from 1 to {MAX_INGEST_CONCURRENCY}."
        )
    return concurrency


#: what ``check_ingest_failures`` takes
MODES = ("off", "warn", "fail")
#: the longest ``ingest_failures_wait``, in seconds
MAX_WAIT = 3600.0


def check_wait(wait: object) -> float:
    """``wait`` as seconds when it is a finite number from 0 to :data:`MAX_WAIT`; else a clear error."""
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT:
        raise M3terConfigError(
            f"ingest_failures_wait {wait!r}: give the seconds to wait for m3ter's validation, "
            f"a finite number from 0 to {MAX_WAIT:g}."
        )
    return float(wait)


def check_mode(mode: object) -> str:
    """``mode`` when it is one of off/warn/fail; else a clear error."""
    if mode not in MODES:
        raise M3terConfigError(f"check_ingest_failures {mode!r}: give one of {', '.join(MODES)}.")
    return str(mode)


#: measurement file formats a submit or split reads, with the other names they go by
FILE_FORMAT_ALIASES = {
    "jsonl": "jsonl",
    "ndjson": "jsonl",
    "jsonlines": "jsonl",
    "csv": "csv",
    "parquet": "parquet",
    "pq": "parquet",
}


def check_file_format(file_format: object) -> str | None:
    """``"jsonl"``, ``"csv"`` or ``"parquet"`` for a known ``file_format`` (any case, ``.jsonl``,
    ``ndjson``, ``pq``...);
    ``None`` stays ``None`` (the format is then taken from the file's suffix); else a clear error."""
    if file_format is None:
        return None
    fmt = file_format.lower().lstrip(".") if isinstance(file_format, str) else None
    if fmt not in FILE_FORMAT_ALIASES:
        raise M3terConfigError(
            f"file_format {file_format!r}: use 'jsonl', 'csv' or 'parquet' (needs pyarrow), or leave it "
            "out to go by the file's suffix."
        )
    return FILE_FORMAT_ALIASES[fmt]


#: the shortest wait between two polls of a job, in seconds: 0 would poll m3ter ~1,000 times a second
MIN_POLL_INTERVAL = 0.01


def _seconds(value: object) -> float | None:
    """A finite number of seconds from an int, a float or a ``timedelta``; None for anything else."""

    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) else None


def check_poll_interval(poll_interval: object, name: str = "poll_interval") -> float:
    """``poll_interval`` as seconds when it is a finite number (or ``timedelta``) of at least
    :data:`MIN_POLL_INTERVAL`; else a clear error naming ``name``.

    The one check of every wait between two polls (hook, operators, sensor, trigger).
    """
    seconds = _seconds(poll_interval)
    if seconds is None or seconds < MIN_POLL_INTERVAL:
        raise M3terConfigError(
            f"{name} {poll_interval!r}: give the seconds to wait between two polls of the job, a finite "
            f"number of at least {MIN_POLL_INTERVAL:g} (default 10; m3ter allows 50 requests/s per "
            "Organization, shared by every caller)."
        )
    return seconds


def check_timeout(timeout: object, name: str = "timeout") -> float | None:
    """``timeout`` as seconds when it is a finite positive number (or ``timedelta``); None stays None
    (no limit); else a clear error naming ``name``."""
    if timeout is None:
        return None
    seconds = _seconds(timeout)
    if seconds is None or seconds <= 0:
        raise M3terConfigError(
            f"{name} {timeout!r}: give the most seconds to wait, a finite number above 0, "
            "or None for no limit."
        )
    return seconds


#: export file formats m3ter's ad-hoc data exports write (``exportFileFormat``)
EXPORT_FILE_FORMATS = ("CSV", "JSONL")


def check_export_file_format(export_file_format: object) -> str:
    """``"CSV"`` or ``"JSONL"`` (any case); else a clear error."""
    fmt = export_file_format.strip().upper() if isinstance(export_file_format, str) else None
    if fmt not in EXPORT_FILE_FORMATS:
        raise M3terConfigError(f"export_file_format {export_file_format!r}: use 'CSV' or 'JSONL'.")
    return fmt


def check_page_size(page_size: object, maximum: int | None = None, path: str = "") -> int | None:
    """``page_size`` when it is a whole number from 1 to ``maximum`` (the endpoint's largest
    ``pageSize`` in m3ter's spec, when known); None stays None (the endpoint's maximum is used)."""
    if page_size is None:
        return None
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
        raise M3terConfigError(
            f"page_size {page_size!r}: give a whole number of items per page of at least 1, or leave it "
            "out to get the endpoint's largest page."
        )
    if maximum is not None and page_size > maximum:
        raise M3terConfigError(
            f"page_size {page_size} is over the largest pageSize m3ter allows for {path or 'this endpoint'} "
            f"({maximum}): give at most {maximum}, or leave it out."
        )
    return page_size


#: the most slices one split by content makes: each is an open file while splitting (a process may
#: open 1,024 files by default), and a pool of a few slots is what bounds ingest anyway
MAX_SLICES = 256


def check_slice_count(slice_count: Any) -> int:
    """``slice_count`` when it is a whole number from 1 to :data:`MAX_SLICES`; else a clear error."""
    if (
        isinstance(slice_count, bool)
        or not isinstance(slice_count, int)
        or not 1 <= slice_count <= MAX_SLICES
    ):
        raise M3terConfigError(
            f"slice_count {slice_count!r}: give a whole number of slices from 1 to {MAX_SLICES} (rows go "
            "to slices by content; the uids do not depend on the count)."
        )
    return slice_count


#: m3ter's ingest limits: requests a second per Organization, and requests per rolling window per
#: source IP (5,000 per 5 minutes, 16.7 a second sustained)
ORG_INGEST_PER_SECOND = 50
IP_INGEST_REQUESTS = 5_000
IP_INGEST_WINDOW_SECONDS = 300.0
#: the Organization-wide ingest requests/s a deployment paces under by default: m3ter's 50 less
#: headroom for other callers (connection extra ``ingest_rate``)
DEFAULT_INGEST_RATE = 45.0
#: machines sending ingest for one Organization at once (connection extra ``ingest_machines``)
DEFAULT_INGEST_MACHINES = 1


def _positive_number(value: object) -> float | None:
    """A finite number above 0 from a number or a numeric string (a rendered template); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def check_max_requests_per_second(value: object) -> float | None:
    """``max_requests_per_second`` as a number above 0 (a numeric string, as a template renders,
    counts); None stays None (the machine's share of the connection's ``ingest_rate``)."""
    if value is None:
        return None
    number = _positive_number(value)
    if number is None:
        raise M3terConfigError(
            f"max_requests_per_second {value!r}: give this task's most ingest requests per second, a "
            "number above 0 (it lowers, never raises, the machine's share of the connection's "
            "ingest_rate), or leave it out."
        )
    return number


def parse_ingest_rate(value: object) -> float | None:
    """The ``ingest_rate`` extra: a number above 0; ``0``, ``"0"`` and ``"off"`` give 0.0 (no pacing);
    None (absent) gives the default. Anything else: None (the caller names the field)."""
    if value is None:
        return DEFAULT_INGEST_RATE
    if isinstance(value, str) and value.strip().lower() in ("off", "0", "0.0", "none", "false"):
        return 0.0
    if not isinstance(value, bool) and value == 0:
        return 0.0
    return _positive_number(value)


def parse_ingest_machines(value: object) -> int | None:
    """The ``ingest_machines`` extra: a whole number from 1 (None, absent, gives the default);
    anything else: None (the caller names the field)."""
    if value is None:
        return DEFAULT_INGEST_MACHINES
    number = _positive_number(value)
    if number is None or number != int(number):
        return None
    return int(number)


def is_template(value: object) -> bool:
    """A string holding a Jinja expression: an operator checks it once rendered, when the task runs."""
    return isinstance(value, str) and "{{" in value
