"""The light limits operators check when a DAG file is parsed: ingest concurrency, ingest-failure checks.

Cheap to import (no Airflow, no HTTP stack): the submit operator checks ``concurrency`` when a DAG
file is parsed, before anything of the ingest machinery is loaded; the same for ``check_ingest_failures`` and
``ingest_failures_wait``.
"""

from __future__ import annotations

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
