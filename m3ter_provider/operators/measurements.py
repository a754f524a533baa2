"""M3terSubmitMeasurementsOperator: usage into m3ter, billed exactly once whatever happens to the task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from m3ter_provider.core.limits import (
    DEFAULT_INGEST_CONCURRENCY,
    check_concurrency,
    check_file_format,
    check_max_requests_per_second,
    check_mode,
    check_wait,
    is_template,
)
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.hooks.permanent import fails_fast
from m3ter_provider.links import M3terConsoleLink, persist_console_link
from m3ter_provider.operators._lineage import M3terSubmitLineageMixin
from m3ter_provider.operators.asset_events import M3terUsageEventsMixin
from m3ter_provider.operators.inputs import measurements_from_value, open_path
from m3ter_provider.tasks import M3terHookMixin, task_uid_namespace

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context


class M3terSubmitMeasurementsOperator(
    M3terUsageEventsMixin, M3terSubmitLineageMixin, M3terHookMixin, BaseOperator
):
    """Send measurements to m3ter's ingest API, batched within its limits, each counted once.

    Measurements come from ``measurements`` (a list, a generator, or an XCom, e.g.
    ``"{{ ti.xcom_pull('build') }}"`` or ``build_task.output``) or from ``measurements_file``
    (JSON Lines, CSV or Parquet; a local path, an ``ObjectStoragePath``, or a ``scheme://`` URL), read lazily.
    Every measurement is validated before anything is sent, and the encoded batches wait in a
    temporary file, so memory stays flat however large the input.

    A measurement without a ``uid`` gets one derived from the task instance (dag id, task id, run
    id, map index), its content and its occurrence among identical rows: a retried or cleared task
    re-sends the same uids, even with rows reordered or added, and m3ter ingests each once. A
    failure part-way names how many measurements m3ter accepted; the retry sends the rest.

    Only a string ``measurements`` (a template, an XCom pull) is rendered: a literal list or
    generator is passed through untouched, however large, and text in it that looks like a
    template is left as it is.

    m3ter answers 200 for a batch and validates its measurements afterwards: a measurement for an
    unknown Meter (or a near-miss Account code, a missing Data Field...) is then refused and recorded
    as an ``ingest.validation.failure`` Event, never billed. With ``check_ingest_failures`` the task
    reads those Events for the uids it sent (for up to ``ingest_failures_wait`` seconds) and warns or
    fails with the count and the first reasons.

    Returns ``{"measurements": n, "requests": k, "bytes": b, "rejected": r, "duplicates": d,
    "rejections": [...]}`` (``rejected`` and ``duplicates`` are None when not checked; ``duplicates``
    counts re-sent uids m3ter had already ingested; ``rejections`` holds the first few refusals).

    :param measurements: the measurements (dicts with ``account``, ``meter``, ``ts``...). (templated
        when a string or an XCom)
    :param measurements_file: a file of measurements instead. (templated)
    :param file_format: ``"jsonl"``, ``"csv"`` or ``"parquet"`` (needs pyarrow); by default taken from
        the file's suffix.
    :param concurrency: measurement batches in flight at once (1 to 10, default 4).
    :param uid_namespace: the namespace the uids are derived from; by default the task
        instance's (dag id, task id, run id, map index). A mapped task reading a file keys on the file
        instead of the map index: the slices of one run that
        :func:`m3ter_provider.core.ingest.slices.split_by_content` (or
        ``M3terSplitMeasurementsOperator``) wrote share one namespace, so a row keeps its uid whichever
        slice it lands in; any other file is keyed by its path. (templated)
    :param check_ingest_failures: ``"off"`` (default), ``"warn"`` or ``"fail"``.
    :param ingest_failures_wait: seconds to keep reading failures after submitting (m3ter validates
        asynchronously; in ``"fail"`` mode the first failures found end the wait). Default 60.
    :param max_requests_per_second: this task's most ingest requests per second. Requests are
        paced at the machine's share of the connection's ``ingest_rate`` (default 45/s) over
        ``ingest_machines``, at most 5,000 per 5 minutes per machine (m3ter's per-IP limit); this
        lowers that pace, never raises it. Default: the machine's share. (templated)
    :param bool emit_asset_events: once every measurement is sent, emit one asset event per Meter,
        ``m3ter://<org id>/meters/<meter code>``, through the ``m3ter/usage`` alias outlet, with
        ``extra`` ``{"measurements", "first_ts", "last_ts", "uid_namespace", "rejected"}``
        (``measurements`` counts the rows sent for that Meter, re-sent uids included; ``rejected``
        the task's rejections when ``check_ingest_failures`` is on, else None). Default True.
    :param m3ter_conn_id: the m3ter connection id.
    """

    template_fields: Sequence[str] = (
        "measurements",
        "measurements_file",
        "uid_namespace",
        "max_requests_per_second",
    )
    operator_extra_links = (M3terConsoleLink(),)

    def __init__(
        self,
        *,
        measurements: Any = None,
        measurements_file: Any = None,
        file_format: str | None = None,
        concurrency: int = DEFAULT_INGEST_CONCURRENCY,
        uid_namespace: str | None = None,
        check_ingest_failures: str = "off",
        ingest_failures_wait: float = 60.0,
        max_requests_per_second: float | str | None = None,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_concurrency(concurrency)
        self.check_ingest_failures = check_mode(check_ingest_failures)
        self.ingest_failures_wait = check_wait(ingest_failures_wait)
        if (measurements is None) == (measurements_file is None):
            raise M3terConfigError(
                "give exactly one of measurements (a list or an XCom) or measurements_file (a path)."
            )
        self.measurements = measurements
        self.measurements_file = measurements_file
        check_file_format(file_format)  # an unknown format fails when the DAG file is parsed
        if uid_namespace is not None and (not isinstance(uid_namespace, str) or not uid_namespace.strip()):
            raise M3terConfigError(
                f"uid_namespace {uid_namespace!r}: give a non-empty string, or leave it out."
            )
        self.file_format = file_format
        self.uid_namespace = uid_namespace
        self.concurrency = concurrency
        if not is_template(max_requests_per_second):
            check_max_requests_per_second(max_requests_per_second)  # a bad number fails at DAG parse
        self.max_requests_per_second = max_requests_per_second
        self.m3ter_conn_id = m3ter_conn_id

    def render_template(
        self, content: Any, context: Any, jinja_env: Any = None, seen_oids: set[int] | None = None
    ) -> Any:
        """Leave a literal ``measurements`` (a list, a generator...) as it is: no Jinja walk over it."""
        if content is self.measurements and _is_literal(content):
            return content
        return super().render_template(content, context, jinja_env, seen_oids)

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        # the ingest machinery: only when the task runs
        from m3ter_provider.core.ingest import MeasurementFile

        if self.measurements_file is not None:
            source: Any = MeasurementFile(open_path(self.measurements_file), self.file_format)
            self.log.info("Reading measurements from %s.", self.measurements_file)
        else:
            source = measurements_from_value(self.measurements)
        namespace = self.uid_namespace or task_uid_namespace(context, self.measurements_file)
        persist_console_link(context, self.hook.console_url)
        tally = self.tally_meters(source)
        result = self.hook.submit_measurements(
            tally,
            uid_namespace=namespace,
            concurrency=self.concurrency,
            check_ingest_failures=self.check_ingest_failures,
            ingest_failures_wait=self.ingest_failures_wait,
            max_requests_per_second=check_max_requests_per_second(self.max_requests_per_second),
        )
        if tally is not source:
            self.emit_usage_events(
                context, tally.summary(), uid_namespace=namespace, rejected=result.get("rejected")
            )
        return result


def _is_literal(value: Any) -> bool:
    """Not a template string and not an XCom reference (anything Airflow resolves has ``resolve``)."""
    return value is not None and not isinstance(value, str) and not hasattr(value, "resolve")
