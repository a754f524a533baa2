"""Operators for m3ter: any API call, measurement ingest, data exports and bill jobs."""

from __future__ import annotations

import datetime as dt
import json as jsonlib
import re
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from m3ter_provider.core._text import plural
from m3ter_provider.core.jobs import BILL_JOB, DATA_EXPORT, data_export_body
from m3ter_provider.core.limits import check_export_file_format, check_page_size
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.hooks.permanent import fails_fast
from m3ter_provider.links import M3terConsoleLink, persist_console_link
from m3ter_provider.operators._base import FILE_EXPIRED, M3terHookMixin, M3terJobOperatorBase
from m3ter_provider.operators._lineage import M3terExportLineageMixin
from m3ter_provider.operators.asset_events import M3terAssetEventsMixin
from m3ter_provider.operators.inputs import as_id_list, open_path, parse_rendered
from m3ter_provider.operators.measurements import M3terSubmitMeasurementsOperator
from m3ter_provider.operators.slices import M3terSplitMeasurementsOperator
from m3ter_provider.tasks import templated

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.providers.common.compat.sdk import Context

__all__ = [
    "M3terBillJobOperator",
    "M3terDataExportOperator",
    "M3terOperator",
    "M3terSplitMeasurementsOperator",
    "M3terSubmitMeasurementsOperator",
]

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
BILLING_FREQUENCIES = ("DAILY", "WEEKLY", "MONTHLY", "ANNUALLY", "AD_HOC")
#: m3ter serves an export's file for 24 hours; an older stored export is run afresh (with a margin)
STALE_EXPORT = dt.timedelta(hours=23)


