"""Large results to a file, not to XCom: JSON Lines streamed to a path or an ``ObjectStoragePath``.

A list answer (every page of a list endpoint, a usage query, a sync's changes) can be any size;
Airflow keeps XCom in its metadata database. :func:`write_json_lines` streams items to a file one
line each (never holding more than one buffer of them) and returns what XCom should carry: the
path and the counts. :func:`warn_if_large` tells a task author when a result pushed to XCom is big.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger(__name__)

#: a result pushed to XCom above this many bytes of JSON draws a warning (Airflow stores XCom in its
#: metadata database; 100 KB is far above a summary and far below what hurts a database row)
XCOM_WARN_BYTES = 100_000
#: bytes of lines gathered before each write
WRITE_BUFFER_BYTES = 1 << 20


def write_json_lines(items: Iterable[Any], destination: Any) -> dict[str, Any]:
    """Stream ``items`` to ``destination`` as JSON Lines (UTF-8, one compact JSON value a line).

    The file is written under a temporary name beside the destination and renamed onto it once
    complete: a failure part-way leaves the previous file (or none) in place.

    :param items: any iterable of JSON-serialisable values (a generator is read once, lazily).
    :param destination: a local path or an ``ObjectStoragePath``.
    :return: ``{"path": str, "items": n, "bytes": b}``.
    :raises TypeError: an item is not JSON-serialisable (the message says which, by position).
    """
    from m3ter_provider.core.download import _Target  # the same atomic write as downloads

    target = _Target(destination)
    count = size = 0
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    try:
        with target.open_temporary() as handle:
            buffer: list[bytes] = []
            buffered = 0
            for count, item in enumerate(items, 1):
                try:
                    line = (dumps(item) + "\n").encode()
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"item #{count - 1} is not JSON-serialisable: {exc}") from None
                buffer.append(line)
                buffered += len(line)
                if buffered >= WRITE_BUFFER_BYTES:
                    handle.write(b"".join(buffer))
                    size += buffered
                    buffer, buffered = [], 0
            if buffer:
                handle.write(b"".join(buffer))
                size += buffered
        target.commit()
    except BaseException:
        target.discard()
        raise
    return {"path": str(destination), "items": count, "bytes": size}


def json_size(value: Any) -> int | None:
    """Bytes of ``value`` as JSON (None when it is not JSON-serialisable)."""
    try:
        return len(json.dumps(value, separators=(",", ":")).encode())
    except (TypeError, ValueError):
        return None


def warn_if_large(value: Any, what: str, logger: logging.Logger | Any = log, fix: str = "") -> int | None:
    """Log a warning when ``value`` as JSON is over :data:`XCOM_WARN_BYTES`; return its size.

    :param value: the result about to be pushed to XCom.
    :param what: what it is, for the message (``"the result of GET accounts"``).
    :param fix: how to avoid it (e.g. ``"give output_path to write it to a file"``).
    """
    size = json_size(value)
    if size is not None and size > XCOM_WARN_BYTES:
        logger.warning(
            "%s is %s bytes of JSON, pushed to XCom (kept in Airflow's metadata database; warning above "
            "%s bytes)%s",
            what[:1].upper() + what[1:],
            f"{size:,}",
            f"{XCOM_WARN_BYTES:,}",
            f": {fix}." if fix else ".",
        )
    return size
