"""SqlToM3terMeasurementsOperator: rows of a warehouse query into m3ter, each billed once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook, BaseOperator

from m3ter_provider.core.limits import (
    DEFAULT_INGEST_CONCURRENCY,
    check_concurrency,
    check_max_requests_per_second,
    check_mode,
    check_wait,
    is_template,
)
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.hooks.permanent import fails_fast
from m3ter_provider.links import M3terConsoleLink, persist_console_link
from m3ter_provider.operators.asset_events import M3terUsageEventsMixin
from m3ter_provider.operators.inputs import parse_rendered
from m3ter_provider.tasks import M3terHookMixin, task_uid_namespace

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

DEFAULT_FETCH_SIZE = 10_000


class SqlToM3terMeasurementsOperator(M3terUsageEventsMixin, M3terHookMixin, BaseOperator):
    """Run a query on any SQL connection (a ``common.sql`` ``DbApiHook``: PostgreSQL, Snowflake,
    BigQuery, Redshift, SQLite...) and submit its rows to m3ter as measurements.

    Rows are streamed (``fetchmany`` of ``fetch_size`` rows; a server-side cursor on PostgreSQL)
    into the same path as :meth:`M3terHook.submit_measurements`: every row validated before anything
    is sent, the encoded batches spooled to a temporary file (flat memory at millions of rows), a
    uid derived from the task instance and the row's content for a row without one (a retried or
    cleared task re-sends the same uids: m3ter ingests each once), and a failure part-way naming
    how many measurements m3ter accepted.

    Columns name the measurement fields: ``account``, ``meter``, ``ts``, ``ets``, ``uid``, and
    ``<map>.<key>`` for map entries (``SELECT customer AS account, 'api_calls' AS meter, ts,
    calls AS "measure.calls"``), or any names with ``column_mapping``. ``ts`` must carry a UTC
    offset (an RFC 3339 string or a timezone-aware timestamp).

    Returns the submit summary (``measurements``, ``requests``, ``bytes``, ``rejected``...).

    :param sql: the query. (templated; a ``.sql`` file is read)
    :param sql_conn_id: the Airflow connection of the database (any ``DbApiHook``).
    :param parameters: the query's parameters, in the driver's paramstyle. (templated)
    :param column_mapping: ``{column: field}``, e.g. ``{"customer": "account", "calls": "measure.calls"}``.
    :param fetch_size: rows fetched at once (default 10,000).
    :param sql_hook_params: extra arguments for the database hook (``BaseHook.get_hook(hook_params=)``).
    :param uid_namespace: the namespace the uids are derived from; by default the task instance's
        (dag id, task id, run id, map index). Give one that names the data instead (e.g. the month
        loaded) when another run may load the same rows again: they then keep their uids. (templated)
    :param concurrency: measurement batches in flight at once (1 to 10).
    :param check_ingest_failures: ``"off"`` (default), ``"warn"`` or ``"fail"`` (see the submit operator).
    :param ingest_failures_wait: seconds to keep reading ingest failures.
    :param max_requests_per_second: this task's most ingest requests per second. Requests are
        paced at the machine's share of the connection's ``ingest_rate`` (default 45/s) over
        ``ingest_machines``, at most 5,000 per 5 minutes per machine (m3ter's per-IP limit); this
        lowers that pace, never raises it. Default: the machine's share. (templated)
    :param bool emit_asset_events: once every row is sent, emit one asset event per Meter,
        ``m3ter://<org id>/meters/<meter code>``, through the ``m3ter/usage`` alias outlet, with
        ``extra`` ``{"measurements", "first_ts", "last_ts", "uid_namespace", "rejected"}``, as the
        submit operator does. Default True.
    :param m3ter_conn_id: the m3ter connection id.
    """

    template_fields: Sequence[str] = ("sql", "parameters", "uid_namespace", "max_requests_per_second")
    template_ext: Sequence[str] = (".sql",)
    template_fields_renderers = {"sql": "sql", "parameters": "json"}
    operator_extra_links = (M3terConsoleLink(),)

    def __init__(
        self,
        *,
        sql: str,
        sql_conn_id: str,
        parameters: Any = None,
        column_mapping: Mapping[str, str] | None = None,
        fetch_size: int = DEFAULT_FETCH_SIZE,
        sql_hook_params: dict[str, Any] | None = None,
        uid_namespace: str | None = None,
        concurrency: int = DEFAULT_INGEST_CONCURRENCY,
        check_ingest_failures: str = "off",
        ingest_failures_wait: float = 60.0,
        max_requests_per_second: float | str | None = None,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not sql_conn_id or not isinstance(sql_conn_id, str):
            raise M3terConfigError("sql_conn_id is required: the Airflow connection id of the database.")
        if isinstance(fetch_size, bool) or not isinstance(fetch_size, int) or fetch_size < 1:
            raise M3terConfigError(f"fetch_size must be a positive number of rows, not {fetch_size!r}.")
        if column_mapping is not None and not isinstance(column_mapping, Mapping):
            raise M3terConfigError(
                "column_mapping must be a dict of {column: field}, e.g. {'calls': 'measure.calls'}."
            )
        check_concurrency(concurrency)
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        self.parameters = parameters
        self.column_mapping = dict(column_mapping or {})
        self.fetch_size = fetch_size
        self.sql_hook_params = dict(sql_hook_params or {})
        self.uid_namespace = uid_namespace
        self.concurrency = concurrency
        self.check_ingest_failures = check_mode(check_ingest_failures)
        self.ingest_failures_wait = check_wait(ingest_failures_wait)
        if not is_template(max_requests_per_second):
            check_max_requests_per_second(max_requests_per_second)  # a bad number fails at DAG parse
        self.max_requests_per_second = max_requests_per_second
        self.m3ter_conn_id = m3ter_conn_id

    def _sql_hook(self) -> Any:
        """The database's ``DbApiHook``, as ``SqlToS3Operator`` finds it."""
        hook = BaseHook.get_connection(self.sql_conn_id).get_hook(hook_params=self.sql_hook_params)
        if not callable(getattr(hook, "get_conn", None)):
            raise M3terConfigError(
                f"connection {self.sql_conn_id!r} gives a {type(hook).__name__}, not a SQL (DbApiHook) hook."
            )
        return hook

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        from m3ter_provider.core.ingest.sql import QueryResult  # the ingest machinery: only when run

        connection = self._sql_hook().get_conn()
        try:
            rows = QueryResult(
                connection,
                self.sql,
                parameters=parse_rendered(self.parameters, "parameters"),
                column_mapping=self.column_mapping,
                fetch_size=self.fetch_size,
            )
            persist_console_link(context, self.hook.console_url)
            namespace = self.uid_namespace or task_uid_namespace(context)
            tally = self.tally_meters(rows)
            summary = self.hook.submit_measurements(
                tally,
                uid_namespace=namespace,
                concurrency=self.concurrency,
                check_ingest_failures=self.check_ingest_failures,
                ingest_failures_wait=self.ingest_failures_wait,
            )
        finally:
            connection.close()
        if tally is not rows:
            self.emit_usage_events(
                context, tally.summary(), uid_namespace=namespace, rejected=summary.get("rejected")
            )
        self.log.info("Submitted %s query rows from connection %r.", f"{rows.rows:,}", self.sql_conn_id)
        return summary