class M3terOperator(M3terHookMixin, BaseOperator):
    """Call any m3ter Config API endpoint and return the JSON answer to XCom.

    :param endpoint: the path, relative to the Organization (``"accounts"``, ``"bills/{id}"``) or from
        the API root when it starts with ``/``. (templated)
    :param method: ``GET``, ``POST``, ``PUT``, ``DELETE`` or ``PATCH``.
    :param query_params: query parameters; lists are sent comma-separated. (Named so because
        ``params`` is Airflow's own argument for DAG params.) (templated)
    :param json: the JSON body. (templated)
    :param data: another name for ``json``; give one or the other. (templated)
    :param paginate: collect every page of a list endpoint (``GET`` only) and return one list.
    :param page_size: m3ter's ``pageSize`` when paginating (usually at most 100 or 200).
    :param response_filter: a callable applied to the answer (the list, with ``paginate``) before it
        goes to XCom; what it returns must be JSON-serialisable.
    :param output_path: write the answer to this file as JSON Lines instead of returning it: a local
        path, an ``ObjectStoragePath`` or a ``scheme://`` URL. With ``paginate`` the items are
        streamed page by page (memory stays flat however many there are); a list answer is one
        line per item, any other answer one line. The task then returns only
        ``{"path", "items", "bytes"}``. Without it, a result over 100 KB of JSON draws a warning
        (XCom lives in Airflow's metadata database). (templated)
    :param str m3ter_conn_id: the m3ter connection id.
    """

    template_fields: Sequence[str] = ("endpoint", "query_params", "json", "data", "output_path")
    template_fields_renderers = {"query_params": "json", "json": "json", "data": "json"}
    operator_extra_links = (M3terConsoleLink(),)

    def __init__(
        self,
        *,
        endpoint: str,
        method: str = "GET",
        query_params: dict[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        paginate: bool = False,
        page_size: int | None = None,
        response_filter: Callable[[Any], Any] | None = None,
        output_path: Any = None,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        method = str(method).upper()
        if method not in HTTP_METHODS:
            raise M3terConfigError(f"method {method!r}: use one of {', '.join(HTTP_METHODS)}.")
        if not endpoint or not isinstance(endpoint, str):
            raise M3terConfigError("endpoint is required: give a path such as 'accounts'.")
        if json is not None and data is not None:
            raise M3terConfigError("give the request body as json or as data, not both.")
        if paginate and method != "GET":
            raise M3terConfigError(f"paginate=True needs method='GET' (list endpoints), not {method!r}.")
        if response_filter is not None and not callable(response_filter):
            raise M3terConfigError("response_filter must be a callable taking the answer.")
        if response_filter is not None and output_path is not None:
            raise M3terConfigError(
                "response_filter needs the whole answer in memory, output_path streams it to a file: "
                "give one or the other (filter the file in the next task)."
            )
        self.endpoint = endpoint
        self.method = method
        self.query_params = query_params
        self.json = json
        self.data = data
        self.paginate = paginate
        self.page_size = check_page_size(page_size)
        self.response_filter = response_filter
        self.output_path = output_path
        self.m3ter_conn_id = m3ter_conn_id

    @fails_fast
    def execute(self, context: Context) -> Any:
        endpoint = str(self.endpoint).strip()
        params = parse_rendered(self.query_params, "query_params")
        if params is not None and not isinstance(params, dict):
            raise M3terConfigError(f"query_params must be a dict, not {type(params).__name__}.")
        body = parse_rendered(self.json if self.json is not None else self.data, "json")
        persist_console_link(context, self.hook.console_url)
        if self.output_path is not None and str(self.output_path).strip():
            return self._to_file(endpoint, params, body)
        if self.paginate:
            result: Any = list(self.hook.paginate(endpoint, params=params, page_size=self.page_size))
            self.log.info("Read %s from m3ter %s.", plural(len(result), "item"), endpoint)
        else:
            result = self.hook.request(self.method, endpoint, params=params, json=body)
            self.log.info("m3ter %s %s answered.", self.method, endpoint)
        if self.response_filter is not None:
            result = self.response_filter(result)
        if self.do_xcom_push:
            try:
                jsonlib.dumps(result)
            except (TypeError, ValueError) as exc:
                raise M3terConfigError(
                    f"the result of {self.method} {endpoint} is not JSON-serialisable ({exc}): make "
                    "response_filter return lists, dicts, strings and numbers, or set do_xcom_push=False."
                ) from None
            from m3ter_provider.core.results import warn_if_large

            warn_if_large(
                result,
                f"the result of {self.method} {endpoint}",
                self.log,
                fix="give output_path to write it to a file (JSON Lines) and push only its path and count",
            )
        return result

    def _to_file(self, endpoint: str, params: Any, body: Any) -> dict[str, Any]:
        """Stream the answer to ``output_path`` as JSON Lines; return ``{"path", "items", "bytes"}``."""
        from m3ter_provider.core.results import write_json_lines

        if self.paginate:
            written = self.hook.paginate_to_file(
                endpoint, open_path(self.output_path), params=params, page_size=self.page_size
            )
        else:
            answer = self.hook.request(self.method, endpoint, params=params, json=body)
            items = answer if isinstance(answer, list) else [answer]
            written = write_json_lines(items, open_path(self.output_path))
        self.log.info(
            "Wrote %s from m3ter %s to %s.", plural(written["items"], "item"), endpoint, written["path"]
        )
        return written


#: the hook's date arguments, as named in an error message, and not already export_*
_EXPORT_DATE_ARG = re.compile(r"(?<![\w.])(start_date|end_date)\b")


class M3terDataExportOperator(M3terAssetEventsMixin, M3terExportLineageMixin, M3terJobOperatorBase):
    """Run an ad-hoc m3ter data export, wait for it and optionally download the file.

    ``USAGE`` exports need ``export_start_date`` and ``export_end_date`` and take optional ``meter_ids``,
    ``account_ids``, ``aggregations`` and ``groups``; ``OPERATIONAL`` exports need
    ``operational_data_types`` (``["BILLS", "ACCOUNTS"]``...). The job id goes to XCom (key
    ``m3ter_job_id``) as soon as m3ter answers. With ``destination`` the finished export is streamed
    there from m3ter's presigned URL (the bearer token is never sent to it).

    Returns ``{"job_id", "status", "destination", "bytes"}`` (``destination`` and ``bytes`` are None
    without a download).

    On Airflow 3.3+ a retry follows the export an earlier try started (task state store). Below
    3.3 m3ter offers no way to find it (export jobs do not echo their request), so a retry starts
    a second export; an export only reads data, so that costs time, not correctness.

    :param source_type: ``"USAGE"`` or ``"OPERATIONAL"``.
    :param export_start_date: start of a USAGE export (m3ter's ``startDate``; not ``start_date``,
        which is every Airflow task's own): an RFC 3339 date-time with an offset, a timezone-aware
        datetime, or a date such as ``"{{ ds }}"`` (midnight UTC). (templated)
    :param export_end_date: end of a USAGE export (m3ter's ``endDate``, exclusive), as above. (templated)
    :param meter_ids: Meter ids to include (a list, a rendered list or comma-separated). (templated)
    :param account_ids: Account ids to include. (templated)
    :param aggregations: m3ter aggregations, e.g. ``[{"fieldCode", "fieldType", "function", "meterId"}]``.
        (templated)
    :param groups: m3ter groups (``[{"groupType": "ACCOUNT"}]``...). (templated)
    :param operational_data_types: data types of an OPERATIONAL export. (templated)
    :param export_file_format: ``"CSV"`` or ``"JSONL"``.
    :param destination: where to download the file: a local path, an ``ObjectStoragePath``, or a URL
        such as ``s3://bucket/key`` (read as an ``ObjectStoragePath``). (templated)
    :param destination_ids: m3ter export destinations (S3, GCS) to also deliver to. (templated)
    :param export_fields: further fields of m3ter's ad-hoc export request, passed as they are.
    :param bool wait_for_completion: wait for the export (needed to download); else return once started.
    :param float poll_interval: seconds between two polls of the job.
    :param float timeout: seconds to wait at most (``None``: no limit).
    :param bool deferrable: hand the wait to the triggerer (default ``[operators] default_deferrable``).
    :param bool emit_asset_events: when the export succeeded, emit an asset event for
        ``m3ter://<org id>/exports/<usage|operational>`` through the ``m3ter/exports`` alias outlet,
        ``extra`` ``{"job_id", "source_type", "start_date", "end_date", "operational_data_types",
        "destination", "bytes", "destination_ids"}``. Default True.
    :param str m3ter_conn_id: the m3ter connection id.
    """

    job_kind = DATA_EXPORT
    asset_event_kind = "exports"
    template_fields: Sequence[str] = (
        "export_start_date",
        "export_end_date",
        "meter_ids",
        "account_ids",
        "aggregations",
        "groups",
        "operational_data_types",
        "destination",
        "destination_ids",
    )

    def __init__(
        self,
        *,
        source_type: str,
        export_start_date: Any = None,
        export_end_date: Any = None,
        meter_ids: Any = None,
        account_ids: Any = None,
        aggregations: Any = None,
        groups: Any = None,
        operational_data_types: Any = None,
        export_file_format: str = "CSV",
        destination: Any = None,
        destination_ids: Any = None,
        export_fields: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_type = source_type
        self.export_start_date = export_start_date
        self.export_end_date = export_end_date
        self.meter_ids = meter_ids
        self.account_ids = account_ids
        self.aggregations = aggregations
        self.groups = groups
        self.operational_data_types = operational_data_types
        self.export_file_format = check_export_file_format(export_file_format)
        self.destination = destination
        self.destination_ids = destination_ids
        self.export_fields = dict(export_fields or {})
        if destination is not None and not self.wait_for_completion:
            raise M3terConfigError(
                "destination needs wait_for_completion=True: the file exists once the job ends."
            )
        values = (
            export_start_date,
            export_end_date,
            meter_ids,
            account_ids,
            aggregations,
            groups,
            operational_data_types,
        )
        if not templated(*values, destination_ids, export_fields):
            self._check()  # now, so a DAG with a bad export fails to load

    def _check(self) -> dict[str, Any]:
        """The checked export request, with errors naming this operator's arguments."""
        try:
            return data_export_body(**self._export_args())
        except M3terConfigError as exc:
            # this operator's arguments are export_start_date/export_end_date (start_date is Airflow's)
            raise M3terConfigError(_EXPORT_DATE_ARG.sub(r"export_\1", str(exc))) from None

    def _export_args(self) -> dict[str, Any]:
        """The hook's ``start_data_export`` arguments, read from the rendered fields."""
        return dict(
            source_type=self.source_type,
            start_date=self.export_start_date,
            end_date=self.export_end_date,
            meter_ids=as_id_list(self.meter_ids, "meter_ids"),
            account_ids=as_id_list(self.account_ids, "account_ids"),
            aggregations=parse_rendered(self.aggregations, "aggregations"),
            groups=parse_rendered(self.groups, "groups"),
            operational_data_types=as_id_list(self.operational_data_types, "operational_data_types"),
            export_file_format=self.export_file_format,
            destination_ids=as_id_list(self.destination_ids, "destination_ids"),
            **self.export_fields,
        )

    def get_job_status(self, external_id: Any, context: Context) -> str:
        status = super().get_job_status(external_id, context)
        job = self._final_job
        if (
            self.destination is not None
            and job is not None
            and _older_than(job.get("dateCreated"), STALE_EXPORT)
        ):
            # m3ter serves the file of an export run in the last 24 hours only: a re-run a day later
            # (a cleared task) would fail on every try; export afresh instead.
            self.log.info(
                "Data export %s ran over %s ago: its file is gone; exporting afresh.",
                external_id,
                STALE_EXPORT,
            )
            self._final_job = None
            return FILE_EXPIRED
        return status

    def _start_job(self, context: Context) -> str:
        self._check()
        return self.hook.start_data_export(**self._export_args())

    def _summary(self, context: Context, job_id: str, job: dict[str, Any]) -> dict[str, Any]:
        status = self.job_kind.status(job)
        result: dict[str, Any] = {"job_id": job_id, "status": status, "destination": None, "bytes": None}
        if self.destination is not None and self.job_kind.outcome(job) == "done":
            url = self.hook.get_export_download_url(job_id).get("url")
            if not url:
                raise M3terConfigError(f"m3ter gave no download URL for data export {job_id}.")
            export_name = str(self.source_type).lower()
            downloaded = self.hook.download(url, open_path(self.destination), export_name=export_name)
            result.update(destination=downloaded["destination"], bytes=downloaded["bytes"])
        if self.job_kind.outcome(job) == "done":
            self._emit_export_event(context, job_id, result)
        return result

    def _emit_export_event(self, context: Context, job_id: str, result: dict[str, Any]) -> None:
        from m3ter_provider.assets import export_asset

        args = self._export_args()
        source_type = str(args["source_type"]).upper()
        extra = {
            "job_id": job_id,
            "source_type": source_type,
            "start_date": args.get("start_date"),
            "end_date": args.get("end_date"),
            "operational_data_types": args.get("operational_data_types"),
            "destination": result["destination"],
            "bytes": result["bytes"],
            "destination_ids": args.get("destination_ids"),
        }
        self.emit_asset_event(context, export_asset(self.hook.org_id, source_type.lower()), extra)


class M3terBillJobOperator(M3terAssetEventsMixin, M3terJobOperatorBase):
    """Create an m3ter bill job, wait for it (or defer) and return the bills it produced.

    Returns ``{"job_id", "bill_job_id", "status", "bill_ids"}``. The job id goes to XCom (key
    ``m3ter_job_id``) as soon as m3ter answers. If the task is killed while it waits, the bill job
    is cancelled (``on_kill``; a deferred task's trigger does the same on Airflow 3.3+).

    A retry follows the bill job an earlier try of this task instance started: still running, it
    waits for it; finished, it uses its result; cancelled (or unknown to m3ter), it creates a new
    one. The id is kept where it survives a retry: on Airflow 3.3+ in the task state store
    (``ResumableJobMixin``); below 3.3, where Airflow clears a task's XCom when a new try starts, in
    an Airflow Variable keyed by the task instance (``dag_id``, ``task_id``, ``run_id``,
    ``map_index``), written right after m3ter answers the POST and deleted when the task succeeds
    (see :class:`~m3ter_provider.operators._base.TryRecord`). A record is followed only if the
    rendered request is unchanged.

    It never adopts another bill job, not even one for the same accounts and dates (another DAG's,
    a Console user's, or another task's under the same Service User), and ``on_kill`` cancels only
    the job this task started. Matching m3ter's jobs by creator and creation time could not promise
    that: a ``BillJobRequest`` carries no caller's tag, and ``createdBy`` names the Service User,
    which many DAGs share. What no record can cover: a try that dies between m3ter creating the job
    and the record being written (or whose POST answer is lost) leaves a job its retry cannot know.

    :param account_ids: the Account ids to bill (a list, rendered list or comma-separated). (templated)
    :param bill_date: the bill date, ``YYYY-MM-DD``. (templated)
    :param last_date_in_billing_period: the last day of the billing period, ``YYYY-MM-DD``. (templated)
    :param billing_frequency: ``DAILY``, ``WEEKLY``, ``MONTHLY``, ``ANNUALLY`` or ``AD_HOC``. (templated)
    :param due_date: the bills' due date, ``YYYY-MM-DD``. (templated)
    :param bill_job_fields: further fields of m3ter's ``BillJobRequest`` (``targetCurrency``,
        ``billFrequencyInterval``, ``timezone``...), passed as they are. (templated)
    :param bool wait_for_completion: wait for the job; else return once it is created.
    :param float poll_interval: seconds between two polls of the job.
    :param float timeout: seconds to wait at most (``None``: no limit).
    :param bool deferrable: hand the wait to the triggerer (default ``[operators] default_deferrable``).
    :param bool emit_asset_events: when the bill job completed, emit an asset event for
        ``m3ter://<org id>/bills`` through the ``m3ter/bills`` alias outlet, ``extra``
        ``{"job_id", "bill_count", "bill_date", "billing_frequency"}``. Default True.
    :param str m3ter_conn_id: the m3ter connection id.
    """

    job_kind = BILL_JOB
    asset_event_kind = "bills"
    record_tries = True
    template_fields: Sequence[str] = (
        "account_ids",
        "bill_date",
        "last_date_in_billing_period",
        "billing_frequency",
        "due_date",
        "bill_job_fields",
    )

    def __init__(
        self,
        *,
        account_ids: Any = None,
        bill_date: Any = None,
        last_date_in_billing_period: Any = None,
        billing_frequency: str | None = None,
        due_date: Any = None,
        bill_job_fields: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.account_ids = account_ids
        self.bill_date = bill_date
        self.last_date_in_billing_period = last_date_in_billing_period
        self.billing_frequency = billing_frequency
        self.due_date = due_date
        self.bill_job_fields = dict(bill_job_fields or {})
        if not templated(
            account_ids, billing_frequency, bill_date, last_date_in_billing_period, due_date, bill_job_fields
        ):
            self._body()

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        accounts = as_id_list(self.account_ids, "account_ids")
        if accounts:
            body["accountIds"] = accounts
        for key, name, value in (
            ("billDate", "bill_date", self.bill_date),
            ("lastDateInBillingPeriod", "last_date_in_billing_period", self.last_date_in_billing_period),
            ("dueDate", "due_date", self.due_date),
        ):
            if value:
                body[key] = _iso_date(value, name)
        if self.billing_frequency:
            frequency = str(self.billing_frequency).upper()
            if frequency not in BILLING_FREQUENCIES:
                raise M3terConfigError(
                    f"billing_frequency {self.billing_frequency!r}: "
                    f"use one of {', '.join(BILLING_FREQUENCIES)}."
                )
            body["billingFrequency"] = frequency
        body.update(parse_rendered(self.bill_job_fields, "bill_job_fields") or {})
        return body

    def _request(self) -> dict[str, Any]:
        return self._body()

    def _start_job(self, context: Context) -> str:
        return str(self.hook.start_bill_job(self._body())["id"])

    def _summary(self, context: Context, job_id: str, job: dict[str, Any]) -> dict[str, Any]:
        done = self.job_kind.outcome(job) == "done"
        bill_ids = self.hook.get_bill_ids(job) if done else []
        if done:
            self.log.info("m3ter bill job %s produced %s.", job_id, plural(len(bill_ids), "bill"))
            from m3ter_provider.assets import bills_asset

            body = self._body()
            extra = {
                "job_id": job_id,
                "bill_count": len(bill_ids),
                "bill_date": body.get("billDate"),
                "billing_frequency": body.get("billingFrequency"),
            }
            self.emit_asset_event(context, bills_asset(self.hook.org_id), extra)
        return {
            "job_id": job_id,
            "bill_job_id": job_id,
            "status": self.job_kind.status(job),
            "bill_ids": bill_ids,
        }


def _older_than(timestamp: Any, age: dt.timedelta) -> bool:
    """Whether an m3ter ISO-8601 timestamp lies more than ``age`` in the past (False if unreadable)."""
    try:
        moment = dt.datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    except ValueError:
        return False
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return dt.datetime.now(dt.timezone.utc) - moment > age


def _iso_date(value: Any, name: str) -> str:
    """``YYYY-MM-DD`` from a date, a datetime or an ISO string (the date part of a date-time)."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()[:10]
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise M3terConfigError(f"{name} {value!r} is not a date: give one as 'YYYY-MM-DD'.") from None
