"""Measurement ingest that bills exactly once, in flat memory (no Airflow import).

:func:`submit` validates every measurement against m3ter's schema and encodes it (msgspec, in C),
packs the JSON into request bodies spooled to a temporary file, and only then sends them: bad
input sends nothing, and memory stays flat however many measurements there are.

**Every measurement sent carries a uid**, and m3ter ingests a re-sent uid once within 35 days: that
is what makes retries and re-runs safe. A measurement without a ``uid`` gets one derived from the
``uid_namespace``, its canonical content (sorted keys, date-times in UTC, numbers as floats) and
its occurrence among identical rows in this input (see :mod:`.uids`), never from its position:
re-running with rows reordered or added re-sends the same uids for the rows already sent. Without
a namespace the call makes a random one of its own, so its own retries are safe but a second call
is not (give a namespace, e.g. the task instance's, to make re-runs safe).

**Corrections.** A row whose value changed is new content, so it gets a new uid and m3ter keeps
both the old and the new measurement. To correct usage already sent, send a compensating
measurement (the difference, or a negative value, as a new row) or fix it in m3ter itself;
re-sending the corrected row does not replace the old one.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any

from m3ter_provider.core._text import plural
from m3ter_provider.core.ingest.schema import (
    KNOWN_FIELDS,
    MAX_CODE_LENGTH,
    MAX_MEASUREMENTS_PER_REQUEST,
    MAX_REQUEST_BYTES,
    MAX_UID_LENGTH,
    NUMBER_MAPS,
    STRING_MAPS,
)
from m3ter_provider.core.ingest.sender import send_spool
from m3ter_provider.core.ingest.sources import MeasurementFile, Source, chunks_of, file_format_of
from m3ter_provider.core.ingest.spool import Spool
from m3ter_provider.core.ingest.uids import UidAssigner, random_namespace, uid_for
from m3ter_provider.core.limits import DEFAULT_INGEST_CONCURRENCY as DEFAULT_CONCURRENCY
from m3ter_provider.core.limits import (
    check_concurrency,
    check_max_requests_per_second,
    check_mode,
    check_wait,
)
from m3ter_provider.errors import M3terIngestError, M3terValidationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.ingest.failures import LogSink

__all__ = [
    "DEFAULT_CONCURRENCY",
    "KNOWN_FIELDS",
    "MAX_CODE_LENGTH",
    "MAX_MEASUREMENTS_PER_REQUEST",
    "MAX_REQUEST_BYTES",
    "MAX_UID_LENGTH",
    "NUMBER_MAPS",
    "STRING_MAPS",
    "M3terIngestError",
    "MeasurementFile",
    "Source",
    "Spool",
    "check_concurrency",
    "file_format_of",
    "spool_measurements",
    "submit",
    "uid_for",
]

log = logging.getLogger(__name__)

#: chunks (of up to 1,000 rows) spooled between two collections of the young GC generations
GC_EVERY_CHUNKS = 50


def spool_measurements(
    measurements: Iterable[Mapping[str, Any]] | Any,
    *,
    uid_namespace: str,
    max_items: int = MAX_MEASUREMENTS_PER_REQUEST,
    max_bytes: int = MAX_REQUEST_BYTES,
    logger: LogSink | None = None,
) -> Spool:
    """Validate, give uids, encode and pack every measurement into a :class:`Spool` (nothing sent).

    :raises M3terValidationError: on the first bad measurement (naming its row and field), one too
        large to send alone, or a uid the caller gave to two measurements of different content.
    """
    spool = Spool(max_items=max_items, max_bytes=max_bytes)
    collecting = gc.isenabled()
    # the pass makes and drops ~10 container objects a row (the input dicts, the structs' maps):
    # automatic collections would walk them again and again; collect the young generations every
    # GC_EVERY_CHUNKS chunks instead, so garbage cycles a caller's generator makes stay bounded
    gc.disable()
    try:
        assigner = UidAssigner(uid_namespace)
        for number, (structs, label) in enumerate(chunks_of(measurements), 1):
            spool.add(assigner.encode(structs, label), label)
            if number % GC_EVERY_CHUNKS == 0:
                gc.collect(1)
        spool.finish()
        if assigner.repeated_given:
            (logger or log).warning(
                "%s repeated the uid and the content of an earlier measurement of this input: "
                "m3ter stores each such measurement once (as its uid says).",
                plural(assigner.repeated_given, "measurement"),
            )
    except BaseException:
        spool.close()
        raise
    finally:
        if collecting:
            gc.enable()
    return spool


def submit(
    client: M3terClient,
    measurements: Iterable[Mapping[str, Any]] | Any,
    *,
    uid_namespace: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    max_items: int = MAX_MEASUREMENTS_PER_REQUEST,
    max_bytes: int = MAX_REQUEST_BYTES,
    after_send: Callable[[Spool], Mapping[str, Any]] | None = None,
    check_ingest_failures: str = "off",
    ingest_failures_wait: float = 60.0,
    logger: LogSink | None = None,
    max_requests_per_second: float | None = None,
) -> dict[str, Any]:
    """Validate and spool every measurement, then post the bodies, ``concurrency`` at a time.

    :param client: an :class:`~m3ter_provider.core.client.M3terClient` (its ``url`` and ``send``).
    :param measurements: an iterable of dicts (a list, a generator), or a JSON Lines or CSV file
        (a ``pathlib.Path``, an ``ObjectStoragePath`` or a :class:`MeasurementFile`); read lazily.
    :param uid_namespace: fixes the derived uids (see the module doc); default: a random one.
    :param concurrency: requests in flight at once, 1 to 10.
    :param after_send: called with the spool once every body was accepted, before the spool is
        deleted (e.g. to match ingest failure Events to this submission's uids); what it returns
        joins the summary.
    :param check_ingest_failures: ``"off"``, ``"warn"`` or ``"fail"``: read m3ter's
        ``ingest.validation.failure`` Events for this submission's uids once it is sent (see
        :func:`m3ter_provider.core.ingest.failures.check_ingest_failures`).
    :param ingest_failures_wait: seconds to keep reading them.
    :param logger: where progress and the check's findings go (default: this module's logger).
    :param max_requests_per_second: this submission's most ingest requests per second; lowers, never
        raises, the machine's share of the connection's ``ingest_rate`` (see :mod:`.pace`).
    :return: ``{"measurements": n, "requests": k, "bytes": b, "rejected": r, "duplicates": d,
        "rejections": [...]}`` (``rejected`` and ``duplicates`` None when not checked).
    :raises M3terValidationError: bad input; nothing was sent.
    :raises M3terIngestError: a request failed, or anything else did while sending; it says how
        many measurements m3ter accepted and the namespace to resume with.
    """
    from m3ter_provider.core.ingest import failures

    check_concurrency(concurrency)
    max_rate = check_max_requests_per_second(max_requests_per_second)
    mode = check_mode(check_ingest_failures)
    wait = check_wait(ingest_failures_wait)
    logger = logger or log
    if uid_namespace is not None and (not isinstance(uid_namespace, str) or not uid_namespace):
        raise M3terValidationError("uid_namespace must be a non-empty string (or None).")
    namespace = uid_namespace if uid_namespace is not None else random_namespace()
    check = failures.spool_checker(client, mode=mode, wait=wait, logger=logger)
    with spool_measurements(
        measurements, uid_namespace=namespace, max_items=max_items, max_bytes=max_bytes, logger=logger
    ) as spool:
        logger.info(
            "Validated %s into %s; sending.",
            plural(spool.measurements, "measurement"),
            plural(len(spool), "request body", "request bodies"),
        )
        summary = send_spool(
            client,
            spool,
            concurrency=concurrency,
            uid_namespace=namespace,
            log=logger,
            max_requests_per_second=max_rate,
        )
        if after_send is not None:
            summary.update(after_send(spool))
        summary.update(check(spool))
        return summary
