"""Routes of ad-hoc data exports (with presigned downloads) and measurement file uploads."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, time, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING

from . import files
from .common import ApiError, iso, parse_datetime, utcnow
from .events import EXPORT_FAILURE
from .jobs import Job
from .measurements import measurement_problem
from .routing import Request, Response, Router, json_response
from .store import PAGE_SIZE_MAXIMA, filter_rows, paginate, query_value

if TYPE_CHECKING:
    from .app import EmulatorApp

ORG = "/organizations/{orgId}"
EXPORT_JOBS = f"{ORG}/dataexports/jobs"
UPLOAD_JOBS = f"{ORG}/fileuploads/measurements/jobs"
FILE_FORMATS = ("CSV", "JSONL")
MAX_UPLOAD_BYTES = 1_073_741_824
DOWNLOAD_URL_WINDOW = timedelta(hours=24)


def register(router: Router, app: EmulatorApp) -> None:
    """Add the data export and file upload routes and their completion hooks."""
    router.add("POST", f"{ORG}/dataexports/adhoc", partial(create_export, app))
    router.add("GET", EXPORT_JOBS, partial(list_exports, app))
    router.add("GET", f"{EXPORT_JOBS}/{{id}}", partial(get_export, app))
    router.add("GET", f"{EXPORT_JOBS}/{{jobId}}/getdownloadurl", partial(download_url, app))
    router.add("POST", f"{ORG}/fileuploads/measurements/generateUploadUrl", partial(create_upload, app))
    router.add("GET", UPLOAD_JOBS, partial(list_uploads, app))
    router.add("GET", f"{UPLOAD_JOBS}/{{id}}", partial(get_upload, app))
    router.add("PUT", "/_emulator/uploads/{token}", partial(receive_upload, app), auth=False)
    app.settle_hooks["dataexport"] = partial(finish_export, app)
    app.settle_hooks["fileupload"] = partial(finish_upload, app)


# -- data exports -----------------------------------------------------------------------------
def create_export(app: EmulatorApp, req: Request) -> Response:
    """``POST /dataexports/adhoc``: validate the USAGE or OPERATIONAL request, start a job."""
    body = req.json_object()
    source = body.get("sourceType")
    if source not in ("USAGE", "OPERATIONAL"):
        raise ApiError(400, "sourceType must be USAGE or OPERATIONAL")
    file_format = body.get("exportFileFormat", "CSV")
    if file_format not in FILE_FORMATS:
        raise ApiError(400, f"exportFileFormat must be one of {', '.join(FILE_FORMATS)}")
    _check_string_list(body, "destinationIds")
    start = _optional_datetime(body, "startDate")
    if source == "USAGE":
        end = _optional_datetime(body, "endDate")
        if start is None or end is None:
            raise ApiError(400, "startDate and endDate are required for a USAGE export")
        if end <= start:
            raise ApiError(400, "endDate must be after startDate")
        latest = datetime.combine(utcnow().date() + timedelta(days=1), time(), timezone.utc)
        if end > latest:
            raise ApiError(400, f"endDate cannot be after tomorrow at midnight UTC ({iso(latest)})")
        _check_string_list(body, "meterIds")
        _check_string_list(body, "accountIds")
    else:
        types = body.get("operationalDataTypes")
        if not isinstance(types, list) or not types:
            raise ApiError(400, "operationalDataTypes is required for an OPERATIONAL export (at least one)")
        unknown = [t for t in types if t not in files.OPERATIONAL_DATA_TYPES]
        if unknown:
            raise ApiError(400, f"operationalDataTypes: unknown types {unknown}")
    job = app.jobs.create("dataexport", {**body, "exportFileFormat": file_format})
    app.jobs.advance()
    return json_response({"jobId": job.id})


def export_view(app: EmulatorApp, job: Job) -> dict:
    """A JobResponse."""
    status = app.jobs.status(job)
    view = {
        "id": job.id,
        "version": 1,
        "sourceType": job.request["sourceType"],
        "status": status,
        "dateCreated": iso(job.created),
    }
    if status != "PENDING":
        view["startedAt"] = iso(job.created + timedelta(seconds=job.duration / 2))
    return view


def get_export(app: EmulatorApp, req: Request) -> Response:
    """``GET /dataexports/jobs/{id}``."""
    return json_response(export_view(app, app.jobs.get("dataexport", req.params["id"], "Export job")))


def list_exports(app: EmulatorApp, req: Request) -> Response:
    """``GET /dataexports/jobs``: filters ids, status, scheduleId, dateCreatedStart/End."""
    rows = [(job.seq, export_view(app, job)) for job in app.jobs.of_kind("dataexport")]
    rows = list(filter_rows(rows, req.query, {"ids": "id", "status": "status", "scheduleId": "scheduleId"}))
    rows = _created_between(rows, req, "dateCreated")
    return json_response(paginate(rows, req.query, PAGE_SIZE_MAXIMA[EXPORT_JOBS]))


def download_url(app: EmulatorApp, req: Request) -> Response:
    """``GET /dataexports/jobs/{jobId}/getdownloadurl``: a 15-minute URL, once the job SUCCEEDED."""
    job = app.jobs.get("dataexport", req.params["jobId"], "Export job")
    status = app.jobs.status(job)
    if status != "SUCCEEDED":
        raise ApiError(400, f"Export job {job.id} has no file to download: its status is {status}")
    if job.finished_at is not None and utcnow() - job.finished_at > DOWNLOAD_URL_WINDOW:
        raise ApiError(400, "Download URLs are only available for export jobs run in the past 24 hours")
    path, expires = app.urls.publish(job.result["content"], job.result["content_type"])
    return json_response({"url": app.absolute(path), "expirationTime": iso(expires)})


def finish_export(app: EmulatorApp, job: Job) -> None:
    """Build the export file (from measurements or entities) when the job succeeds; a failed job
    records a ``dataexport.job.failure`` Event."""
    if job.final != job.timeline.done:
        message = f"Data export job {job.id} failed (emulated failure)"
        data = {
            "jobId": job.id,
            "sourceType": job.request["sourceType"],
            "status": job.final,
            "errorMessage": message,
        }
        app.events.record(EXPORT_FAILURE, data, resource_id=job.id)
        return
    body = job.request
    if body["sourceType"] == "USAGE":
        rows = files.usage_rows(
            app.measurements.items,
            parse_datetime(body["startDate"]),
            parse_datetime(body["endDate"]),
            codes_of(app, "accounts", body.get("accountIds")),
            codes_of(app, "meters", body.get("meterIds")),
        )
    else:
        since = parse_datetime(body.get("startDate"))
        rows = []
        for data_type in body["operationalDataTypes"]:
            collection = files.OPERATIONAL_DATA_TYPES[data_type]
            for entity in app.store.all(collection) if collection else []:
                modified = parse_datetime(entity.get("dtLastModified"))
                if since is None or modified is None or modified >= since:
                    rows.append({"operationalDataType": data_type, **entity})
    file_format = body["exportFileFormat"]
    job.result["content"] = files.render(rows, file_format)
    job.result["content_type"] = files.CONTENT_TYPES[file_format]
    job.result["rows"] = len(rows)


def codes_of(app: EmulatorApp, collection: str, ids: list[str] | None) -> set[str] | None:
    """Account/meter ids -> their codes (measurements carry codes); unknown ids match nothing."""
    if not ids:
        return None
    return {e["code"] for i in ids if (e := app.store.find(collection, i)) is not None and "code" in e}


# -- measurement file uploads -----------------------------------------------------------------
def create_upload(app: EmulatorApp, req: Request) -> Response:
    """``POST /fileuploads/measurements/generateUploadUrl``: a one-minute upload URL and a job."""
    body = req.json_object()
    name = body.get("fileName")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise ApiError(400, "fileName is required (1 to 100 characters)")
    content_type = body.get("contentType")
    if content_type not in ("application/json", "text/json"):
        raise ApiError(400, "contentType must be application/json or text/json")
    length = body.get("contentLength")
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_UPLOAD_BYTES:
        raise ApiError(400, f"contentLength is required: the file size in bytes (1 to {MAX_UPLOAD_BYTES})")
    job = app.jobs.create("fileupload", body, start=False)
    path = app.urls.open_upload(job.id, content_type, length)
    return json_response(
        {"jobId": job.id, "url": app.absolute(path), "headers": {"Content-Type": content_type}}
    )


def receive_upload(app: EmulatorApp, req: Request) -> Response:
    """``PUT`` to a presigned upload URL (no bearer): store the file and start the job."""
    if req.header("Authorization") is not None:
        app.stats.authorization_on_upload += 1
    slot = app.urls.take_upload(req.params["token"], len(req.body))
    sent_type = (req.header("Content-Type") or "").split(";")[0].strip()
    if sent_type and sent_type != slot.content_type:
        raise ApiError(403, f"Content-Type {sent_type!r} does not match the signed {slot.content_type!r}")
    job = app.jobs.get("fileupload", slot.job_id, "File upload job")
    job.result["content"] = req.body
    app.jobs.start(job)
    etag = '"' + hashlib.md5(req.body, usedforsecurity=False).hexdigest() + '"'
    return Response(200, b"", "text/plain", {"ETag": etag})


def upload_view(app: EmulatorApp, job: Job) -> dict:
    """An UploadJobResponse."""
    view = {
        "id": job.id,
        "version": 1,
        "fileName": job.request["fileName"],
        "contentLength": job.request["contentLength"],
        "status": app.jobs.status(job),
    }
    if job.started_at is not None:
        view["uploadDate"] = iso(job.started_at)
    for key in ("totalRows", "processedRows", "failedRows"):
        if key in job.result:
            view[key] = job.result[key]
    return view


def get_upload(app: EmulatorApp, req: Request) -> Response:
    """``GET /fileuploads/measurements/jobs/{id}``."""
    return json_response(upload_view(app, app.jobs.get("fileupload", req.params["id"], "File upload job")))


def list_uploads(app: EmulatorApp, req: Request) -> Response:
    """``GET /fileuploads/measurements/jobs``: filters dateCreatedStart/End."""
    rows = [(job.seq, upload_view(app, job)) for job in app.jobs.of_kind("fileupload")]
    created = {job.id: iso(job.created) for job in app.jobs.of_kind("fileupload")}
    rows = [(seq, view) for seq, view in rows if _in_range(created[view["id"]], req)]
    return json_response(paginate(rows, req.query, PAGE_SIZE_MAXIMA[UPLOAD_JOBS]))


def finish_upload(app: EmulatorApp, job: Job) -> None:
    """Ingest the uploaded measurements (valid rows stored, uid de-duplicated; invalid rows counted)."""
    if job.final != job.timeline.done:
        job.result.update(totalRows=0, processedRows=0, failedRows=0)
        return
    items = _parse_upload(job.result.get("content", b""))
    if items is None:
        job.final = job.timeline.failed
        job.result.update(totalRows=0, processedRows=0, failedRows=0)
        return
    valid = [item for item in items if measurement_problem(item) is None]
    app.ingest(valid)
    job.result.update(totalRows=len(items), processedRows=len(valid), failedRows=len(items) - len(valid))


def _parse_upload(content: bytes) -> list | None:
    """Measurements of a JSON file: ``{"measurements": [...]}``, a JSON array, or JSON lines."""
    try:
        text = content.decode("utf-8")
        try:
            data = json.loads(text)
        except ValueError:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(data, dict):
        data = data.get("measurements")
    return data if isinstance(data, list) else None


# -- helpers ----------------------------------------------------------------------------------
def _check_string_list(body: dict, name: str) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise ApiError(400, f"{name} must be an array of strings")


def _optional_datetime(body: dict, name: str) -> datetime | None:
    value = body.get(name)
    if value is None:
        return None
    parsed = parse_datetime(value)
    if parsed is None:
        raise ApiError(400, f"{name} must be an ISO-8601 date-time with an offset, got {value!r}")
    return parsed


def _in_range(created: str, req: Request) -> bool:
    moment = parse_datetime(created)
    for name, after in (("dateCreatedStart", True), ("dateCreatedEnd", False)):
        text = query_value(req.query, name)
        if text is None:
            continue
        bound = parse_datetime(text)
        if bound is None:
            raise ApiError(400, f"{name} must be an ISO-8601 date-time, got {text!r}")
        if moment is not None and (moment < bound if after else moment > bound):
            return False
    return True


def _created_between(rows: list[tuple[int, dict]], req: Request, field: str) -> list[tuple[int, dict]]:
    return [(seq, view) for seq, view in rows if _in_range(view[field], req)]
