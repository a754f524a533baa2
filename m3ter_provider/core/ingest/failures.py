"""Measurements m3ter accepted (HTTP 200) and then refused: ``ingest.validation.failure`` Events.

m3ter validates measurements a second time, asynchronously, after answering ``{"result":
"accepted"}``: one for an unknown Meter, an Account code that only nearly matches an existing one, a
missing Data Field... is not ingested, and m3ter records an ``ingest.validation.failure`` Event for it
(``GET /events?eventName=...``) with a file detailing what went wrong
(``GET /measurements/failedIngest/getDownloadUrl?file=...``). A pipeline that only checks HTTP
statuses loses that usage silently; :func:`read_ingest_failures` reads it back and
:func:`check_ingest_failures` turns it into a warning or a task failure.

Framework-free: what reads the Events is an :class:`EventSource` (``paginate``, ``get``,
``download``): the hook is one, and :class:`ClientEvents` makes one of a core client.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

from m3ter_provider.core._text import plural
from m3ter_provider.core.events import ListingOrder
from m3ter_provider.core.limits import check_mode, check_wait
from m3ter_provider.errors import M3terError, M3terIngestCheckError, M3terIngestRejectedError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator, Mapping

    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.ingest.spool import Spool

EVENT_NAME = "ingest.validation.failure"
DUPLICATE_UID = "DuplicateUid"
"""A re-sent uid: m3ter ingested that measurement before, so it is not lost (not counted as rejected)."""
REASONS_SHOWN = 5
MAX_EVENTS_SCANNED = 10_000
CLOCK_SKEW = timedelta(minutes=2)
"""Events are read from this long before the window start (clocks differ; m3ter stamps the Event)."""
_TYPE_KEYS = ("errorType", "type", "errorCode", "code")
_MESSAGE_KEYS = ("errorMessage", "message", "error", "reason", "description")

log = logging.getLogger(__name__)


class EventSource(Protocol):
    """What reading ingest failures calls: list a path, read one, download a presigned URL."""

    def paginate(
        self, path: str, *, params: Mapping[str, Any] | None = None, page_size: int | None = None
    ) -> Iterator[Any]: ...

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any: ...

    def download(self, url: str, destination: Any) -> Any: ...


class ClientEvents:
    """An :class:`EventSource` over a core :class:`~m3ter_provider.core.client.M3terClient`."""

    def __init__(self, client: M3terClient) -> None:
        self.client = client

    def paginate(
        self, path: str, *, params: Mapping[str, Any] | None = None, page_size: int | None = None
    ) -> Iterator[Any]:
        return self.client.paginate(path, params=params, page_size=page_size)

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        return self.client.request("GET", path, params=params)

    def download(self, url: str, destination: Any) -> Any:
        from m3ter_provider.core.download import download

        return download(self.client, url, destination)


class LogSink(Protocol):
    """Where the check reports: a ``logging.Logger``, or the task's logger (Airflow 3's is not one)."""

    def info(self, msg: str, /, *args: Any) -> Any:
        """Log at INFO."""

    def warning(self, msg: str, /, *args: Any) -> Any:
        """Log at WARNING."""


@dataclass(frozen=True)
class IngestFailure:
    """One measurement m3ter refused after accepting it."""

    event_id: str
    event_time: str
    error_type: str | None
    message: str | None
    uid: str | None
    account: str | None
    meter: str | None
    file: str | None

    @property
    def rejected(self) -> bool:
        """True unless m3ter refused it only as a re-sent uid (ingested before, so not lost)."""
        return self.error_type != DUPLICATE_UID

    def reason(self) -> str:
        """``"<uid>: <errorType>: <message>"`` for logs and error messages."""
        parts = [p for p in (self.error_type, self.message) if p]
        return f"{self.uid or '(no uid)'}: {': '.join(parts) or 'refused'}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for XCom)."""
        return asdict(self)


