"""How many measurement batches may be in flight at once, and checking a given number.

Cheap to import (no Airflow, no HTTP stack): the submit operator checks ``concurrency`` when a DAG
file is parsed, before anything of the ingest machinery is loaded.
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
