"""Parquet sources, bulk file upload and usage queries to a file: M3terHook against the emulator."""

from __future__ import annotations

import csv
import json
import sys

import pytest

from m3ter_provider.core.ingest import MeasurementFile
from m3ter_provider.core.ingest.failures import M3terIngestRejectedError
from m3ter_provider.core.ingest.upload import prepare
from m3ter_provider.core.pacing import Pacer
from m3ter_provider.core.usage_query import query_body
from m3ter_provider.errors import M3terConfigError, M3terJobFailedError, M3terValidationError
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.testing import M3terEmulator
from tests.operators.helpers import set_connection
from tests.testing.helpers import know_meters

GENERATE = "POST /organizations/{orgId}/fileuploads/measurements/generateUploadUrl"
PUT = "PUT /_emulator/uploads/{token}"
MEASUREMENTS = "POST /organizations/{orgId}/measurements"
QUERY = "POST /organizations/{orgId}/usage/query"


@pytest.fixture
def emu(monkeypatch):
    # limits off: hook() polls the upload jobs without sleeping, far over m3ter's 50 requests/s
    with M3terEmulator(job_duration=0.2, limits=False) as emulator:
        set_connection(monkeypatch, emulator)
        know_meters(emulator, "api_calls", "storage")
        yield emulator


def rows(n: int, meter: str = "api_calls", minute_step: int = 1) -> list[dict]:
    return [
        {
            "account": f"acct{i % 3}",
            "meter": meter,
            "ts": f"2026-01-{1 + (i * minute_step) // 1440:02d}T{(i * minute_step) // 60 % 24:02d}:"
            f"{(i * minute_step) % 60:02d}:00Z",
            "measure": {"calls": float(i % 10)},
            "who": {"region": "eu" if i % 2 else "us"},
        }
        for i in range(n)
    ]


def hook() -> M3terHook:
    h = M3terHook()
    h.client.sleep = lambda seconds: None  # job polls and pacing: no real waiting
    return h


# -- Parquet ------------------------------------------------------------------------------------
def write_parquet(path, table_rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(table_rows), path, row_group_size=700)


def test_parquet_flat_columns_are_read_in_batches_and_submitted_once(emu, tmp_path):
    path = tmp_path / "usage.parquet"
    flat = [
        {"account": r["account"], "meter": r["meter"], "ts": r["ts"], "measure.calls": r["measure"]["calls"]}
        for r in rows(2500)
    ]
    write_parquet(path, flat)
    first = hook().submit_measurements(path, uid_namespace="parquet")
    again = hook().submit_measurements(path, uid_namespace="parquet")
    assert first["measurements"] == again["measurements"] == 2500
    assert len(emu.measurements()) == 2500
    assert sum(m["measure"]["calls"] for m in emu.measurements()) == sum(float(i % 10) for i in range(2500))


def test_parquet_from_an_object_storage_path(emu, tmp_path):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    flat = [{"account": "a", "meter": "api_calls", "ts": r["ts"], "measure.calls": 1.0} for r in rows(30)]
    write_parquet(tmp_path / "u.parquet", flat)
    path = ObjectStoragePath(f"file://{tmp_path}/u.parquet")
    assert hook().submit_measurements(path, uid_namespace="osp")["measurements"] == 30
    assert len(emu.measurements()) == 30


def test_parquet_struct_and_map_columns_and_a_column_mapping(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "customer": ["a", "b"],
            "meter": ["api_calls", "api_calls"],
            "ts": pa.array(
                [dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)] * 2, pa.timestamp("us", tz="UTC")
            ),
            "measure": pa.array([[("calls", 1.0)], [("calls", 2.0)]], pa.map_(pa.string(), pa.float64())),
            "who": [{"region": "eu"}, {"region": "us"}],
        }
    )
    path = tmp_path / "nested.parquet"
    pq.write_table(table, path)
    source = MeasurementFile(path, column_mapping={"customer": "account"})
    with prepare(source, uid_namespace="n") as batch:
        body = batch.files[0].file
        body.seek(0)
        items = json.loads(body.read())["measurements"]
    assert [(i["account"], i["measure"], i["who"]) for i in items] == [
        ("a", {"calls": 1.0}, {"region": "eu"}),
        ("b", {"calls": 2.0}, {"region": "us"}),
    ]
    assert all(i["ts"] == "2026-01-01T00:00:00Z" for i in items)


def test_parquet_bad_cell_names_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    write_parquet(path, [{"account": "a", "meter": "m", "ts": "2026-01-01T00:00:00Z", "measure.x": "lots"}])
    with pytest.raises(M3terValidationError, match=r"bad.parquet row 1: column 'measure.x' is 'lots'"):
        prepare(path, uid_namespace="n")


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(M3terConfigError, match=r"airflow-provider-m3ter\[parquet\]"):
        prepare(path, uid_namespace="n")


