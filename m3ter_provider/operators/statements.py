"""M3terStatementsOperator: statements of m3ter Bills, produced and downloaded to a folder."""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from m3ter_provider.core.jobs import STATEMENT_JOB
from m3ter_provider.errors import M3terAPIError, M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.hooks.permanent import fails_fast
from m3ter_provider.operators._base import M3terHookMixin, TryRecord, default_deferrable, job_from_event
from m3ter_provider.operators.asset_events import M3terAssetEventsMixin, capped_ids
from m3ter_provider.operators.inputs import as_id_list, open_path
from m3ter_provider.tasks import templated

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

STATE_KEY = "m3ter_statement_jobs"
FORMATS = ("JSON", "CSV")  # as core.statements.FORMATS: m3ter's API offers no HTML statement


class M3terStatementsOperator(M3terAssetEventsMixin, M3terHookMixin, BaseOperator):
    """Produce the statements of m3ter Bills and download them as ``<destination>/<bill id>.<json|csv>``.

    One statement job per Bill (started by 10 with ``statementjobs/batch``), waited for, then each
    statement file fetched from its presigned URL (the bearer token is never sent there) to a
    local folder or an ``ObjectStoragePath``. Returns ``{"statement_job_ids": [...], "files":
    [{"bill_id", "format", "destination", "bytes"}...]}``.

    A retry does not start the statement jobs again: the ids a try started are kept where they
    survive the retry (Airflow 3.3+: the task state store; below 3.3: an Airflow Variable per task
    instance, deleted when the task succeeds, as the bill job operator does), and the retry follows
    them; only a Bill whose job failed or is unknown to m3ter gets a new one. With ``deferrable``
    the triggerer waits for each job still running (the task resumes, follows its recorded jobs and
    defers again on the next one, or downloads once all are done).

    :param bill_ids: the Bill ids (a list, an XCom, or comma-separated). (templated)
    :param destination: the folder for the files: a path, an ``ObjectStoragePath`` or a
        ``scheme://`` URL. (templated)
    :param formats: ``["JSON"]`` (default), ``["CSV"]`` or both.
    :param poll_interval: seconds between two polls of a statement job.
    :param timeout: seconds to wait at most for each job (``None``: no limit).
    :param deferrable: hand the waiting to the triggerer (default ``[operators] default_deferrable``).
    :param bool emit_asset_events: when statement files were produced, emit an asset event for
        ``m3ter://<org id>/statements`` through the ``m3ter/statements`` alias outlet, ``extra``
        ``{"statements", "bill_count", "formats", "destination", "statement_job_ids"}`` (files
        written, Bills, the formats, the folder, the first 20 job ids); none without Bills. Default True.
    :param m3ter_conn_id: the m3ter connection id.
    """

    asset_event_kind = "statements"
    template_fields: Sequence[str] = ("bill_ids", "destination")

    def __init__(
        self,
        *,
        bill_ids: Any,
        destination: Any,
        formats: Sequence[str] = ("JSON",),
        poll_interval: float = 5.0,
        timeout: float | None = 3600.0,
        deferrable: bool | None = None,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        chosen = [str(f).strip().upper() for f in ([formats] if isinstance(formats, str) else formats)]
        bad = [f for f in chosen if f not in FORMATS]
        if bad or not chosen:
            raise M3terConfigError(
                f"formats {formats!r}: use JSON and/or CSV (m3ter's API offers no HTML statement)."
            )
        if poll_interval <= 0:
            raise M3terConfigError(
                f"poll_interval must be a positive number of seconds, not {poll_interval!r}."
            )
        if not destination:
            raise M3terConfigError("destination is required: the folder for the statement files.")
        if not templated(bill_ids):
            as_id_list(bill_ids, "bill_ids")
        self.bill_ids = bill_ids
        self.destination = destination
        self.formats = chosen
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.m3ter_conn_id = m3ter_conn_id

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        bill_ids = as_id_list(self.bill_ids, "bill_ids") or []
        if not bill_ids:
            self.log.info("No Bills: no statements to produce.")
            return {"statement_job_ids": [], "files": []}
        record = _JobIds(context, {"bill_ids": bill_ids, "formats": self.formats})
        jobs = self._follow_or_start(bill_ids, record)
        if self.deferrable:
            finished = [self._final_or_defer(job) for job in jobs]
        else:
            finished = [
                self.hook.wait_for_job(
                    STATEMENT_JOB, job["id"], poll_interval=self.poll_interval, timeout=self.timeout
                )
                for job in jobs
            ]
        files = self.hook.download_statements(finished, open_path(self.destination), self.formats)
        record.forget()
        job_ids = [job["id"] for job in finished]
        if files:
            from m3ter_provider.assets import statements_asset

            extra = {
                "statements": len(files),
                "bill_count": len(bill_ids),
                "formats": list(self.formats),
                "destination": str(self.destination),
                "statement_job_ids": capped_ids(job_ids),
            }
            self.emit_asset_event(context, statements_asset(self.hook.org_id), extra)
        return {"statement_job_ids": job_ids, "files": files}

    @fails_fast
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """A job the triggerer waited for is final: fail with its message, or carry on (the recorded
        jobs are followed, not started again)."""
        job_from_event(event, STATEMENT_JOB)
        return self.execute(context)

    def _final_or_defer(self, job: dict[str, Any]) -> dict[str, Any]:
        current = self.hook.get_job(STATEMENT_JOB, job["id"])
        outcome = STATEMENT_JOB.outcome(current)
        if outcome == "failed":
            raise STATEMENT_JOB.failed_error(job["id"], current)
        if outcome == "running":
            from m3ter_provider.triggers.m3ter import M3terJobTrigger  # loads pydantic: only here

            self.log.info("Deferring: the triggerer waits for m3ter statement job %s.", job["id"])
            self.defer(
                trigger=M3terJobTrigger(
                    kind=STATEMENT_JOB.name,
                    job_id=job["id"],
                    m3ter_conn_id=self.m3ter_conn_id,
                    poll_interval=self.poll_interval,
                    end_time=None if self.timeout is None else time.time() + self.timeout,
                    cancel_on_kill=True,
                ),
                method_name="execute_complete",
            )
        return current

    def _follow_or_start(self, bill_ids: list[str], record: _JobIds) -> list[dict[str, Any]]:
        """The jobs an earlier try started and still good, plus new ones for the other Bills."""
        by_bill: dict[str, dict[str, Any]] = {}
        for job_id in record.get():
            try:
                job = self.hook.get_job(STATEMENT_JOB, job_id)
            except M3terAPIError as exc:
                if exc.status != 404:
                    raise
                continue
            if STATEMENT_JOB.outcome(job) != "failed" and job.get("billId") in bill_ids:
                by_bill[str(job["billId"])] = job
        if by_bill:
            self.log.info(
                "Following %d statement job(s) an earlier try started: not started again.", len(by_bill)
            )
        missing = [bill_id for bill_id in bill_ids if bill_id not in by_bill]
        if missing:
            for job in self.hook.start_statement_jobs(missing, include_csv="CSV" in self.formats):
                by_bill[str(job["billId"])] = job
            record.set([str(by_bill[b]["id"]) for b in bill_ids])  # right after m3ter answered
        return [by_bill[bill_id] for bill_id in bill_ids]


class _JobIds:
    """The statement job ids of this task instance, kept across its tries (see the class docstring)."""

    def __init__(self, context: Context, request: Any) -> None:
        # Airflow 3.3's task state store (typed differently, or not at all, by each Airflow: Any)
        self.store: Any = context.get("task_state_store")
        self.fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        self.variable = None if self.store is not None else TryRecord(context, STATEMENT_JOB, request)

    def get(self) -> list[str]:
        if self.variable is not None:
            text = self.variable.get()
            return [part for part in (text or "").split(",") if part]
        assert self.store is not None  # no Variable: the task state store holds the ids
        saved: Any = self.store.get(STATE_KEY, None)
        if isinstance(saved, str):
            try:
                saved = json.loads(saved)
            except ValueError:
                saved = None
        if not isinstance(saved, dict) or saved.get("request") != self.fingerprint:
            return []
        return [str(i) for i in saved.get("job_ids") or []]

    def set(self, job_ids: list[str]) -> None:
        if self.variable is not None:
            self.variable.set(",".join(job_ids))
        else:
            assert self.store is not None
            self.store.set(STATE_KEY, json.dumps({"request": self.fingerprint, "job_ids": job_ids}))

    def forget(self) -> None:
        if self.variable is not None:
            self.variable.delete()
