"""Bill statements: statement jobs for Bills and the download of their files (no Airflow import).

``POST statementjobs`` makes a statement for one Bill, ``POST statementjobs/batch`` for up to 10;
each job, once ``COMPLETE``, carries presigned URLs of the statement: ``presignedJsonStatementUrl``
always, ``presignedCsvStatementUrl`` when ``includeCsvFormat`` was asked. m3ter's spec offers JSON
and CSV statements only (no HTML). The presigned URLs are fetched without the bearer token.
Creating a statement job is not idempotent: the operator records the ids a try started.
"""

from __future__ import annotations

import logging
import pathlib
from typing import TYPE_CHECKING, Any

from m3ter_provider.core._text import plural
from m3ter_provider.core.billing import bill_id_list
from m3ter_provider.core.jobs import STATEMENT_JOB
from m3ter_provider.errors import M3terAPIError, M3terConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from m3ter_provider.core.client import M3terClient

log = logging.getLogger(__name__)

MAX_BILLS_PER_BATCH = 10  # StatementsBatchJobRequest.billIds maxItems
#: statement format -> (the job field holding its presigned URL, the file suffix)
FORMATS: dict[str, tuple[str, str]] = {
    "JSON": ("presignedJsonStatementUrl", "json"),
    "CSV": ("presignedCsvStatementUrl", "csv"),
}


def statement_formats(formats: Any) -> list[str]:
    """``["JSON"]``, ``["JSON", "CSV"]``...: checked, upper-cased, without repeats."""
    if isinstance(formats, str):
        formats = [part for part in formats.split(",") if part.strip()]
    chosen: list[str] = []
    for item in formats or ["JSON"]:
        name = str(item).strip().upper()
        if name not in FORMATS:
            raise M3terConfigError(
                f"formats: {item!r} is not a statement format m3ter produces: use {' and/or '.join(FORMATS)} "
                "(m3ter's API offers no HTML statement)."
            )
        if name not in chosen:
            chosen.append(name)
    return chosen


def start_statement_jobs(
    client: M3terClient, bill_ids: Iterable[str], *, include_csv: bool = False
) -> list[dict[str, Any]]:
    """Start one statement job per Bill: ``POST statementjobs/batch`` by 10 (``statementjobs`` for one).

    :return: the jobs m3ter created, in the order of ``bill_ids``.
    """
    ids = bill_id_list(bill_ids)
    created: list[dict[str, Any]] = []
    for start in range(0, len(ids), MAX_BILLS_PER_BATCH):
        chunk = ids[start : start + MAX_BILLS_PER_BATCH]
        if len(chunk) == 1:
            answer: Any = [
                client.request(
                    "POST", "statementjobs", json={"billId": chunk[0], "includeCsvFormat": include_csv}
                )
            ]
        else:
            answer = client.request(
                "POST", "statementjobs/batch", json={"billIds": chunk, "includeCsvFormat": include_csv}
            )
        if not isinstance(answer, list) or not all(isinstance(j, dict) and j.get("id") for j in answer):
            raise M3terAPIError(
                "m3ter answered without statement job ids", method="POST", path="statementjobs/batch"
            )
        created.extend(answer)
    log.info("Started %s.", plural(len(created), f"m3ter {STATEMENT_JOB.title}"))
    return created


def download_statements(
    client: M3terClient, jobs: Iterable[Mapping[str, Any]], destination: Any, formats: Any = ("JSON",)
) -> list[dict[str, Any]]:
    """Download the statements of finished statement jobs into the folder ``destination``.

    Each file is named ``<bill id>.<json|csv>``, under a local path or an ``ObjectStoragePath``;
    a download replaces the file whole (see :mod:`m3ter_provider.core.download`).

    :return: ``[{"bill_id", "format", "destination", "bytes"}...]``.
    :raises M3terConfigError: a job has no URL for a wanted format (CSV not asked when it started).
    """
    from m3ter_provider.core.download import download

    folder = pathlib.Path(destination) if isinstance(destination, str) else destination
    if hasattr(folder, "mkdir"):
        folder.mkdir(parents=True, exist_ok=True)
    files = []
    for job in jobs:
        for name in statement_formats(formats):
            field, suffix = FORMATS[name]
            url = job.get(field)
            if not url:
                raise M3terConfigError(
                    f"{STATEMENT_JOB.title} {job.get('id')} has no {name} statement: "
                    + ("start it with include_csv=True." if name == "CSV" else "it has not finished.")
                )
            done = download(client, str(url), folder / f"{job.get('billId')}.{suffix}")
            files.append({"bill_id": job.get("billId"), "format": name, **done})
    log.info("Downloaded %s to %s.", plural(len(files), "statement file"), destination)
    return files
