"""M3terSyncAccountsOperator: Accounts and AccountPlans from a CRM or a warehouse into m3ter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from m3ter_provider.errors import M3terConfigError, M3terError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.hooks.permanent import fails_fast
from m3ter_provider.operators._base import M3terHookMixin
from m3ter_provider.operators.asset_events import M3terAssetEventsMixin
from m3ter_provider.operators.inputs import open_path, parse_rendered
from m3ter_provider.tasks import templated

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow.providers.common.compat.sdk import Context

DEFAULT_RATE = 10.0  # as core.accounts.DEFAULT_RATE (that module is imported when the task runs)
SQL_FETCH_SIZE = 1000


class M3terSyncAccountsOperator(M3terAssetEventsMixin, M3terHookMixin, BaseOperator):
    """Make m3ter's Accounts (and their AccountPlans) match rows from a CRM or a warehouse.

    Rows come from ``rows`` (a list of dicts, an XCom, or a ``.csv`` / ``.jsonl`` / ``.json`` file:
    a local path, an ``ObjectStoragePath`` or a ``scheme://`` URL) or from ``sql`` run on
    ``sql_conn_id`` (any common.sql ``DbApiHook`` connection; rows fetched 1,000 at a time, the
    column names are the fields). Each row is one Account matched by ``code``: created when m3ter
    has none, updated with the current ``version`` only when a field the row gives changed, and
    given an AccountPlan for ``plan_code`` / ``plan_id`` from ``plan_start_date`` when it has none
    for that Plan covering that date. A re-run writes nothing (every row ``unchanged``).

    Every row is checked before the first request (a bad row fails the task, naming the row and the
    field, with nothing sent). Calls are paced under ``rate`` requests a second. Returns the summary
    ``{"rows", "created", "updated", "unchanged", "failed", "plans_attached", "dry_run",
    "failures": [first max_failures], "report"?}``; the full per-row report goes to ``report_path``
    when given.

    :param rows: the rows, or a path to a file of them. (templated)
    :param sql: a query whose result rows are the rows (with ``sql_conn_id``). (templated)
    :param sql_conn_id: the connection ``sql`` runs on.
    :param dry_run: read m3ter and report what would change; write nothing.
    :param rate: requests a second at most (default 10; m3ter allows 50 per Organization).
    :param max_failures: failed rows listed in the returned summary (default 20).
    :param report_path: a file for the per-row report (JSON Lines). (templated)
    :param fail_on_failed_rows: fail the task when m3ter refused a row (default True; the rows that
        succeeded stay synced, and a retry changes only what is still different).
    :param bool emit_asset_events: when Accounts were created or updated or AccountPlans attached
        (never on a dry run), emit an asset event for ``m3ter://<org id>/accounts`` through the
        ``m3ter/accounts`` alias outlet, ``extra`` ``{"rows", "created", "updated", "unchanged",
        "failed", "plans_attached"}``. Default True.
    :param m3ter_conn_id: the m3ter connection id.
    """

    asset_event_kind = "accounts"
    template_fields: Sequence[str] = ("rows", "sql", "report_path")
    template_fields_renderers = {"sql": "sql"}

    def __init__(
        self,
        *,
        rows: Any = None,
        sql: str | None = None,
        sql_conn_id: str | None = None,
        dry_run: bool = False,
        rate: float = DEFAULT_RATE,
        max_failures: int = 20,
        report_path: Any = None,
        fail_on_failed_rows: bool = True,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (rows is None) == (sql is None):
            raise M3terConfigError(
                "M3terSyncAccountsOperator: give rows or sql (with sql_conn_id), one of them."
            )
        if sql is not None and not sql_conn_id:
            raise M3terConfigError(
                "M3terSyncAccountsOperator: sql needs sql_conn_id, the connection to run it on."
            )
        if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate <= 50:
            raise M3terConfigError(f"rate {rate!r}: give requests per second, above 0 and at most 50.")
        if isinstance(rows, dict) and not templated(rows):
            raise M3terConfigError("rows: give a list of dicts (one per Account) or a file path, not a dict.")
        self.rows = rows
        self.sql = sql
        self.sql_conn_id = sql_conn_id
        # not self.dry_run: that name is BaseOperator's dry_run() method
        self.dry_run_only = dry_run
        self.rate = rate
        self.max_failures = max_failures
        self.report_path = report_path
        self.fail_on_failed_rows = fail_on_failed_rows
        self.m3ter_conn_id = m3ter_conn_id

    @fails_fast
    def execute(self, context: Context) -> dict[str, Any]:
        source = self._sql_rows() if self.sql is not None else self._rows()
        summary = self.hook.sync_accounts(
            source,
            dry_run=self.dry_run_only,
            rate=self.rate,
            max_failures=self.max_failures,
            report_path=open_path(self.report_path) if self.report_path else None,
        )
        self._emit(context, summary)
        if summary["failed"] and self.fail_on_failed_rows:
            first = summary["failures"][0]
            raise M3terError(
                f"m3ter refused {summary['failed']} of {summary['rows']} Account rows (first: row "
                f"{first['row']}, {first['code']}: {first['reason']}). The other rows are synced; fix the "
                "rows and run again."
            )
        return summary

    def _emit(self, context: Context, summary: dict[str, Any]) -> None:
        """The ``m3ter://<org id>/accounts`` event, when m3ter's Accounts changed (before a failure
        on refused rows is raised: the rows that succeeded did change them)."""
        keys = ("rows", "created", "updated", "unchanged", "failed", "plans_attached")
        if self.dry_run_only or not any(summary.get(k) for k in ("created", "updated", "plans_attached")):
            return
        from m3ter_provider.assets import accounts_asset

        extra = {key: summary.get(key) for key in keys}
        self.emit_asset_event(context, accounts_asset(self.hook.org_id), extra)

    def _rows(self) -> Any:
        value = parse_rendered(self.rows, "rows")
        if isinstance(value, str) or hasattr(value, "suffix"):
            return open_path(value)
        return value

    def _sql_rows(self) -> Iterator[dict[str, Any]]:
        """The query's rows as dicts, fetched ``SQL_FETCH_SIZE`` at a time (a server-side stream
        where the driver has one)."""
        from airflow.providers.common.compat.sdk import BaseHook

        if not self.sql_conn_id:
            raise M3terConfigError(
                "M3terSyncAccountsOperator: sql needs sql_conn_id, the connection to run it on."
            )
        db_hook = BaseHook.get_connection(self.sql_conn_id).get_hook()
        if not hasattr(db_hook, "get_conn"):
            raise M3terConfigError(f"sql_conn_id {self.sql_conn_id!r} is not a SQL (DbApiHook) connection.")
        conn = db_hook.get_conn()
        try:
            cursor = conn.cursor()
            cursor.execute(self.sql)
            columns = [column[0] for column in cursor.description]
            while True:
                batch = cursor.fetchmany(SQL_FETCH_SIZE)
                if not batch:
                    break
                for record in batch:
                    yield dict(zip(columns, record, strict=True))
            cursor.close()
        finally:
            conn.close()