def read_ingest_failures(
    hook: EventSource,
    *,
    start: datetime,
    end: datetime | None = None,
    uids: Iterable[str] | Spool | None = None,
    fetch_details: bool = True,
    max_events: int = MAX_EVENTS_SCANNED,
) -> list[IngestFailure]:
    """The ``ingest.validation.failure`` Events m3ter recorded between ``start`` and ``end``.

    :param start: the window start (aware datetime; naive means UTC), e.g. just before a submission.
    :param end: the window end (default: no end).
    :param uids: keep only failures of these measurement uids (those of one submission): a
        collection, or the submission's spool (see :meth:`m3ter_provider.core.ingest.Spool.uids_among`).
    :param fetch_details: when an Event does not itself name the measurement's uid or the reason,
        download its failed-ingest file (a presigned URL, fetched without the bearer token) to read them.
    :param max_events: stop after scanning this many Events (a listing proven newest first stops at
        the first Event before ``start``; see :class:`~m3ter_provider.core.events.ListingOrder`).
    """
    start = _aware(start)
    end = _aware(end) if end is not None else None
    select = _selector(uids)
    found: list[IngestFailure] = []
    order = ListingOrder()
    for scanned, event in enumerate(hook.paginate("events", params={"eventName": EVENT_NAME}, page_size=100)):
        if scanned >= max_events:
            log.warning("Stopped after scanning %d ingest failure Events (max_events).", max_events)
            break
        moment = _parse_time(event.get("eventTime"))
        if moment is not None:
            order.see(moment)
        if moment is not None and moment < start - CLOCK_SKEW:
            if order.newest_first:
                break  # proven newest first: every later Event is older still
            continue
        if moment is not None and end is not None and moment > end:
            continue
        failure = _failure(event)
        if fetch_details and (failure.uid is None or failure.error_type is None):
            failure = _with_details(hook, failure)
        found.append(failure)
    if select is None:
        return found
    ours = select({failure.uid for failure in found if failure.uid})
    return [failure for failure in found if failure.uid in ours]


def _selector(uids: Any) -> Callable[[set[str]], set[str]] | None:
    """Picks a submission's uids out of candidates: from a collection of uids, or from a spool of
    the encoded measurements (``uids_among``: streamed, so 1M uids are never held in memory)."""
    if uids is None:
        return None
    if hasattr(uids, "uids_among"):
        among: Callable[[set[str]], set[str]] = uids.uids_among
        return among
    wanted = set(uids)
    return lambda candidates: candidates & wanted


def _count(uids: Any) -> int | None:
    """How many measurements ``uids`` stands for."""
    if uids is None:
        return None
    return int(uids.measurements) if hasattr(uids, "uids_among") else len(uids)


def spool_checker(
    client: M3terClient, *, mode: str, wait: float, logger: LogSink | None = None
) -> Callable[[Spool], dict[str, Any]]:
    """What checks one submission's ingest failures once it is sent: called with its spool (which
    holds every uid sent, so no uid list is kept in memory); the window starts now."""
    started = datetime.now(timezone.utc)

    def check(spool: Spool) -> dict[str, Any]:
        return check_ingest_failures(
            ClientEvents(client), uids=spool, start=started, mode=mode, wait=wait, logger=logger
        )

    return check


