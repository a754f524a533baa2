"""Bulk measurement files through m3ter's file upload service (no Airflow import).

m3ter's batch ingest path: ``POST fileuploads/measurements/generateUploadUrl`` (``fileName``,
``contentType``, ``contentLength``) answers ``{jobId, url, headers}``; one ``PUT`` of up to 1 GiB to
that presigned URL within a minute; an upload job (``fileuploads/measurements/jobs/{id}``, status
notUploaded, running, failed, succeeded, with ``totalRows``, ``processedRows``, ``failedRows``)
ingests it. It does not compete with live REST ingest for the 50 requests/s per Organization.

The measurements go through the same pass as REST ingest (:func:`~m3ter_provider.core.ingest.
spool_measurements`): every one validated before anything is sent, every one given a content uid,
so m3ter ingests a re-uploaded measurement once. The file (``{"measurements": [...]}``, the ingest
API's body) is written to a temporary file, then streamed to the URL: it is never held in memory,
and the bearer token never goes to the presigned URL (only the headers m3ter returned do).
Input over ``max_file_bytes`` is split into several files, one job each.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import tempfile
from typing import TYPE_CHECKING, Any

from m3ter_provider.core._text import plural
from m3ter_provider.core.ingest import spool_measurements
from m3ter_provider.core.ingest.spool import PREFIX, SUFFIX, Spool
from m3ter_provider.core.ingest.uids import random_namespace
from m3ter_provider.core.jobs import FILE_UPLOAD, get_job, wait_for_job
from m3ter_provider.errors import M3terAPIError, M3terConfigError, M3terValidationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from m3ter_provider.core.client import M3terClient

log = logging.getLogger(__name__)

#: m3ter takes files of at most 1 GiB
MAX_FILE_BYTES = 1 << 30
CONTENT_TYPE = "application/json"
GENERATE_URL_PATH = "fileuploads/measurements/generateUploadUrl"
#: chunk size of the copy from the spool into the upload file
_COPY = 1 << 20


@dataclasses.dataclass
class UploadFile:
    """One file to upload: ``{"measurements": [...]}`` in a temporary file.

    :param digest: SHA-256 of the file (its content, uids included): the same input in the same
        namespace gives the same digest, so a retry can tell its files apart from other input.
    """

    file: Any
    bytes: int
    measurements: int
    digest: str

    @property
    def name(self) -> str:
        """The ``fileName`` sent to m3ter (at most 100 characters)."""
        return f"airflow-m3ter-{self.digest[:32]}.json"


class UploadBatch:
    """Validated measurements as upload files (see :func:`prepare`); close it to delete the files.

    :ivar spool: the encoded measurements (their uids match ingest failure Events to this upload).
    :ivar files: the files to upload, in order.
    """

    def __init__(self, spool: Spool, files: list[UploadFile]) -> None:
        self.spool = spool
        self.files = files

    @property
    def measurements(self) -> int:
        return self.spool.measurements

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def __enter__(self) -> UploadBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for upload in self.files:
            upload.file.close()
        self.spool.close()


def prepare(
    measurements: Iterable[Mapping[str, Any]] | Any,
    *,
    uid_namespace: str | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> UploadBatch:
    """Validate, give uids and write the upload files (nothing is sent).

    :param measurements: any input :func:`~m3ter_provider.core.ingest.submit` takes (dicts, JSON
        Lines, CSV or Parquet files, a :class:`~m3ter_provider.core.ingest.sql.QueryResult`).
    :param uid_namespace: fixes the derived uids (see :mod:`m3ter_provider.core.ingest`).
    :param max_file_bytes: split into files of at most this size (m3ter's limit: 1 GiB).
    :raises M3terValidationError: bad input; nothing was sent.
    """
    if isinstance(max_file_bytes, bool) or not isinstance(max_file_bytes, int):
        raise M3terConfigError(f"max_file_bytes must be a number of bytes, not {max_file_bytes!r}.")
    if not 1024 <= max_file_bytes <= MAX_FILE_BYTES:
        raise M3terConfigError(f"max_file_bytes must be between 1,024 and {MAX_FILE_BYTES:,} (1 GiB).")
    if uid_namespace is not None and (not isinstance(uid_namespace, str) or not uid_namespace):
        raise M3terValidationError("uid_namespace must be a non-empty string (or None).")
    namespace = uid_namespace if uid_namespace is not None else random_namespace()
    spool = spool_measurements(measurements, uid_namespace=namespace)
    try:
        files = _write_files(spool, max_file_bytes)
    except BaseException:
        spool.close()
        raise
    return UploadBatch(spool, files)


def _write_files(spool: Spool, max_file_bytes: int) -> list[UploadFile]:
    """The spool's bodies joined into ``{"measurements": [...]}`` files of at most ``max_file_bytes``."""
    files: list[UploadFile] = []
    current: list[Any] = []  # [file, digest, bytes, measurements]

    def finish() -> None:
        handle, digest, size, count = current
        handle.write(SUFFIX)
        digest.update(SUFFIX)
        handle.flush()
        files.append(UploadFile(handle, size + len(SUFFIX), count, digest.hexdigest()))
        current.clear()

    for index in range(len(spool)):
        items = spool.body(index)[len(PREFIX) : -len(SUFFIX)]
        if current and current[2] + 1 + len(items) + len(SUFFIX) > max_file_bytes:
            finish()
        if not current:
            handle = tempfile.TemporaryFile(prefix="m3ter-upload-")  # noqa: SIM115 - closed by UploadBatch
            handle.write(PREFIX)
            current.extend([handle, hashlib.sha256(PREFIX), len(PREFIX), 0])
        else:
            current[0].write(b",")
            current[1].update(b",")
            current[2] += 1
        current[0].write(items)
        current[1].update(items)
        current[2] += len(items)
        current[3] += spool.count(index)
    if current:
        finish()
    return files


def start_upload(client: M3terClient, upload: UploadFile) -> str:
    """Ask m3ter for an upload URL and ``PUT`` the file there; return the upload job's id.

    The file is streamed from disk. The PUT sends the headers m3ter returned and never the bearer
    token; a PUT that gets no answer is retried (the same bytes to the same URL).
    """
    import requests

    from m3ter_provider.core.transport import url_path

    answer = client.request(
        "POST",
        GENERATE_URL_PATH,
        json={"fileName": upload.name, "contentType": CONTENT_TYPE, "contentLength": upload.bytes},
    )
    job_id = answer.get("jobId") if isinstance(answer, dict) else None
    url = answer.get("url") if isinstance(answer, dict) else None
    if not job_id or not url:
        raise M3terAPIError(
            "m3ter answered without a jobId and url",
            method="POST",
            path=GENERATE_URL_PATH,
            hint="Check the API URL of the connection points at m3ter's Config API.",
        )
    headers = {str(k): str(v) for k, v in (answer.get("headers") or {}).items()}
    headers.setdefault("Content-Type", CONTENT_TYPE)
    headers["Content-Length"] = str(upload.bytes)
    headers["User-Agent"] = client.user_agent

    def put() -> requests.Response:
        upload.file.seek(0)
        return plain.put(
            url, data=_Reader(upload.file, upload.bytes), headers=headers, timeout=client.timeout
        )

    plain = requests.Session()  # no bearer token: the presigned URL carries its own authorisation
    try:
        answer = client.transport.call("PUT", url, put, idempotent=True, json_body=False)
        status = answer.response.status_code
        answer.response.close()
    finally:
        plain.close()
    if not 200 <= status < 300:
        raise M3terAPIError(
            "the file upload was refused",
            method="PUT",
            path=url_path(url),
            status=status,
            hint="m3ter's upload URLs are valid one minute and for the declared length and type only: "
            "run the task again for a fresh URL.",
        )
    log.info(
        "Uploaded %s (%s) as m3ter file upload job %s.",
        plural(upload.measurements, "measurement"),
        plural(upload.bytes, "byte"),
        job_id,
    )
    return str(job_id)


class _Reader:
    """A file read in 1 MiB blocks, with a known length (requests streams it, never reads it whole)."""

    def __init__(self, handle: Any, length: int) -> None:
        self.handle = handle
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Any:
        while block := self.handle.read(_COPY):
            yield block


def summarize(jobs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Totals of finished upload jobs: ``job_ids``, ``status`` (the worst), row counts."""
    statuses = [FILE_UPLOAD.status(job) for job in jobs]
    worst = next((s for s in ("failed", "running", "notUploaded") if s in statuses), "succeeded")

    def total(key: str) -> int | None:
        values = [job.get(key) for job in jobs]
        counts = [int(value) for value in values if value is not None]
        return sum(counts) if len(counts) == len(values) else None

    return {
        "job_ids": [str(job.get("id")) for job in jobs],
        "status": worst if jobs else None,
        "total_rows": total("totalRows"),
        "processed_rows": total("processedRows"),
        "failed_rows": total("failedRows"),
    }


def upload(
    client: M3terClient,
    measurements: Iterable[Mapping[str, Any]] | Any,
    *,
    uid_namespace: str | None = None,
    wait: bool = True,
    poll_interval: float = 5.0,
    timeout: float | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
    after_upload: Callable[[Spool], Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Validate and upload measurements as files; wait for the upload jobs unless ``wait`` is False.

    :param after_upload: called with the spool once every job succeeded (e.g. to match ingest
        failure Events to its uids); what it returns joins the summary.
    :return: ``{"measurements", "bytes", "files", "job_ids", "status", "total_rows",
        "processed_rows", "failed_rows"}`` (row counts None until the jobs finished).
    :raises M3terJobFailedError: an upload job failed (the message names it).
    """
    with prepare(measurements, uid_namespace=uid_namespace, max_file_bytes=max_file_bytes) as batch:
        log.info(
            "Validated %s into %s; uploading.",
            plural(batch.measurements, "measurement"),
            plural(len(batch.files), "file"),
        )
        job_ids = [start_upload(client, f) for f in batch.files]
        if wait:
            jobs = [
                wait_for_job(client, FILE_UPLOAD, job_id, poll_interval=poll_interval, timeout=timeout)
                for job_id in job_ids
            ]
        else:
            jobs = [get_job(client, FILE_UPLOAD, job_id) for job_id in job_ids]
        summary: dict[str, Any] = {
            "measurements": batch.measurements,
            "bytes": batch.bytes,
            "files": len(batch.files),
            **summarize(jobs),
        }
        if wait and after_upload is not None:
            summary.update(after_upload(batch.spool))
        return summary


def report_failed_rows(summary: Mapping[str, Any], mode: str, logger: Any = log) -> None:
    """Warn about (``"warn"``) or raise for (``"fail"``) rows the upload jobs counted as failed."""
    from m3ter_provider.errors import M3terIngestRejectedError

    failed = summary.get("failed_rows") or 0
    if mode == "off" or not failed:
        return
    message = (
        f"m3ter's upload jobs {', '.join(summary.get('job_ids') or [])} could not process "
        f"{plural(failed, 'row')} of {summary.get('total_rows')}: look the jobs up in the m3ter Console "
        "(the original file: GET fileuploads/measurements/jobs/{id}/original)."
    )
    if mode == "fail":
        raise M3terIngestRejectedError(message)
    logger.warning(message)
