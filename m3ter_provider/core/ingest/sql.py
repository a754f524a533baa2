"""Measurements from a SQL query, streamed from any DB-API 2.0 connection in flat memory.

Rows are fetched ``fetch_size`` at a time (``cursor.fetchmany``) and read by column name through
the same :class:`~m3ter_provider.core.ingest.columns.ColumnMap` as CSV files: ``account``,
``meter``, ``ts``, ``ets``, ``uid`` and ``<map>.<key>`` columns (``measure.api_calls``), or any
names with a ``column_mapping``. On PostgreSQL (psycopg2 and psycopg 3) the query runs in a named,
server-side cursor: the database keeps the result and sends it batch by batch, where a plain
cursor would load every row into the client's memory at ``execute``.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from m3ter_provider.core.ingest.columns import ColumnMap
from m3ter_provider.core.ingest.sources import Chunk, Source, mapped_chunks
from m3ter_provider.errors import M3terConfigError

DEFAULT_FETCH_SIZE = 10_000
#: DB-API driver modules whose named cursors are server-side
SERVER_SIDE_DRIVERS = ("psycopg2", "psycopg")


class QueryResult(Source):
    """The rows of ``sql`` on a DB-API connection, as measurements (read when submitted).

    :param connection: an open DB-API 2.0 connection (a ``DbApiHook``'s ``get_conn()``); not closed.
    :param sql: one query returning one row per measurement.
    :param parameters: the query's parameters, in the driver's paramstyle.
    :param column_mapping: ``{column: field}`` (``{"customer": "account", "calls": "measure.api_calls"}``).
    :param fetch_size: rows fetched at once (memory holds about this many rows).
    """

    def __init__(
        self,
        connection: Any,
        sql: str,
        parameters: Sequence[Any] | Mapping[str, Any] | None = None,
        column_mapping: Mapping[str, str] | None = None,
        fetch_size: int = DEFAULT_FETCH_SIZE,
    ) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise M3terConfigError(
                "sql must be a non-empty query, e.g. 'SELECT account, meter, ts ... FROM usage'."
            )
        if isinstance(fetch_size, bool) or not isinstance(fetch_size, int) or fetch_size < 1:
            raise M3terConfigError(f"fetch_size must be a positive number of rows, not {fetch_size!r}.")
        if column_mapping is not None and not isinstance(column_mapping, Mapping):
            raise M3terConfigError(
                "column_mapping must be a dict of {column: field}, e.g. {'calls': 'measure.api_calls'}."
            )
        self.connection = connection
        self.sql = sql
        self.parameters = parameters
        self.column_mapping = dict(column_mapping or {})
        self.fetch_size = fetch_size
        #: rows read so far (for the log)
        self.rows = 0

    def __repr__(self) -> str:
        return f"QueryResult({self.sql[:60]!r}, fetch_size={self.fetch_size})"

    def _cursor(self) -> Any:
        driver = type(self.connection).__module__.split(".")[0]
        if driver in SERVER_SIDE_DRIVERS:
            return self.connection.cursor(name=f"m3ter_{uuid.uuid4().hex}")
        return self.connection.cursor()

    def chunks(self) -> Iterator[Chunk]:
        cursor = self._cursor()
        try:
            cursor.arraysize = self.fetch_size
            if self.parameters is None:
                cursor.execute(self.sql)
            else:
                cursor.execute(self.sql, self.parameters)
            batch = cursor.fetchmany(self.fetch_size)
            if cursor.description is None:
                raise M3terConfigError("the SQL query returned no result set: give a SELECT.")
            columns = ColumnMap([d[0] for d in cursor.description], "the SQL query", self.column_mapping)
            yield from mapped_chunks(self._rows(cursor, batch), columns, lambda n: f"the SQL query's row {n}")
        finally:
            cursor.close()

    def _rows(self, cursor: Any, batch: Sequence[Any]) -> Iterator[tuple[Sequence[Any], int]]:
        counter = itertools.count(1)
        while batch:
            for row in batch:
                self.rows = next(counter)
                yield row, self.rows
            batch = cursor.fetchmany(self.fetch_size)