def check_ingest_failures(
    hook: EventSource,
    *,
    uids: Collection[str] | Spool | None,
    start: datetime,
    mode: str = "warn",
    wait: float = 0.0,
    poll_interval: float = 10.0,
    logger: LogSink | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """After a submission, read the failures of its ``uids`` and warn or fail as ``mode`` says.

    m3ter validates asynchronously: failures are read again every ``poll_interval`` seconds until
    ``wait`` seconds have passed (in ``"fail"`` mode the first read that finds one ends the wait).

    :param uids: the uids the submission sent (None: every failure in the window counts).
    :param mode: ``"off"`` (read nothing), ``"warn"`` (log the count and the first reasons) or
        ``"fail"`` (raise :class:`M3terIngestRejectedError` with them).
    :return: ``{"rejected": n, "duplicates": d, "rejections": [first few as dicts]}``
        (``{"rejected": None, ...}`` when ``mode`` is ``"off"``).
    """
    check_mode(mode)
    wait = check_wait(wait)
    logger = logger or log
    not_checked: dict[str, Any] = {"rejected": None, "duplicates": None, "rejections": []}
    if mode == "off":
        return not_checked
    deadline = clock() + wait
    failures: list[IngestFailure] | None = None
    while True:
        try:
            failures = read_ingest_failures(hook, start=start, uids=uids)
        except M3terError as exc:
            # the measurements are sent: a check that cannot read the Events must not hide that
            message = (
                "The measurements were sent (m3ter answered 200), but the check for ingest validation "
                f"failures could not read m3ter's Events: {exc} (the Service User needs permission "
                "to read Events)."
            )
            if mode == "fail":
                raise M3terIngestCheckError(message) from None
            if failures is None:
                logger.warning("%s Not checked.", message)
                return not_checked
            logger.warning("%s Reporting the last successful read.", message)
            break
        rejected = [f for f in failures if f.rejected]
        remaining = deadline - clock()
        if remaining <= 0 or (rejected and mode == "fail"):
            break
        sleep(min(poll_interval, remaining))
    rejected = [f for f in failures if f.rejected]
    summary = {
        "rejected": len(rejected),
        "duplicates": len(failures) - len(rejected),
        "rejections": [f.as_dict() for f in rejected[:REASONS_SHOWN]],
    }
    if rejected:
        message = describe(rejected, _count(uids))
        if mode == "fail":
            raise M3terIngestRejectedError(message)
        logger.warning("%s", message)
    else:
        logger.info("m3ter reported no ingest validation failures for this submission.")
    return summary


def describe(rejected: list[IngestFailure], sent: int | None) -> str:
    """A message with the count and the first few reasons."""
    count = (
        f"{len(rejected):,} of {plural(sent, 'measurement')}"
        if sent is not None
        else plural(len(rejected), "measurement")
    )
    reasons = "; ".join(f.reason() for f in rejected[:REASONS_SHOWN])
    more = f" (and {len(rejected) - REASONS_SHOWN} more)" if len(rejected) > REASONS_SHOWN else ""
    return (
        f"m3ter accepted and then rejected {count} (ingest.validation.failure "
        f"Events; they will not be billed): {reasons}{more}. Fix the measurements (or create the missing "
        f"Meters/Accounts) and submit them again."
    )


# -- reading one Event ---------------------------------------------------------------------------
def _failure(event: Mapping[str, Any]) -> IngestFailure:
    data = _event_data(event)
    return IngestFailure(
        event_id=str(event.get("id", "")),
        event_time=str(event.get("eventTime", "")),
        error_type=_first(data, _TYPE_KEYS),
        message=_first(data, _MESSAGE_KEYS),
        uid=_first(data, ("uid",)),
        account=_first(data, ("account", "accountCode")),
        meter=_first(data, ("meter", "meterCode")),
        file=_file(data),
    )


def _event_data(event: Mapping[str, Any]) -> dict[str, Any]:
    """The Event's details, flattened: ``m3terEvent.eventData`` (or ``m3terEvent``) and a nested
    ``measurement`` if there is one."""
    outer: Any = event.get("m3terEvent")
    if isinstance(outer, str):
        try:
            outer = json.loads(outer)
        except ValueError:
            outer = {}
    outer = outer if isinstance(outer, dict) else {}
    inner = outer.get("eventData")
    data: dict[str, Any] = inner if isinstance(inner, dict) else outer
    measurement = data.get("measurement")
    return {**(measurement if isinstance(measurement, dict) else {}), **data}


def _first(data: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _file(data: Mapping[str, Any]) -> str | None:
    file = data.get("file")
    if isinstance(file, str) and file:
        return file
    url = data.get("getDownloadUrl")
    if isinstance(url, str) and "file=" in url:
        from urllib.parse import parse_qs, urlsplit

        files = parse_qs(urlsplit(url).query).get("file")
        return files[0] if files else None
    if isinstance(url, str) and url:
        from m3ter_provider.core.transport import redact_url

        return redact_url(url)  # a presigned URL's query authorises a download: never to XCom
    return None


def _with_details(hook: EventSource, failure: IngestFailure) -> IngestFailure:
    """Fill uid and reason from the Event's failed-ingest file; keep the Event's values otherwise."""
    if failure.file is None:
        return failure
    try:
        answer = hook.get("measurements/failedIngest/getDownloadUrl", params={"file": failure.file})
        url = answer.get("url") if isinstance(answer, dict) else None
        if not url:
            return failure
        with tempfile.TemporaryDirectory(prefix="m3ter-ingest-failure-") as folder:
            path = os.path.join(folder, "detail.json")
            hook.download(url, path)
            with open(path, encoding="utf-8") as handle:
                detail = json.load(handle)
    except (M3terError, OSError, ValueError) as error:
        log.warning("Could not read the failed-ingest file of Event %s: %s", failure.event_id, error)
        return failure
    data = _event_data({"m3terEvent": detail}) if isinstance(detail, dict) else {}
    return IngestFailure(
        event_id=failure.event_id,
        event_time=failure.event_time,
        error_type=failure.error_type or _first(data, _TYPE_KEYS),
        message=failure.message or _first(data, _MESSAGE_KEYS),
        uid=failure.uid or _first(data, ("uid",)),
        account=failure.account or _first(data, ("account", "accountCode")),
        meter=failure.meter or _first(data, ("meter", "meterCode")),
        file=failure.file,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _parse_time(value: object) -> datetime | None:
    """An ISO-8601 date-time (any fraction length: Python 3.10's fromisoformat takes only 3 or 6)."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"\.(\d+)", lambda m: "." + (m.group(1) + "000000")[:6], value.strip().upper())
    try:
        return _aware(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return None
