"""Operators for batch loads and reconciliation: measurement file uploads and usage queries to a file."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from m3ter_provider.core.jobs import FILE_UPLOAD
from m3ter_provider.core.limits import check_mode, check_wait
from m3ter_provider.errors import M3terAPIError, M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.hooks.permanent import fails_fast
from m3ter_provider.links import M3terConsoleLink, persist_console_link
from m3ter_provider.operators._base import M3terHookMixin, TryRecord, default_deferrable, job_from_event
from m3ter_provider.operators.asset_events import M3terUsageEventsMixin
from m3ter_provider.operators.inputs import as_id_list, measurements_from_value, open_path, parse_rendered
from m3ter_provider.tasks import task_uid_namespace, templated

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

__all__ = ["M3terUploadMeasurementsOperator", "M3terUsageQueryOperator"]


class M3terUploadMeasurementsOperator(M3terUsageEventsMixin, M3terHookMixin, BaseOperator):
    """Send measurements through m3ter's file upload service and wait for the upload jobs.

    m3ter's batch ingest path: one file of up to 1 GiB per upload job, outside the 50 requests/s
    of live REST ingest. The inputs, validation and content uids are those of
    :class:`~m3ter_provider.operators.measurements.M3terSubmitMeasurementsOperator` (a measurement
    without a uid gets one from the task instance and its content); the file is written to a
    temporary file and streamed to m3ter's presigned URL, never with the bearer token.

    **Retries.** Each try records the upload job ids of its files in an Airflow Variable keyed by the
    task instance and the files' content digests (:class:`~m3ter_provider.operators._base.TryRecord`).
    A retry with the same input follows those jobs (running: waits; succeeded: uses them) instead
    of uploading the files again; only a file whose job failed, is unknown, or never received its
    file is uploaded again. A file uploaded twice all the same (the try died before its record
    was written) is ingested once: its measurements carry the same uids, and m3ter ingests a
    re-sent uid once.

    Returns ``{"measurements", "bytes", "files", "job_ids", "status", "total_rows",
    "processed_rows", "failed_rows", "rejected", "duplicates", "rejections"}``.

    :param measurements: the measurements (a list, an XCom). (templated when a string or an XCom)
    :param measurements_file: a JSON Lines, CSV or Parquet file instead (local path, ``ObjectStoragePath``
        or ``scheme://`` URL). (templated)
    :param file_format: ``"jsonl"``, ``"csv"`` or ``"parquet"``; by default from the file's suffix.
    :param column_mapping: CSV and Parquet: ``{column: field}``.
    :param wait_for_completion: wait for the upload jobs (default); else return once uploaded.
    :param poll_interval: seconds between two polls of a job.
    :param timeout: seconds to wait for a job at most (``None``: no limit).
    :param deferrable: hand the wait to the triggerer (default ``[operators] default_deferrable``).
    :param check_ingest_failures: ``"off"`` (default), ``"warn"`` or ``"fail"``: rows the jobs
        counted as failed, and the ``ingest.validation.failure`` Events of the uploaded uids (after a
        deferral the input is read once more to derive them again).
    :param ingest_failures_wait: seconds to keep reading failure Events.
    :param bool emit_asset_events: once the upload jobs are done (with ``wait_for_completion``; none
        without it), emit one asset event per Meter, ``m3ter://<org id>/meters/<meter code>``, through
        the ``m3ter/usage`` alias outlet, with ``extra`` ``{"measurements", "first_ts", "last_ts",
        "uid_namespace", "rejected"}``, as the submit operator does. Default True.
    :param m3ter_conn_id: the m3ter connection id.
    """

    template_fields: Sequence[str] = ("measurements", "measurements_file")
    operator_extra_links = (M3terConsoleLink(),)

    def __init__(
        self,
        *,
        measurements: Any = None,
        measurements_file: Any = None,
        file_format: str | None = None,
        column_mapping: dict[str, str] | None = None,
        wait_for_completion: bool = True,
        poll_interval: float = 5.0,
        timeout: float | None = None,
        deferrable: bool | None = None,
        check_ingest_failures: str = "off",
        ingest_failures_wait: float = 60.0,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (measurements is None) == (measurements_file is None):
            raise M3terConfigError(
                "give exactly one of measurements (a list or an XCom) or measurements_file (a path)."
            )
        if poll_interval <= 0:
            raise M3terConfigError(
                f"poll_interval must be a positive number of seconds, not {poll_interval!r}."
            )
        if timeout is not None and timeout <= 0:
            raise M3terConfigError(f"timeout must be a positive number of seconds or None, not {timeout!r}.")
        self.measurements = measurements
        self.measurements_file = measurements_file
        self.file_format = file_format
        self.column_mapping = column_mapping
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.check_ingest_failures = check_mode(check_ingest_failures)
        self.ingest_failures_wait = check_wait(ingest_failures_wait)
        self.m3ter_conn_id = m3ter_conn_id

    def _source(self) -> Any:
        from m3ter_provider.core.ingest import MeasurementFile

        if self.measurements_file is not None:
            return MeasurementFile(open_path(self.measurements_file), self.file_format, self.column_mapping)
        return measurements_from_value(self.measurements)

    def _reusable(self, job_id: str) -> bool:
        """Whether an earlier try's job can stand for its file (running or succeeded)."""
        try:
            job = self.hook.get_job(FILE_UPLOAD, job_id)
        except M3terAPIError as exc:
            if exc.status == 404:
                return False
            raise
        return FILE_UPLOAD.status(job) in ("running", "succeeded")

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from m3ter_provider.core.ingest.upload import prepare, start_upload

        persist_console_link(context, self.hook.console_url)
        source = self._source()
        tally = self.tally_meters(source)
        checked_from = dt.datetime.now(dt.timezone.utc).isoformat()  # the failure Events' window
        with prepare(tally, uid_namespace=task_uid_namespace(context, self.measurements_file)) as batch:
            # per Meter, read while the files were written (kept across a deferral)
            meters = tally.summary() if tally is not source else None
            record = TryRecord(context, FILE_UPLOAD, [f.digest for f in batch.files])
            earlier = [i for i in (record.get() or "").split(",") if i]
            job_ids: list[str] = []
            for index, upload in enumerate(batch.files):
                job_id = earlier[index] if index < len(earlier) else None
                if job_id and self._reusable(job_id):
                    self.log.info(
                        "File %d was uploaded by an earlier try as job %s: not again.", index + 1, job_id
                    )
                else:
                    job_id = start_upload(self.hook.client, upload)
                job_ids.append(job_id)
                record.set(",".join(job_ids))
            base = {"measurements": batch.measurements, "bytes": batch.bytes, "files": len(batch.files)}
            if self.wait_for_completion and self.deferrable:
                return self._wait_deferred(context, job_ids, base, meters, checked_from)
            jobs = [
                self.hook.wait_for_job(
                    FILE_UPLOAD, job_id, poll_interval=self.poll_interval, timeout=self.timeout
                )
                if self.wait_for_completion
                else self.hook.get_job(FILE_UPLOAD, job_id)
                for job_id in job_ids
            ]
            extra: dict[str, Any] = {}
            if self.check_ingest_failures != "off" and self.wait_for_completion:
                from m3ter_provider.core.ingest.failures import spool_checker

                check = spool_checker(
                    self.hook.client,
                    mode=self.check_ingest_failures,
                    wait=self.ingest_failures_wait,
                    logger=self.log,
                )
                extra = check(batch.spool)
        result = self._finish(jobs, base, extra)
        if self.wait_for_completion:
            self._emit(context, meters, result)
        record.delete()
        return result

    def _finish(
        self, jobs: list[dict[str, Any]], base: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any]:
        from m3ter_provider.core.ingest.upload import report_failed_rows, summarize

        result = {**base, **summarize(jobs), "rejected": None, "duplicates": None, "rejections": []}
        result.update(extra)
        report_failed_rows(result, self.check_ingest_failures, self.log)
        return result

    def _emit(self, context: Context, meters: dict[str, Any] | None, result: dict[str, Any]) -> None:
        """The usage asset events, once the upload jobs are done."""
        if meters is not None:
            self.emit_usage_events(
                context,
                meters,
                uid_namespace=task_uid_namespace(context, self.measurements_file),
                rejected=result.get("rejected"),
            )

    def _wait_deferred(
        self,
        context: Context,
        job_ids: list[str],
        base: dict[str, Any],
        meters: dict[str, Any] | None = None,
        checked_from: str | None = None,
    ) -> dict[str, Any]:
        """Defer on the first upload job still running; finish once none is."""
        jobs = []
        for job_id in job_ids:
            job = self.hook.get_job(FILE_UPLOAD, job_id)
            outcome = FILE_UPLOAD.outcome(job)
            if outcome == "failed":
                raise FILE_UPLOAD.failed_error(job_id, job)
            if outcome == "running":
                from m3ter_provider.triggers.m3ter import M3terJobTrigger

                self.log.info("Deferring: the triggerer waits for m3ter file upload job %s.", job_id)
                self.defer(
                    trigger=M3terJobTrigger(
                        kind=FILE_UPLOAD.name,
                        job_id=job_id,
                        m3ter_conn_id=self.m3ter_conn_id,
                        poll_interval=self.poll_interval,
                        end_time=None if self.timeout is None else time.time() + self.timeout,
                    ),
                    method_name="execute_complete",
                    kwargs={"job_ids": job_ids, "base": base, "meters": meters, "checked_from": checked_from},
                )
            jobs.append(job)
        result = self._finish(jobs, base, self._check_after_deferral(context, checked_from))
        self._emit(context, meters, result)
        TryRecord(context, FILE_UPLOAD).delete()
        return result

    @fails_fast
    def execute_complete(
        self,
        context: Context,
        event: dict[str, Any] | None = None,
        job_ids: list[str] | None = None,
        base: dict[str, Any] | None = None,
        meters: dict[str, Any] | None = None,
        checked_from: str | None = None,
    ) -> dict[str, Any]:
        """Resume after the trigger fired: fail with its message, or wait for the next job."""
        job_from_event(event, FILE_UPLOAD)
        return self._wait_deferred(context, list(job_ids or []), dict(base or {}), meters, checked_from)

    def _check_after_deferral(self, context: Context, checked_from: str | None) -> dict[str, Any]:
        """``check_ingest_failures`` once the deferred jobs are done: the spool of uids did not cross
        the deferral, so the uids are derived again from the same input (one more read of it; the
        namespace and the content fix them), and the window starts before the first upload."""
        if self.check_ingest_failures == "off" or checked_from is None:
            return {}
        from m3ter_provider.core.ingest.failures import ClientEvents, check_ingest_failures
        from m3ter_provider.core.ingest.upload import prepare

        self.log.info("Reading the input again for its uids, to check m3ter's ingest failure Events.")
        with prepare(
            self._source(), uid_namespace=task_uid_namespace(context, self.measurements_file)
        ) as batch:
            return check_ingest_failures(
                ClientEvents(self.hook.client),
                uids=batch.spool,
                start=dt.datetime.fromisoformat(checked_from),
                mode=self.check_ingest_failures,
                wait=self.ingest_failures_wait,
                logger=self.log,
            )


class M3terUsageQueryOperator(M3terHookMixin, BaseOperator):
    """Run a Data Explorer usage query over any time range and write the result to a file.

    The range is split until every part is complete (m3ter answers at most 20,000 items per query,
    newest first), calls are paced under m3ter's usage query limit (2 per second, burst 20), and the
    items are written to ``destination`` as JSON Lines, CSV or Parquet (pyarrow). XCom gets
    ``{"destination", "format", "rows", "requests", "parts", "start", "end"}``, never the rows.

    :param destination: a local path, an ``ObjectStoragePath`` or a ``scheme://`` URL. (templated)
    :param query_start: start of the range (inclusive): an RFC 3339 date-time, a timezone-aware
        datetime or a date such as ``"{{ ds }}"`` (midnight UTC). (templated)
    :param query_end: end of the range (exclusive), as above. (templated)
    :param meter_ids: Meter ids (a list or comma-separated). (templated)
    :param account_ids: Account ids. (templated)
    :param aggregations: ``[{"meterId", "fieldCode", "fieldType", "function"}]``. (templated)
    :param groups: ``[{"groupType": "ACCOUNT"}]``, ``DIMENSION`` (``meterId``, ``fieldCode``) or
        ``TIME`` (``frequency``). (templated)
    :param dimension_filters: ``[{"meterId", "fieldCode", "values": [...]}]``. (templated)
    :param limit: items per query (1 to 20,000).
    :param file_format: ``"jsonl"``, ``"csv"`` or ``"parquet"``; by default from the suffix.
    :param m3ter_conn_id: the m3ter connection id.
    """

    template_fields: Sequence[str] = (
        "destination",
        "query_start",
        "query_end",
        "meter_ids",
        "account_ids",
        "aggregations",
        "groups",
        "dimension_filters",
    )

    def __init__(
        self,
        *,
        destination: Any,
        query_start: Any,
        query_end: Any,
        meter_ids: Any = None,
        account_ids: Any = None,
        aggregations: Any = None,
        groups: Any = None,
        dimension_filters: Any = None,
        limit: int = 20_000,
        file_format: str | None = None,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.query_start = query_start
        self.query_end = query_end
        self.meter_ids = meter_ids
        self.account_ids = account_ids
        self.aggregations = aggregations
        self.groups = groups
        self.dimension_filters = dimension_filters
        self.limit = limit
        self.file_format = file_format
        self.m3ter_conn_id = m3ter_conn_id
        values = (query_start, query_end, meter_ids, account_ids, aggregations, groups, dimension_filters)
        if not templated(*values, destination):
            self._query()  # now, so a DAG with a bad query fails to load
            from m3ter_provider.core.usage_query import file_format_of

            file_format_of(destination, file_format)

    def _query(self) -> dict[str, Any]:
        from m3ter_provider.core.usage_query import query_body

        query = dict(
            start=self.query_start,
            end=self.query_end,
            meter_ids=as_id_list(self.meter_ids, "meter_ids"),
            account_ids=as_id_list(self.account_ids, "account_ids"),
            aggregations=parse_rendered(self.aggregations, "aggregations"),
            groups=parse_rendered(self.groups, "groups"),
            dimension_filters=parse_rendered(self.dimension_filters, "dimension_filters"),
            limit=self.limit,
        )
        try:
            query_body(**query)
        except M3terConfigError as exc:
            text = str(exc).replace("end ", "query_end ", 1) if str(exc).startswith("end") else str(exc)
            raise M3terConfigError(
                text.replace("start ", "query_start ", 1) if text.startswith("start") else text
            ) from None
        return query

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        persist_console_link(context, self.hook.console_url)
        return self.hook.query_usage(
            open_path(self.destination), file_format=self.file_format, **self._query()
        )