# -- bulk file upload ---------------------------------------------------------------------------
def test_upload_streams_one_file_and_the_job_ingests_each_measurement_once(emu):
    result = hook().upload_measurements(rows(3000), uid_namespace="up", poll_interval=0.05)
    assert result["measurements"] == 3000
    assert result["files"] == 1
    assert result["status"] == "succeeded"
    assert (result["total_rows"], result["processed_rows"], result["failed_rows"]) == (3000, 3000, 0)
    assert len(emu.measurements()) == 3000
    stats = emu.stats()
    assert stats["requests"][GENERATE] == 1
    assert stats["requests"][PUT] == 1
    assert stats["requests"].get(MEASUREMENTS, 0) == 0  # not through REST ingest
    assert stats["authorization_on_upload"] == 0  # the bearer token never went to the presigned URL
    json.dumps(result)


def test_an_upload_again_of_the_same_rows_is_ingested_once(emu):
    hook().upload_measurements(rows(500), uid_namespace="same", poll_interval=0.05)
    hook().upload_measurements(rows(500)[::-1], uid_namespace="same", poll_interval=0.05)
    assert len(emu.measurements()) == 500


def test_upload_and_rest_ingest_give_the_same_uids(emu):
    hook().upload_measurements(rows(200), uid_namespace="ns", poll_interval=0.05)
    hook().submit_measurements(rows(200), uid_namespace="ns")
    assert len(emu.measurements()) == 200


def test_input_over_max_file_bytes_is_split_into_files_and_jobs(emu):
    from m3ter_provider.core.ingest.upload import upload

    result = upload(
        hook().client, rows(3000), uid_namespace="big", max_file_bytes=200_000, poll_interval=0.05
    )
    assert result["files"] == len(result["job_ids"]) > 1
    assert result["total_rows"] == 3000
    assert len(emu.measurements()) == 3000


def test_bad_input_uploads_nothing(emu):
    bad = rows(10)
    bad[7]["ts"] = "yesterday"
    with pytest.raises(M3terValidationError, match="measurement #7"):
        hook().upload_measurements(bad)
    assert emu.stats()["requests"].get(GENERATE, 0) == 0


def test_a_failed_upload_job_raises_naming_it(emu):
    emu.fail_next_job("fileupload")
    with pytest.raises(M3terJobFailedError, match=r"measurement file upload .* ended failed"):
        hook().upload_measurements(rows(5), poll_interval=0.05)


def test_rows_m3ter_refuses_are_reported_like_check_ingest_failures(emu):
    refused = [*rows(4), {"account": "acct1", "meter": "unknown_meter", "ts": "2026-01-01T00:00:00Z"}]
    with pytest.raises(M3terIngestRejectedError, match="1 "):
        hook().upload_measurements(
            refused, poll_interval=0.05, check_ingest_failures="fail", ingest_failures_wait=5
        )
    result = hook().upload_measurements(
        rows(3), poll_interval=0.05, check_ingest_failures="warn", ingest_failures_wait=0.5
    )
    assert result["rejected"] == 0


# -- usage queries to a file --------------------------------------------------------------------
WINDOW = {"start": "2026-01-01T00:00:00Z", "end": "2026-01-08T00:00:00Z"}


def test_a_usage_query_over_the_limit_is_split_until_every_part_is_complete(emu, tmp_path):
    hook().submit_measurements(rows(2000, minute_step=5), uid_namespace="q")
    destination = tmp_path / "usage.jsonl"
    result = hook().query_usage(destination, limit=300, **WINDOW)
    assert result["rows"] == 2000
    assert result["parts"] > 1
    assert result["requests"] == emu.stats()["requests"][QUERY]
    items = [json.loads(line) for line in destination.read_text().splitlines()]
    assert len({i["uid"] for i in items}) == 2000
    assert sum(i["measure"]["calls"] for i in items) == sum(float(i % 10) for i in range(2000))
    assert set(result) == {"destination", "format", "rows", "requests", "parts", "start", "end"}


