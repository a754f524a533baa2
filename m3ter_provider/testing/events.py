"""m3ter's Events: the emulator's own state changes, in m3ter's names and shapes.

- ``billing.billjob.updated`` when a bill job finishes (COMPLETE) or is cancelled, and
  ``billing.statementjob.updated`` likewise; ``billing.bill.created`` for each Bill a job creates,
  ``billing.bill.updated`` when a Bill is approved, locked or changes status, ``billing.bill.deleted``.
  Their ``m3terEvent.eventData`` holds ``newDto`` (the entity as ``GET`` answers it now) and, for
  updates and deletions, ``oldDto`` (as it was), as in the spec's example Event and the ``new.``/``old.``
  fields ``GET /events/fields`` lists.
- ``dataexport.job.failure`` when a data export job fails (m3ter documents no event for a successful
  export: poll the job, or watch ``billing.*`` events).
- ``ingest.validation.failure`` for measurements m3ter accepted (200) and then refused (below).

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
from .spec import load_spec, resolve

INGEST_FAILURE = "ingest.validation.failure"
EVENT_TYPE = "IngestValidationFailure"
EXPORT_FAILURE = "dataexport.job.failure"
BILL_JOB_UPDATED = "billing.billjob.updated"
STATEMENT_JOB_UPDATED = "billing.statementjob.updated"
BILL_CREATED, BILL_UPDATED, BILL_DELETED = (
    "billing.bill.created",
    "billing.bill.updated",
    "billing.bill.deleted",
)
#: eventType filter (the spec's categories) -> the eventName of the events it means
EVENT_TYPE_NAMES = {EVENT_TYPE: INGEST_FAILURE, "DataExportJobFailure": EXPORT_FAILURE}
#: the entity schema behind each ``<area>.<entity>`` event family (for ``GET /events/fields``)
DTO_SCHEMAS = {"billing.bill": "BillResponse", "billing.billjob": "BillJobResponse",
               "billing.statementjob": "StatementJobResponse"}  # fmt: skip
FLAT_FIELDS = {
    INGEST_FAILURE: {
        "errorType": "string", "errorMessage": "string", "uid": "string", "account": "string",
        "meter": "string", "ts": "string", "file": "string", "getDownloadUrl": "string",
    },
    EXPORT_FAILURE: {"jobId": "string", "sourceType": "string", "status": "string", "errorMessage": "string"},
}  # fmt: skip
_FIELD_TYPES = {"string": "string", "integer": "int", "number": "double", "boolean": "boolean",
                "array": "array", "object": "map"}  # fmt: skip


def event_types() -> list[str]:
    """``GET /events/types``: the spec's list of Event Types (its example), plus the failure events."""
    listed = load_spec()["components"]["schemas"]["EventTypeResponse"].get("example", {}).get("events", [])
    return sorted({*listed, INGEST_FAILURE, EXPORT_FAILURE})


def event_fields(name: str) -> dict[str, str]:
    """``GET /events/fields`` for one Event Type: ``new.x``/``old.x`` for entity events, from the spec."""
    if name in FLAT_FIELDS:
        return dict(FLAT_FIELDS[name])
    family, _, action = name.rpartition(".")
    schema = DTO_SCHEMAS.get(family)
    if schema is None or action not in ("created", "updated", "deleted"):
        return {}
    types = {key: _FIELD_TYPES.get(resolve(prop).get("type", "object"), "string")
             for key, prop in properties(schema).items()}  # fmt: skip
    sides = {"created": ("new",), "updated": ("new", "old"), "deleted": ("old",)}[action]
    return {f"{side}.{key}": kind for side in sides for key, kind in sorted(types.items())}


def properties(schema_name: str) -> dict[str, dict]:
    """A component schema's properties, ``allOf`` parts included."""
    found: dict[str, dict] = {}

    def collect(schema: dict) -> None:
        schema = resolve(schema)
        for part in schema.get("allOf", []):
            collect(part)
        found.update(schema.get("properties", {}))

    collect({"$ref": f"#/components/schemas/{schema_name}"})
    return found


NUMERIC_CATEGORIES = {"MEASURE": "measure", "COST": "cost", "INCOME": "income"}


@dataclass
class StoredEvent:
    """One Event and the failed-ingest file it points to."""

    seq: int
    event: dict
    account_id: str | None
    resource_id: str | None = None
    file: str | None = None
    content: bytes = b""


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

    def record(
        self, name: str, data: dict, *, account_id: str | None = None, resource_id: str | None = None
    ) -> StoredEvent:
        """Store one Event ``name`` with ``eventData`` ``data``; return it."""
        now = iso(utcnow())
        event = {
            "id": new_id(),
            "eventName": name,
            "eventTime": now,
            "m3terEvent": {"eventName": name, "eventTime": now, "eventData": copy.deepcopy(data)},
        }
        stored = StoredEvent(self._next_seq(), event, account_id, resource_id)
        self.events[event["id"]] = stored
        return stored

    def record_change(
        self, name: str, new: dict | None, old: dict | None = None, *, account_id: str | None = None
    ) -> StoredEvent:
        """An entity Event: ``newDto`` and/or ``oldDto``; the entity's id is the resource id."""
        data = {k: copy.deepcopy(v) for k, v in (("newDto", new), ("oldDto", old)) if v is not None}
        entity = new if new is not None else old
        return self.record(name, data, account_id=account_id, resource_id=entity and entity.get("id"))

    def record_ingest_failure(
        self, measurement: dict, error_type: str, message: str, account_id: str | None, download_base: str
    ) -> dict:
        """Store one ``ingest.validation.failure`` event; return it."""
        file_id = new_id()
        file = f"failedIngest/{utcnow():%Y/%m/%d}/{file_id}.json"
        detail = {"errorType": error_type, "errorMessage": message, "measurement": copy.deepcopy(measurement)}
        data = {
            "errorType": error_type,
            "errorMessage": message,
            **{k: measurement[k] for k in ("uid", "account", "meter", "ts") if k in measurement},
            "file": file,
            "getDownloadUrl": f"{download_base}?file={file}",
        }
        stored = self.record(INGEST_FAILURE, data, account_id=account_id)
        stored.file, stored.content = file, json.dumps(detail, indent=2).encode()
        self.files[file] = stored
        return stored.event

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
