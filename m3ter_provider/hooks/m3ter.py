"""M3terHook: the Airflow face of the m3ter API client."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.metadata
import importlib.util
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook

from m3ter_provider import __version__
from m3ter_provider._compat import mask_secret
from m3ter_provider.core import jobs
from m3ter_provider.core.limits import DEFAULT_INGEST_CONCURRENCY
from m3ter_provider.errors import M3terError
from m3ter_provider.hooks.permanent import fails_fast, permanent_errors_fail_the_task

if TYPE_CHECKING:
    # requests, the client and what it loads wait until a task makes a call: DAG files import this
    # module at every parse
    import datetime as dt
    from collections.abc import Iterable, Iterator, Mapping

    import m3ter  # the optional extra 'sdk'

    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.config import M3terSettings
    from m3ter_provider.core.download import Destination
    from m3ter_provider.core.jobs import JobKind


@functools.cache
def _user_agent() -> str:
    """The same for the whole process: read the installed versions once."""
    import requests

    try:
        airflow_version = importlib.metadata.version("apache-airflow")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - airflow-core only installs
        airflow_version = importlib.metadata.version("apache-airflow-core")
    return (
        f"airflow-provider-m3ter/{__version__} apache-airflow/{airflow_version} "
        f"python-requests/{requests.__version__}"
    )


class M3terHook(BaseHook):
    """Talk to the m3ter API with a Service User's credentials from an Airflow connection.

    The connection's ``login`` is the Access Key id, ``password`` the Api Secret, ``host`` the API
    URL (default ``https://api.m3ter.com``) and ``extra`` holds ``org_id`` (required) and the
    optional ``ingest_url``, ``token_url``, ``console_url``, ``timeout`` and ``max_retries``.

    Bearer tokens are cached per credential set for the whole process, exchanged by one thread at
    a time and refreshed ahead of expiry; the Api Secret and every token are masked in logs.

    :param m3ter_conn_id: the Airflow connection id.
    """

    conn_name_attr = "m3ter_conn_id"
    default_conn_name = "m3ter_default"
    conn_type = "m3ter"
    hook_name = "m3ter"

    def __init__(self, m3ter_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.m3ter_conn_id = m3ter_conn_id

    def __repr__(self) -> str:
        return f"M3terHook(m3ter_conn_id={self.m3ter_conn_id!r})"

    # ---------------------------------------------------------------- connection
    @cached_property
    def settings(self) -> M3terSettings:
        """The connection's validated settings (read once per hook)."""
        return self._settings_from(self.get_connection(self.m3ter_conn_id))

    def _settings_from(self, conn: Any, label: str | None = None) -> M3terSettings:
        from m3ter_provider.core.config import M3terSettings

        if conn.password:
            mask_secret(conn.password)
        return M3terSettings.from_connection_fields(
            self.m3ter_conn_id,
            login=conn.login,
            password=conn.password,
            host=conn.host,
            port=conn.port,
            schema=conn.schema,
            extra=conn.extra_dejson,
            label=label,
        )

    def get_conn(self) -> M3terClient:
        """The hook's :class:`~m3ter_provider.core.client.M3terClient` (one keep-alive session per hook)."""
        return self.client

    @cached_property
    def client(self) -> M3terClient:
        from m3ter_provider.core.client import M3terClient
        from m3ter_provider.hooks._shared_tokens import configured_directory, share_tokens_between_processes

        share_tokens_between_processes()  # [m3ter] token_cache_dir
        return M3terClient(
            self.settings,
            user_agent=_user_agent(),
            on_secret=mask_secret,
            # the task processes of a worker share one ingest pace where they share tokens
            pace_directory=configured_directory() or None,
        )

    @property
    def org_id(self) -> str:
        return self.settings.org_id

    @property
    def console_url(self) -> str:
        return self.settings.console_url

    # ---------------------------------------------------------------- calls
    @fails_fast
    def get_token(self) -> str:
        """The current bearer token, exchanging the credentials only when needed."""
        return self.client.get_token()

    @fails_fast
    def get_sdk_client(self) -> m3ter.M3ter:
        """The official SDK's ``m3ter.M3ter`` client, sending this hook's cached token.

        Its typed endpoints use the connection's URLs, timeout and ``max_retries``, and the same
        token as the hook (no exchange per call); a refused token is exchanged once, as the hook does.
        Needs the optional extra: ``pip install 'airflow-provider-m3ter[sdk]'``.
        """
        from m3ter_provider.core.sdk import sdk_client

        return sdk_client(self.client)

    @fails_fast
    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Make an authenticated call and return its decoded JSON (``None`` for an empty body).

        :param method: HTTP method.
        :param path: relative to the Organization (``"accounts/123"``), or from the API root when it
            starts with ``/`` (``"/organizations/<org>/accounts"``).
        :param params: query parameters; lists are sent comma-separated.
        :param json: the JSON body.
        :param idempotent: whether retrying after an ambiguous failure is safe (default: GET, PUT
            and DELETE are; a POST is retried only where m3ter did not process it).
        """
        return self.client.request(method, path, params=params, json=json, idempotent=idempotent)

    def get(self, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        return self.request("GET", path, params=params, json=json)

    def post(self, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        return self.request("POST", path, params=params, json=json)

    def put(self, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        return self.request("PUT", path, params=params, json=json)

    def delete(self, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None) -> Any:
        return self.request("DELETE", path, params=params, json=json)

    def paginate(
        self, path: str, *, params: Mapping[str, Any] | None = None, page_size: int | None = None
    ) -> Iterator[Any]:
        """Yield every item of a list endpoint lazily across ``nextToken`` pages.

        :param page_size: m3ter's ``pageSize`` (each endpoint has a maximum, usually 100 or 200).
        """
        with permanent_errors_fail_the_task():
            yield from self.client.paginate(path, params=params, page_size=page_size)

    @fails_fast
    def submit_measurements(
        self,
        measurements: Iterable[Mapping[str, Any]] | Any,
        *,
        uid_namespace: str | None = None,
        concurrency: int = DEFAULT_INGEST_CONCURRENCY,
        check_ingest_failures: str = "off",
        ingest_failures_wait: float = 60.0,
        max_requests_per_second: float | None = None,
    ) -> dict[str, Any]:
        """Validate, then post measurements to the ingest API within m3ter's limits, each counted once.

        Every measurement is checked first against m3ter's schema (``account``, ``meter``, ``ts``
        required; codes up to 80 characters, ``uid`` up to 50; RFC 3339 date-times with an offset;
        string and number maps); nothing is sent if one is bad, nor if the input gives one ``uid``
        to two measurements of different content. Rows are converted as they are pulled, so a
        generator may yield one dict again and again, changed in between. The encoded batches (at
        most 1,000 measurements, under 512,000 bytes each) wait in a temporary file, so memory stays
        flat.

        Every measurement sent has a uid. One without gets a uid derived from the namespace, its
        content and its occurrence among identical rows (never its position), so a re-run with the
        same namespace, rows reordered or added, re-sends the same uids and m3ter counts each once.
        A changed value is new content: m3ter keeps both rows (send a compensating measurement to
        correct one). The namespace, and the log line saying which one a call used:

        - **from the task instance**: called inside a running Airflow task without
          ``uid_namespace``, the call derives it from the task instance (dag id, task id, run id,
          map index) as :class:`~m3ter_provider.operators.measurements.M3terSubmitMeasurementsOperator`
          does, so an Airflow retry or a cleared task re-sends the same uids. **Several calls in one
          task** are several submissions: the nth call of a task try (counted in the task's
          process) takes the task's namespace with ``#n`` appended (none for the first), so
          identical rows in two calls are two events, and the nth call of a retry maps onto the
          nth call of the first try. Keep the calls in the same order on every try; calls from
          several threads of one task have no stable order: give each its own ``uid_namespace``.
        - **given**: ``uid_namespace`` is used exactly as given (resume a partial failure with the
          one :class:`~m3ter_provider.errors.M3terIngestError` names). Given again for another call
          of the same task try (or, outside a task, of this process), identical rows of the two
          calls get the same uids and m3ter stores them once: a warning says so.
        - **random: outside a task** (a script, a notebook): a namespace of the call's own; its own
          retries are safe, a second call with the same rows is not (give a namespace).

        Permanent errors (refused credentials, a bad connection, invalid measurements, 4xx answers
        other than 408/409/425/429) are raised as classes that are also ``AirflowFailException``:
        the task fails without spending its retries. Transient ones keep them.

        :param measurements: an iterable of dicts (a list, a generator), or a JSON Lines or CSV file
            (``pathlib.Path``, ``ObjectStoragePath``, ``m3ter_provider.core.ingest.MeasurementFile``).
        :param uid_namespace: fixes the derived uids; default: the running task instance's (see above).
        :param concurrency: batches in flight at once (1 to 10, default 4).
        :param check_ingest_failures: m3ter answers 200 for a batch and validates its measurements
            afterwards (an unknown Meter, a missing Data Field...), recording refusals as
            ``ingest.validation.failure`` Events. ``"off"`` (default) trusts the 200s; ``"warn"``
            or ``"fail"`` read those Events for this call's uids for up to
            ``ingest_failures_wait`` seconds and log, or raise, the count and the first reasons.
        :param ingest_failures_wait: seconds to keep reading failures (``"fail"``: the first found
            end the wait); finite, at most an hour.
        :param max_requests_per_second: this call's most ingest requests per second. The requests
            are paced at this machine's share of the connection's ``ingest_rate`` (default 45/s, the
            Organization's 50 less headroom) divided by ``ingest_machines``, and at most 5,000 per 5
            minutes (m3ter's per-IP limit); this lowers that pace, never raises it. See the
            operators' guide.
        :return: ``{"measurements": n, "requests": k, "bytes": b, "uid_namespace": ns}``, plus
            ``rejected`` (None when not checked), ``duplicates`` and ``rejections`` (the first few).
        :raises M3terIngestError: anything failed part-way: it names how many measurements and
            batches m3ter accepted and the namespace; re-run with it to send the rest.
        """
        from m3ter_provider.core.ingest.tally import MeterTally
        from m3ter_provider.hooks._namespaces import namespace_for_call

        namespace, source, warning = namespace_for_call(uid_namespace)
        if warning:
            self.log.warning("%s", warning)
        self.log.info("Measurement uids derive from namespace %s (%s).", namespace, source)
        # counted per Meter as the ingest reads them, for hook lineage (and the operator's asset events)
        tally = measurements if isinstance(measurements, MeterTally) else MeterTally(measurements)
        summary = self.client.submit_measurements(
            tally,
            uid_namespace=namespace,
            concurrency=concurrency,
            check_ingest_failures=check_ingest_failures,
            ingest_failures_wait=ingest_failures_wait,
            logger=self.log,
            max_requests_per_second=max_requests_per_second,
        )
        summary["uid_namespace"] = namespace
        self._report_ingest_lineage(tally)
        return summary

    def _report_ingest_lineage(self, tally: Any) -> None:
        """Hook lineage of a submission: the file read (if any) in, each Meter sent to out."""
        from m3ter_provider.hooks import lineage

        if lineage.is_file_source(tally):
            lineage.report_file(self, "input", tally)
        for meter in tally.summary():
            lineage.report_m3ter(self, "output", "meters", meter)

    # ---------------------------------------------------------------- long-running jobs
    @fails_fast
    def get_job(self, kind: str | JobKind, job_id: str) -> dict[str, Any]:
        """Read one job of ``kind``: ``"dataexport"``, ``"billjob"``, ``"statementjob"``, ``"fileupload"``."""
        return jobs.get_job(self.client, kind, job_id)

    @fails_fast
    def wait_for_job(
        self, kind: str | JobKind, job_id: str, *, poll_interval: float = 10.0, timeout: float | None = None
    ) -> dict[str, Any]:
        """Poll a job until it is final and return it.

        :raises M3terJobFailedError: the job failed or was cancelled (message names id and status).
        :raises M3terJobTimeoutError: it was not final after ``timeout`` seconds.
        """
        return jobs.wait_for_job(self.client, kind, job_id, poll_interval=poll_interval, timeout=timeout)

    @fails_fast
    def cancel_job(self, kind: str | JobKind, job_id: str) -> Any:
        """Cancel a bill job or statement job."""
        return jobs.cancel_job(self.client, kind, job_id)

    @fails_fast
    def start_data_export(self, source_type: str, **kwargs: Any) -> str:
        """Start an ad-hoc data export and return its job id.

        :param source_type: ``"USAGE"`` (needs ``start_date``, ``end_date``; optional ``meter_ids``,
            ``account_ids``, ``aggregations``, ``groups``) or ``"OPERATIONAL"`` (needs
            ``operational_data_types``). Also ``export_file_format`` (``"CSV"`` or ``"JSONL"``) and
            ``destination_ids``. See :func:`m3ter_provider.core.jobs.data_export_body`.
        """
        return jobs.start_data_export(self.client, source_type, **kwargs)

    @fails_fast
    def get_export_download_url(self, job_id: str) -> dict[str, Any]:
        """A presigned download URL for a finished export (``{"url", "expirationTime"}``, valid 15 min)."""
        return jobs.export_download_url(self.client, job_id)

    @fails_fast
    def download(self, url: str, destination: Destination, *, export_name: str = "adhoc") -> dict[str, Any]:
        """Stream a presigned URL to a local path or an ``ObjectStoragePath``; never sends the token there.

        Reports hook lineage: ``m3ter://<org id>/exports/<export_name>`` in, the file out.

        :param export_name: the export's schedule id or kind (``usage``, ``operational``), for lineage.
        :return: ``{"destination": str, "bytes": n}``.
        """
        from m3ter_provider.core.download import download
        from m3ter_provider.hooks import lineage

        result = download(self.client, url, destination)
        lineage.report_m3ter(self, "input", "exports", export_name)
        lineage.report_file(self, "output", destination)
        return result

    def paginate_to_file(
        self,
        path: str,
        destination: Any,
        *,
        params: Mapping[str, Any] | None = None,
        page_size: int | None = None,
    ) -> dict[str, Any]:
        """Stream every item of a list endpoint to a file as JSON Lines, one page in memory at a time.

        The file is written under a temporary name and renamed into place when complete. Reports
        hook lineage: the collection in (``m3ter://<org id>/accounts``, ``bills``, ``statements``;
        other paths report none), the file out.

        :param path: the list endpoint (``"accounts"``).
        :param destination: a local path or an ``ObjectStoragePath``.
        :return: ``{"path": str, "items": n, "bytes": b}``.
        """
        from m3ter_provider.assets import COLLECTION_KINDS
        from m3ter_provider.core.results import write_json_lines
        from m3ter_provider.hooks import lineage

        result = write_json_lines(self.paginate(path, params=params, page_size=page_size), destination)
        kind = path.strip("/").split("/")[0].split("?")[0]
        if kind in COLLECTION_KINDS and "/" not in path.strip("/"):
            lineage.report_m3ter(self, "input", kind)
        lineage.report_file(self, "output", destination)
        return result

    def test_connection(self) -> tuple[bool, str]:
        """Exchange the credentials and read the Organization's config; say which step failed.

        Messages speak of "this connection" and its fields: Airflow's UI tests a form under a
        throwaway id the user never chose. A refusal right after the exchange is reported as an org
        id or permission problem, without a second exchange.
        """
        try:
            settings = self._settings_from(self.get_connection(self.m3ter_conn_id), label="this connection")
        except M3terError as exc:
            text = str(exc)  # "this connection: extra 'org_id' is missing: ..."
            return False, text[:1].upper() + text[1:]
        except Exception as exc:
            return False, f"Could not read this connection: {type(exc).__name__}: {exc}"
        from m3ter_provider.core.client import M3terClient
        from m3ter_provider.core.tokens.cache import TokenCache

        # A private token cache: the test costs exactly one exchange, and a refusal (a wrong org id)
        # never drops the process-wide token other hooks with the same credentials are using.
        client = M3terClient(
            settings, user_agent=_user_agent(), on_secret=mask_secret, token_cache=TokenCache()
        )
        try:
            try:
                client.get_token()
            except M3terError as exc:
                return False, f"Token exchange at {settings.token_url} failed: {exc}"
            try:
                client.request("GET", "organizationconfig")
            except M3terError as exc:
                return False, f"Credentials accepted, but reading the Organization failed: {exc}"
        finally:
            client.close()
        return True, (
            f"Connected to m3ter organization {settings.org_id!r} at {settings.api_url} "
            f"as access key {settings.access_key_id!r}."
        )

    # ---------------------------------------------------------------- connection form
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form, for Airflow before 3.2 (3.2+ reads ``conn-fields``).

        Built from the same ``conn-fields`` declaration, so both forms show the same labels and help.
        The Organization id gets no required validator here: Airflow 2's form validates every
        connection type's extra fields on each save, so it is marked in its label instead.
        """
        from wtforms import IntegerField, StringField
        from wtforms.validators import NumberRange, Optional

        from m3ter_provider import _CONN_FIELDS

        widget = {}
        if importlib.util.find_spec("flask_appbuilder") is not None:
            from flask_appbuilder.fieldwidgets import BS3TextFieldWidget

            widget = {"widget": BS3TextFieldWidget()}
        fields: dict[str, Any] = {}
        for name, spec in _CONN_FIELDS.items():
            schema = spec["schema"]
            kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            label = spec["label"] + ("" if "null" in kinds else " (required)")
            if "string" in kinds:
                fields[name] = StringField(label, description=spec["description"], **widget)
                continue
            # Airflow 2 accepts only String, Password, Integer and Boolean fields: whole seconds here
            fields[name] = IntegerField(
                label,
                validators=[Optional(), NumberRange(min=schema.get("minimum"))],
                description=spec["description"],
                **widget,
            )
        return fields

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Field labels and placeholders of the connection form, for Airflow before 3.2."""
        from m3ter_provider import _UI_FIELD_BEHAVIOUR

        return {
            "hidden_fields": _UI_FIELD_BEHAVIOUR["hidden-fields"],
            "relabeling": _UI_FIELD_BEHAVIOUR["relabeling"],
            "placeholders": _UI_FIELD_BEHAVIOUR["placeholders"],
        }

    # ---------------------------------------------------------------- async (triggers)
    async def aget_client(self, *, request_timeout: float | None = None) -> M3terClient:
        """The hook's client, reading the connection without blocking the event loop.

        On Airflow 3 the connection comes from ``aget_connection`` (the task SDK's async path; a
        sync read from the triggerer's event loop can deadlock); on Airflow 2 it is read on a
        worker thread. The settings are cached on the hook, so ``client`` and ``settings`` work after.

        :param request_timeout: wait at most this many seconds for each request (a trigger's polls),
            or the connection's ``timeout`` if that is shorter.
        """
        if "settings" not in self.__dict__:
            aget_connection = getattr(self, "aget_connection", None)
            if aget_connection is not None:
                conn = await aget_connection(self.m3ter_conn_id)
            else:  # no async connection API (Airflow 2.x, 3.0)
                conn = await asyncio.to_thread(self.get_connection, self.m3ter_conn_id)
            settings = self._settings_from(conn)
            if request_timeout is not None and request_timeout < settings.timeout:
                settings = dataclasses.replace(settings, timeout=float(request_timeout))
            self.__dict__["settings"] = settings
        return self.client

    @property
    def user_agent(self) -> str:
        """The ``User-Agent`` every request of this provider sends."""
        return self.client.user_agent

    # ---------------------------------------------------------------- bill jobs
    @fails_fast
    def start_bill_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Create a bill job (``POST billjobs``) and return it; the request is never blindly retried.

        :param body: m3ter's ``BillJobRequest`` (``accountIds``, ``billDate``,
            ``lastDateInBillingPeriod``, ``billingFrequency``...).
        """
        job = jobs.start_bill_job(self.client, body)
        self.log.info("Started m3ter bill job %s.", job["id"])
        return job

    @fails_fast
    def get_bill_ids(self, job: Mapping[str, Any]) -> list[str]:
        """The ids of the bills a finished bill job produced."""
        return jobs.bill_ids(self.client, job)

    # ---------------------------------------------------------------- ingest validation failures
    @fails_fast
    def get_ingest_failures(
        self,
        start: dt.datetime,
        end: dt.datetime | None = None,
        uids: Iterable[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Measurements m3ter accepted (HTTP 200) and then refused, from its ``ingest.validation.failure``
        Events between ``start`` and ``end`` (and, given ``uids``, only those of these measurements).

        Reads the failed-ingest detail file of an Event when the Event alone does not name the uid or
        the reason. See :mod:`m3ter_provider.core.ingest.failures`.

        :return: dicts with ``event_id``, ``event_time``, ``error_type`` (``UndefinedMeter``,
            ``MissingField``, ``InvalidAccountCode``, ``DuplicateUid``...), ``message``, ``uid``,
            ``account``, ``meter``, ``file``.
        """
        from m3ter_provider.core.ingest.failures import read_ingest_failures

        failures = read_ingest_failures(self, start=start, end=end, uids=uids)
        return [failure.as_dict() for failure in failures]

    # ---------------------------------------------------------------- warehouse: files and queries
    @fails_fast
    def upload_measurements(
        self,
        measurements: Iterable[Mapping[str, Any]] | Any,
        *,
        uid_namespace: str | None = None,
        wait: bool = True,
        poll_interval: float = 5.0,
        timeout: float | None = None,
        check_ingest_failures: str = "off",
        ingest_failures_wait: float = 60.0,
    ) -> dict[str, Any]:
        """Validate measurements and send them through m3ter's file upload service (batch ingest).

        The same inputs, validation and content uids as :meth:`submit_measurements`; the file
        (``{"measurements": [...]}``, split at 1 GiB) is written to a temporary file and streamed to
        m3ter's presigned upload URL (never with the bearer token), then the upload job is awaited.
        See :mod:`m3ter_provider.core.ingest.upload`.

        :param wait: wait for the upload jobs (else return once the files are uploaded).
        :param poll_interval: seconds between two polls of a job.
        :param timeout: seconds to wait for each job at most.
        :param check_ingest_failures: ``"off"``, ``"warn"`` or ``"fail"``: rows the job counted as
            failed (``failedRows``), and ``ingest.validation.failure`` Events for the uploaded uids.
        :param ingest_failures_wait: seconds to keep reading failure Events.
        :return: ``{"measurements", "bytes", "files", "job_ids", "status", "total_rows",
            "processed_rows", "failed_rows"}`` plus ``rejected``, ``duplicates``, ``rejections``.
        :raises M3terJobFailedError: an upload job failed.
        """
        from m3ter_provider.core.ingest.failures import spool_checker
        from m3ter_provider.core.ingest.upload import report_failed_rows, upload
        from m3ter_provider.core.limits import check_mode, check_wait
        from m3ter_provider.hooks._namespaces import namespace_for_call

        mode = check_mode(check_ingest_failures)
        namespace, source, warning = namespace_for_call(uid_namespace)
        if warning:
            self.log.warning("%s", warning)
        self.log.info("Measurement uids derive from namespace %s (%s).", namespace, source)
        summary = upload(
            self.client,
            measurements,
            uid_namespace=namespace,
            wait=wait,
            poll_interval=poll_interval,
            timeout=timeout,
            after_upload=None
            if mode == "off"
            else spool_checker(
                self.client, mode=mode, wait=check_wait(ingest_failures_wait), logger=self.log
            ),
        )
        summary.setdefault("rejected", None)
        summary.setdefault("duplicates", None)
        summary.setdefault("rejections", [])
        report_failed_rows(summary, mode, self.log)
        return summary

    @fails_fast
    def query_usage(self, destination: Any, **query: Any) -> dict[str, Any]:
        """Run a Data Explorer usage query over any time range and write the items to a file.

        The range is split until every part is complete (m3ter answers at most 20,000 items per
        query), calls are paced under m3ter's usage query limit, and the items go to
        ``destination`` (a local path or ``ObjectStoragePath``) as JSON Lines, CSV or Parquet.
        See :func:`m3ter_provider.core.usage_query.query_usage` for ``start``, ``end``,
        ``meter_ids``, ``account_ids``, ``aggregations``, ``groups``, ``dimension_filters``,
        ``limit`` and ``file_format``.

        :return: ``{"destination", "format", "rows", "requests", "parts", "start", "end"}``.
        """
        from m3ter_provider.core.usage_query import query_usage

        return query_usage(self.client, destination, **query)

    # ---------------------------------------------------------------- month-end
    @fails_fast
    def sync_accounts(self, rows: Any, **kwargs: Any) -> dict[str, Any]:
        """Create or update Accounts and attach AccountPlans so that m3ter matches ``rows`` (matched
        by ``code``; a re-run writes nothing). See :func:`m3ter_provider.core.accounts.sync_accounts`
        for the columns and ``dry_run``, ``rate``, ``max_failures``, ``report_path``."""
        from m3ter_provider.core.accounts import sync_accounts

        return sync_accounts(self.client, rows, **kwargs)

    @fails_fast
    def list_bills(self, **kwargs: Any) -> list[dict[str, Any]]:
        """Bills of a bill job (``bill_job_id``) or with given ``bill_ids``, optionally one ``status``."""
        from m3ter_provider.core.billing import list_bills

        return list_bills(self.client, **kwargs)

    @fails_fast
    def approve_bills(self, bill_ids: Iterable[str]) -> dict[str, Any]:
        """Approve the PENDING Bills among ``bill_ids``: ``{"approved", "already_approved", "locked"}``."""
        from m3ter_provider.core.billing import approve_bills

        return approve_bills(self.client, bill_ids)

    @fails_fast
    def approve_billing_period(
        self, last_date_in_billing_period: Any, billing_frequency: str = "MONTHLY"
    ) -> dict[str, Any]:
        """Approve every PENDING Bill of the billing period ending ``last_date_in_billing_period``."""
        from m3ter_provider.core.billing import approve_billing_period

        return approve_billing_period(self.client, last_date_in_billing_period, billing_frequency)

    @fails_fast
    def lock_bills(self, bill_ids: Iterable[str]) -> dict[str, Any]:
        """Lock the approved Bills among ``bill_ids`` (a PENDING one is an error).

        :return: ``{"locked", "already_locked"}`` (ids).
        """
        from m3ter_provider.core.billing import lock_bills

        return lock_bills(self.client, bill_ids)

    @fails_fast
    def start_recalculation(self, bill_ids: Iterable[str]) -> dict[str, Any]:
        """Start a RECALCULATE bill job for unlocked Bills and return it (follow it as a ``"billjob"``)."""
        from m3ter_provider.core.billing import start_recalculation

        return start_recalculation(self.client, bill_ids)

    @fails_fast
    def start_statement_jobs(
        self, bill_ids: Iterable[str], *, include_csv: bool = False
    ) -> list[dict[str, Any]]:
        """Start one statement job per Bill (by 10 with ``statementjobs/batch``) and return them."""
        from m3ter_provider.core.statements import start_statement_jobs

        return start_statement_jobs(self.client, bill_ids, include_csv=include_csv)

    @fails_fast
    def download_statements(
        self, jobs: Iterable[Mapping[str, Any]], destination: Any, formats: Any = ("JSON",)
    ) -> list[dict[str, Any]]:
        """Download finished statement jobs' files as ``<destination>/<bill id>.<json|csv>``."""
        from m3ter_provider.core.statements import download_statements

        return download_statements(self.client, jobs, destination, formats)