def test_usage_query_to_csv_and_parquet(emu, tmp_path):
    import pyarrow.parquet as pq

    hook().submit_measurements(rows(50), uid_namespace="f")
    hook().query_usage(tmp_path / "u.csv", **WINDOW)
    with open(tmp_path / "u.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 50
    assert sum(float(r["measure.calls"]) for r in table) == sum(float(i % 10) for i in range(50))
    hook().query_usage(tmp_path / "u.parquet", **WINDOW)
    parquet = pq.read_table(tmp_path / "u.parquet").to_pylist()
    assert len(parquet) == 50
    assert sum(r["measure.calls"] for r in parquet) == sum(float(i % 10) for i in range(50))


def test_usage_query_to_an_object_storage_path(emu, tmp_path):
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    hook().submit_measurements(rows(20), uid_namespace="o")
    destination = ObjectStoragePath(f"file://{tmp_path}/out/u.jsonl")
    assert hook().query_usage(destination, **WINDOW)["rows"] == 20
    assert len((tmp_path / "out" / "u.jsonl").read_text().splitlines()) == 20


def test_aggregated_usage_by_account_as_m3ter_computes_it(emu, tmp_path):
    meter_id = emu.entities("meters")[0]["id"]
    data = rows(90)
    hook().submit_measurements(data, uid_namespace="agg")
    aggregations = [
        {"meterId": meter_id, "fieldCode": "calls", "fieldType": "MEASURE", "function": f}
        for f in ("SUM", "COUNT", "MIN", "MAX", "MEAN", "LATEST")
    ] + [{"meterId": meter_id, "fieldCode": "region", "fieldType": "DIMENSION", "function": "UNIQUE"}]
    destination = tmp_path / "agg.jsonl"
    hook().query_usage(destination, aggregations=aggregations, groups=[{"groupType": "ACCOUNT"}], **WINDOW)
    got = {
        (r["accountCode"], r["function"]): r["value"]
        for r in map(json.loads, destination.read_text().splitlines())
    }
    for account in ("acct0", "acct1", "acct2"):
        mine = [r for r in data if r["account"] == account]
        values = [r["measure"]["calls"] for r in mine]
        latest = max(mine, key=lambda r: r["ts"])["measure"]["calls"]
        assert got[(account, "SUM")] == sum(values)
        assert got[(account, "COUNT")] == len(values)
        assert got[(account, "MIN")] == min(values)
        assert got[(account, "MAX")] == max(values)
        assert got[(account, "MEAN")] == pytest.approx(sum(values) / len(values))
        assert got[(account, "LATEST")] == latest
        assert got[(account, "UNIQUE")] == len({r["who"]["region"] for r in mine})


def test_aggregated_usage_grouped_by_dimension_with_a_dimension_filter(emu, tmp_path):
    meter_id = emu.entities("meters")[0]["id"]
    hook().submit_measurements(rows(40), uid_namespace="dim")
    destination = tmp_path / "dim.jsonl"
    hook().query_usage(
        destination,
        aggregations=[
            {"meterId": meter_id, "fieldCode": "calls", "fieldType": "MEASURE", "function": "COUNT"}
        ],
        groups=[{"groupType": "DIMENSION", "meterId": meter_id, "fieldCode": "region"}],
        dimension_filters=[{"meterId": meter_id, "fieldCode": "region", "values": ["eu"]}],
        **WINDOW,
    )
    (row,) = map(json.loads, destination.read_text().splitlines())
    assert row["dimensions"] == {"region": "eu"} and row["value"] == 20


def test_an_aggregated_answer_cut_off_is_an_error_that_says_how_to_narrow_it(emu, tmp_path):
    from m3ter_provider.errors import M3terUsageQueryError

    meter_id = emu.entities("meters")[0]["id"]
    hook().submit_measurements(rows(30), uid_namespace="cut")
    with pytest.raises(M3terUsageQueryError, match="narrow"):
        hook().query_usage(
            tmp_path / "x.jsonl",
            aggregations=[
                {"meterId": meter_id, "fieldCode": "calls", "fieldType": "MEASURE", "function": "SUM"}
            ],
            groups=[{"groupType": "ACCOUNT"}],
            limit=2,
            **WINDOW,
        )
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ({"start": "2026-01-02", "end": "2026-01-01"}, "must be after"),
        ({"start": "yesterday", "end": "2026-01-01"}, "start 'yesterday'"),
        ({**WINDOW, "limit": 20_001}, "limit"),
        ({**WINDOW, "groups": [{"groupType": "ACCOUNT"}]}, "groups need aggregations"),
        (
            {
                **WINDOW,
                "aggregations": [
                    {"meterId": "m", "fieldCode": "f", "fieldType": "MEASURE", "function": "AVG"}
                ],
            },
            "function 'AVG'",
        ),
        (
            {
                **WINDOW,
                "aggregations": [
                    {"meterId": "m", "fieldCode": "f", "fieldType": "DIMENSION", "function": "SUM"}
                ],
            },
            "COUNT or UNIQUE",
        ),
        ({**WINDOW, "dimension_filters": [{"meterId": "m", "fieldCode": "f", "values": []}]}, "values"),
    ],
)
def test_bad_queries_are_refused_before_anything_is_sent(query, match):
    with pytest.raises(M3terConfigError, match=match):
        query_body(**query)


def test_the_pacer_lets_a_burst_through_then_two_per_second():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(rate=2.0, burst=20, clock=lambda: now[0])
    for _ in range(20):
        pacer.wait(sleep)
    assert slept == []
    for _ in range(10):
        pacer.wait(sleep)
    assert now[0] == pytest.approx(5.0)  # 10 more calls at 2 per second
