"""m3ter's Events for measurements it accepted (200) and then refused: ``ingest.validation.failure``.

m3ter validates measurements a second time after answering ``{"result": "accepted"}``; a measurement
for an unknown Meter, with an Account code that only nearly matches an existing Account, missing a
numeric Data Field of its Meter, or re-using a uid, is not ingested and becomes one Event. Each
Event's ``m3terEvent.eventData.getDownloadUrl`` is the full URL of the spec's failed-ingest file
download operation for a JSON file describing what went wrong.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass

from .common import iso, new_id, utcnow

INGEST_FAILURE = "ingest.validation.failure"
EVENT_TYPE = "IngestValidationFailure"
EVENT_TYPES = (
    "billing.bill.created", "billing.billjob.updated", "billing.statementjob.updated",
    "configuration.account.created", "configuration.meter.created", "dataexport.job.failure",
    INGEST_FAILURE,
)  # fmt: skip
EVENT_FIELDS = {
    INGEST_FAILURE: {
        "errorType": "string", "errorMessage": "string", "uid": "string", "account": "string",
        "meter": "string", "ts": "string", "file": "string", "getDownloadUrl": "string",
    },
}  # fmt: skip
NUMERIC_CATEGORIES = {"MEASURE": "measure", "COST": "cost", "INCOME": "income"}


@dataclass
class StoredEvent:
    """One Event and the failed-ingest file it points to."""

    seq: int
    event: dict
    account_id: str | None
    file: str
    content: bytes


def failure_reason(
    measurement: dict, meter: dict | None, account_problem: str | None
) -> tuple[str, str] | None:
    """``(errorType, message)`` when m3ter would refuse ``measurement`` after accepting it, else None."""
    if meter is None:
        return "UndefinedMeter", f"Meter code {measurement['meter']!r} does not reference an existing Meter"
    if account_problem is not None:
        return "InvalidAccountCode", account_problem
    for field in meter.get("dataFields") or []:
        group = NUMERIC_CATEGORIES.get(field.get("category"))
        code = field.get("code")
        if group and code and code not in (measurement.get(group) or {}):
            return "MissingField", f"{group}.{code} is missing: Meter {meter.get('code')!r} defines it"
    return None


class EventLog:
    """Events in time order, by id, with their failed-ingest files."""

    def __init__(self, sequence) -> None:
        self._next_seq = sequence
        self.events: dict[str, StoredEvent] = {}
        self.files: dict[str, StoredEvent] = {}

    def reset(self) -> None:
        """Forget every event."""
        self.events.clear()
        self.files.clear()

    def record_ingest_failure(
        self, measurement: dict, error_type: str, message: str, account_id: str | None, download_base: str
    ) -> dict:
        """Store one ``ingest.validation.failure`` event; return it."""
        event_id = new_id()
        now = utcnow()
        file = f"failedIngest/{now:%Y/%m/%d}/{event_id}.json"
        detail = {"errorType": error_type, "errorMessage": message, "measurement": copy.deepcopy(measurement)}
        data = {
            "errorType": error_type,
            "errorMessage": message,
            **{k: measurement[k] for k in ("uid", "account", "meter", "ts") if k in measurement},
            "file": file,
            "getDownloadUrl": f"{download_base}?file={file}",
        }
        event = {
            "id": event_id,
            "eventName": INGEST_FAILURE,
            "eventTime": iso(now),
            "m3terEvent": {"eventName": INGEST_FAILURE, "eventTime": iso(now), "eventData": data},
        }
        stored = StoredEvent(self._next_seq(), event, account_id, file, json.dumps(detail, indent=2).encode())
        self.events[event_id] = stored
        self.files[file] = stored
        return event

    def newest_first(self) -> list[StoredEvent]:
        """Every event, newest first (as m3ter lists: the first page holds the newest)."""
        return sorted(self.events.values(), key=lambda stored: stored.seq, reverse=True)

    def record_event(self, event_name: str, event_data: dict, account_id: str | None = None) -> dict:
        """Store one Event of any name (``m3terEvent.eventData`` as given); return it."""
        event_id = new_id()
        now = utcnow()
        event = {
            "id": event_id,
            "eventName": event_name,
            "eventTime": iso(now),
            "m3terEvent": {
                "eventName": event_name,
                "eventTime": iso(now),
                "eventData": copy.deepcopy(event_data),
            },
        }
        stored = StoredEvent(self._next_seq(), event, account_id, "", b"")
        self.events[event_id] = stored
        return copy.deepcopy(event)
