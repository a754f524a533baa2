"""SqlToM3terMeasurementsOperator against real SQLite and PostgreSQL and the emulator over HTTP."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest

from m3ter_provider.assets import meter_asset
from m3ter_provider.core.ingest.sql import QueryResult
from m3ter_provider.errors import M3terConfigError, M3terValidationError
from m3ter_provider.testing import M3terEmulator
from m3ter_provider.transfers.sql_to_m3ter import SqlToM3terMeasurementsOperator
from tests.operators.helpers import make_context, run_with_events, set_connection
from tests.testing.helpers import know_meters

MEASUREMENTS = "POST /organizations/{orgId}/measurements"


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[M3terEmulator]:
    with M3terEmulator(job_duration=0.2) as emulator:
        set_connection(monkeypatch, emulator)
        know_meters(emulator, "api_calls")
        yield emulator


@pytest.fixture
def warehouse(tmp_path, monkeypatch) -> str:
    """A SQLite file with 2,500 usage rows, as the Airflow connection ``warehouse``."""
    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE usage (customer TEXT, calls INTEGER, region TEXT, ts TEXT)")
        db.executemany(
            "INSERT INTO usage VALUES (?, ?, ?, ?)",
            [
                (f"cust{i % 7}", i % 13, "eu" if i % 2 else "us", f"2026-01-01T00:{i % 60:02d}:00Z")
                for i in range(2500)
            ],
        )
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    return str(path)


QUERY = "SELECT customer, 'api_calls' AS meter, ts, calls, region FROM usage"
MAPPING = {"customer": "account", "calls": "measure.calls", "region": "who.region"}


def transfer(**kwargs) -> SqlToM3terMeasurementsOperator:
    kwargs.setdefault("task_id", "load")
    kwargs.setdefault("sql", QUERY)
    kwargs.setdefault("sql_conn_id", "warehouse")
    kwargs.setdefault("column_mapping", MAPPING)
    return SqlToM3terMeasurementsOperator(**kwargs)


def test_sqlite_rows_are_billed_once_across_a_retry(emu, warehouse):
    op = transfer(fetch_size=300)
    context = make_context(op)
    first = op.execute(context)
    assert first["measurements"] == 2500
    assert first["requests"] == 3
    second = op.execute(context)  # the retry re-sends the same uids
    assert second["measurements"] == 2500
    stored = emu.measurements()
    assert len(stored) == 2500
    assert {m["account"] for m in stored} == {f"cust{i}" for i in range(7)}
    assert sum(m["measure"]["calls"] for m in stored) == sum(i % 13 for i in range(2500))
    assert {m["who"]["region"] for m in stored} == {"eu", "us"}
    assert emu.stats()["requests"][MEASUREMENTS] == 6


def test_the_transfer_emits_one_usage_event_per_meter(emu, warehouse):
    op = transfer(
        sql="SELECT customer, CASE WHEN region = 'eu' THEN 'api_calls' ELSE 'storage' END AS meter, "
        "ts, calls, region FROM usage"
    )
    result, events = run_with_events(op)
    assert result["measurements"] == 2500
    api = events[meter_asset("emulator-org", "api_calls").uri]
    storage = events[meter_asset("emulator-org", "storage").uri]
    assert len(events) == 2 and (api["measurements"], storage["measurements"]) == (1250, 1250)
    assert api["uid_namespace"] == '["test_dag", "load", "manual__1", -1]' and api["rejected"] is None
    # eu rows are the odd ones, at odd minutes
    assert (api["first_ts"], api["last_ts"]) == ("2026-01-01T00:01:00Z", "2026-01-01T00:59:00Z")
    assert (storage["first_ts"], storage["last_ts"]) == ("2026-01-01T00:00:00Z", "2026-01-01T00:58:00Z")
    quiet = transfer(emit_asset_events=False)
    assert run_with_events(quiet)[1] == {} and quiet.outlets == []


def test_named_columns_need_no_mapping_and_parameters_are_passed(emu, warehouse):
    op = transfer(
        sql="SELECT customer AS account, 'api_calls' AS meter, ts, calls AS \"measure.calls\" "
        "FROM usage WHERE region = ?",
        parameters=["eu"],
        column_mapping=None,
    )
    assert op.execute(make_context(op))["measurements"] == 1250
    assert len(emu.measurements()) == 1250


def test_a_bad_row_sends_nothing_and_names_the_row_and_column(emu, warehouse):
    with sqlite3.connect(warehouse) as db:
        db.execute("INSERT INTO usage VALUES ('cust1', 'lots', 'eu', '2026-01-01T00:00:00Z')")
    op = transfer()
    with pytest.raises(M3terValidationError, match=r"the SQL query's row 2501: column 'calls' is 'lots'"):
        op.execute(make_context(op))
    assert emu.stats()["requests"].get(MEASUREMENTS, 0) == 0


def test_an_unknown_column_is_refused_with_the_fix(emu, warehouse):
    op = transfer(column_mapping={"customer": "account", "calls": "measure.calls"})
    with pytest.raises(M3terValidationError, match=r"unknown column 'region'.*column_mapping"):
        op.execute(make_context(op))
    op = transfer(column_mapping={"nope": "account"})
    with pytest.raises(M3terValidationError, match=r"column_mapping names 'nope'"):
        op.execute(make_context(op))


def test_bad_arguments_fail_when_the_dag_is_parsed():
    with pytest.raises(M3terConfigError, match="fetch_size"):
        transfer(fetch_size=0)
    with pytest.raises(M3terConfigError, match="sql_conn_id"):
        transfer(sql_conn_id="")
    with pytest.raises(M3terConfigError, match="column_mapping"):
        transfer(column_mapping=["account"])


def test_query_result_fetches_in_batches_of_fetch_size():
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE u (account TEXT, meter TEXT, ts TEXT)")
    db.executemany("INSERT INTO u VALUES ('a', 'm', '2026-01-01T00:00:00Z')", [()] * 2050)
    fetched = []

    class Counting:
        def cursor(self):
            cursor = db.cursor()
            real = cursor.fetchmany

            class Wrapper:
                description = property(lambda _self: cursor.description)
                arraysize = 0

                def execute(self, *args):
                    return cursor.execute(*args)

                def fetchmany(self, size):
                    rows = real(size)
                    fetched.append(len(rows))
                    return rows

                def close(self):
                    cursor.close()

            return Wrapper()

    chunks = list(QueryResult(Counting(), "SELECT * FROM u", fetch_size=1000).chunks())
    assert sum(len(structs) for structs, _ in chunks) == 2050
    assert fetched == [1000, 1000, 50, 0]


# -- PostgreSQL --------------------------------------------------------------------------------
@pytest.fixture
def pg_usage(postgres, monkeypatch):
    with postgres.connect() as db, db.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS usage")
        cursor.execute("CREATE TABLE usage (customer text, calls numeric(12,3), ts timestamptz, note text)")
        cursor.execute(
            "INSERT INTO usage SELECT 'cust' || (i % 5), i * 0.5, "
            "timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second', NULL "
            "FROM generate_series(1, 5000) AS i"
        )
    db.close()
    monkeypatch.setenv("AIRFLOW_CONN_PG", postgres.conn_uri())
    return postgres


def test_postgres_rows_stream_through_a_server_side_cursor(emu, pg_usage):
    op = transfer(
        sql="SELECT customer, 'api_calls' AS meter, ts, calls, note AS \"who.note\" FROM usage",
        sql_conn_id="pg",
        column_mapping={"customer": "account", "calls": "measure.calls"},
        fetch_size=700,
    )
    result = op.execute(make_context(op))
    assert result["measurements"] == 5000
    stored = emu.measurements()
    assert len(stored) == 5000
    assert sum(m["measure"]["calls"] for m in stored) == pytest.approx(sum(i * 0.5 for i in range(1, 5001)))
    assert all("who" not in m for m in stored)  # NULL cells are left out
    assert min(m["ts"] for m in stored).startswith("2026-01-01T00:00:01")
    op.execute(make_context(op))  # a retry: nothing doubled
    assert len(emu.measurements()) == 5000


def test_postgres_cursor_is_named_so_the_server_keeps_the_result(pg_usage):
    connection = pg_usage.connect()
    try:
        result = QueryResult(connection, "SELECT 1")
        assert result._cursor().name.startswith("m3ter_")
    finally:
        connection.close()


def test_postgres_naive_timestamps_are_refused_with_the_fix(emu, pg_usage):
    op = transfer(
        sql="SELECT customer AS account, 'api_calls' AS meter, ts::timestamp AS ts FROM usage LIMIT 3",
        sql_conn_id="pg",
        column_mapping=None,
    )
    with pytest.raises(M3terValidationError, match=r"row 1.*ts"):
        op.execute(make_context(op))
    assert emu.stats()["requests"].get(MEASUREMENTS, 0) == 0
