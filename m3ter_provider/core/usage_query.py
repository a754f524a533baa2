"""Data Explorer usage queries over any time range, written to a file (no Airflow import).

``POST usage/query`` answers at most ``limit`` (at most 20,000) items and ``hasMoreData``; the items
it returns are the most recently *received*, so a cut-off answer cannot be resumed by timestamp.
:func:`query_usage` therefore splits the time range in two until every part answers complete
(``hasMoreData`` false), and writes the parts' items, earliest part first, to a file: JSON Lines,
CSV or Parquet (pyarrow), at a local path or an ``ObjectStoragePath``. Memory holds one answer at a
time: items go to a temporary JSON Lines file first, CSV and Parquet are written from it.

Usage queries have a low limit per Organization (2 per second, burst 20): calls are paced by a
process-wide token bucket per Organization, and a 429 is still retried by the transport.

An aggregated query (``aggregations``, ``groups``) is not split: its rows are per group over the
whole range, and a group's partial rows from two halves would not add up for MEAN, LATEST or
UNIQUE. An aggregated answer with ``hasMoreData`` raises an error that says how to narrow it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import pathlib
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from m3ter_provider.core._text import plural
from m3ter_provider.core.jobs import export_date
from m3ter_provider.core.pacing import Pacer
from m3ter_provider.errors import M3terConfigError, M3terUsageQueryError

if TYPE_CHECKING:
    from m3ter_provider.core.client import M3terClient

log = logging.getLogger(__name__)

PATH = "usage/query"
MAX_LIMIT = 20_000
#: m3ter's usage query limit per Organization is 2 per second, burst 20: paced 10% under it
RATE_PER_SECOND = 1.8
BURST = 18
AGGREGATION_FUNCTIONS = ("SUM", "MIN", "MAX", "COUNT", "LATEST", "MEAN", "UNIQUE")
FIELD_TYPES = ("DIMENSION", "MEASURE")
GROUP_TYPES = ("ACCOUNT", "DIMENSION", "TIME")
FREQUENCIES = ("DAY", "HOUR", "WEEK", "MONTH", "QUARTER")
FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
#: a part narrower than this is not split further
SMALLEST_PART = dt.timedelta(milliseconds=1)


_PACERS: dict[str, Pacer] = {}
_PACERS_LOCK = threading.Lock()


def pacer_for(client: M3terClient) -> Pacer:
    """The process-wide pacer of the client's Organization."""
    key = client.url(PATH)
    with _PACERS_LOCK:
        return _PACERS.setdefault(key, Pacer(RATE_PER_SECOND, BURST))


def query_body(
    *,
    start: Any,
    end: Any,
    meter_ids: Sequence[str] | None = None,
    account_ids: Sequence[str] | None = None,
    aggregations: Sequence[Mapping[str, Any]] | None = None,
    groups: Sequence[Mapping[str, Any]] | None = None,
    dimension_filters: Sequence[Mapping[str, Any]] | None = None,
    limit: int = MAX_LIMIT,
) -> dict[str, Any]:
    """The checked ``UsageQueryRequest`` (dates as RFC 3339 strings); errors name the argument."""
    body: dict[str, Any] = {"startDate": export_date(start, "start"), "endDate": export_date(end, "end")}
    if _parse(body["endDate"]) <= _parse(body["startDate"]):
        raise M3terConfigError(f"end {body['endDate']} must be after start {body['startDate']}.")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise M3terConfigError(f"limit {limit!r}: m3ter answers 1 to {MAX_LIMIT:,} items per query.")
    body["limit"] = limit
    for key, name, value in (
        ("meterIds", "meter_ids", meter_ids),
        ("accountIds", "account_ids", account_ids),
    ):
        if value:
            if isinstance(value, str) or not all(isinstance(v, str) and v for v in value):
                raise M3terConfigError(f"{name} must be a list of m3ter ids (strings), not {value!r}.")
            body[key] = list(value)
    if aggregations:
        body["aggregations"] = [_aggregation(a, i) for i, a in enumerate(_list(aggregations, "aggregations"))]
    if groups:
        if not aggregations:
            raise M3terConfigError("groups need aggregations: m3ter groups aggregated usage only.")
        body["groups"] = [_group(g, i) for i, g in enumerate(_list(groups, "groups"))]
    if dimension_filters:
        body["dimensionFilters"] = [
            _dimension_filter(f, i) for i, f in enumerate(_list(dimension_filters, "dimension_filters"))
        ]
    return body


def _list(value: Any, name: str) -> list[Any]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise M3terConfigError(f"{name} must be a list of dicts, not {type(value).__name__}.")
    return list(value)


def _meter_field(item: Any, name: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise M3terConfigError(f"{name} must be a dict, not {item!r}.")
    for key in ("meterId", "fieldCode"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise M3terConfigError(f"{name} needs {key!r} (the Meter's id and the Data Field's code).")
    return dict(item)


def _aggregation(item: Any, index: int) -> dict[str, Any]:
    name = f"aggregations[{index}]"
    out = _meter_field(item, name)
    if out.get("function") not in AGGREGATION_FUNCTIONS:
        raise M3terConfigError(
            f"{name}.function {out.get('function')!r}: use one of {', '.join(AGGREGATION_FUNCTIONS)}."
        )
    if out.get("fieldType") not in FIELD_TYPES:
        raise M3terConfigError(f"{name}.fieldType {out.get('fieldType')!r}: use MEASURE or DIMENSION.")
    if out["fieldType"] == "DIMENSION" and out["function"] not in ("COUNT", "UNIQUE"):
        raise M3terConfigError(f"{name}: a DIMENSION field takes COUNT or UNIQUE, not {out['function']}.")
    if out["fieldType"] == "MEASURE" and out["function"] == "UNIQUE":
        raise M3terConfigError(
            f"{name}: UNIQUE is for DIMENSION fields; a MEASURE takes SUM, MIN, MAX, COUNT, LATEST or MEAN."
        )
    return out


def _group(item: Any, index: int) -> dict[str, Any]:
    name = f"groups[{index}]"
    if not isinstance(item, Mapping) or item.get("groupType") not in GROUP_TYPES:
        raise M3terConfigError(f"{name} needs groupType, one of {', '.join(GROUP_TYPES)}: {item!r}.")
    if item["groupType"] == "DIMENSION":
        return _meter_field(item, name)
    if item["groupType"] == "TIME" and item.get("frequency") not in FREQUENCIES:
        raise M3terConfigError(
            f"{name}.frequency {item.get('frequency')!r}: use one of {', '.join(FREQUENCIES)}."
        )
    return dict(item)


def _dimension_filter(item: Any, index: int) -> dict[str, Any]:
    name = f"dimension_filters[{index}]"
    out = _meter_field(item, name)
    values = out.get("values")
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise M3terConfigError(f"{name}.values must be a non-empty list of strings.")
    out["values"] = [str(v) for v in values]
    return out


def _parse(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def file_format_of(destination: Any, file_format: str | None) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"``, from ``file_format`` or the destination's suffix."""
    if file_format:
        fmt = {"ndjson": "jsonl", "jsonlines": "jsonl"}.get(file_format.lower(), file_format.lower())
        if fmt not in ("jsonl", "csv", "parquet"):
            raise M3terConfigError(f"file_format {file_format!r}: use 'jsonl', 'csv' or 'parquet'.")
        return fmt
    suffix = pathlib.PurePosixPath(str(destination)).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise M3terConfigError(
            f"destination {str(destination)!r}: cannot tell the format from {suffix!r}; name it .jsonl, .csv "
            "or .parquet, or set file_format."
        )
    return FILE_FORMATS[suffix]


def iter_parts(
    client: M3terClient,
    body: Mapping[str, Any],
    *,
    pacer: Pacer | None = None,
    stats: dict[str, int] | None = None,
) -> Iterator[tuple[dt.datetime, dt.datetime, list[dict[str, Any]]]]:
    """``(start, end, items)`` of every complete part of the query, earliest part first."""
    pacer = pacer or pacer_for(client)
    stats = stats if stats is not None else {}
    aggregated = bool(body.get("aggregations"))
    pending = [(_parse(body["startDate"]), _parse(body["endDate"]))]
    while pending:
        start, end = pending.pop()
        pacer.wait(client.sleep)
        part = {**body, "startDate": _iso(start), "endDate": _iso(end)}
        answer = client.request("POST", PATH, json=part, idempotent=True)
        stats["requests"] = stats.get("requests", 0) + 1
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise M3terUsageQueryError(f"POST {PATH} answered without a data list.")
        if not answer.get("hasMoreData"):
            yield start, end, data
            continue
        if aggregated:
            raise M3terUsageQueryError(
                f"the aggregated usage query from {part['startDate']} to {part['endDate']} has more than "
                f"{body['limit']:,} rows: narrow meter_ids or account_ids, group less finely, or query raw "
                "usage (no aggregations), which is split by time until complete."
            )
        middle = start + (end - start) / 2
        if end - start <= SMALLEST_PART or middle in (start, end):
            raise M3terUsageQueryError(
                f"more than {body['limit']:,} usage items between {part['startDate']} and {part['endDate']}: "
                "the range cannot be split further; raise limit (at most 20,000) or narrow the query."
            )
        stats["splits"] = stats.get("splits", 0) + 1
        pending += [(middle, end), (start, middle)]  # the earlier half is answered first


def query_usage(
    client: M3terClient,
    destination: Any,
    *,
    start: Any,
    end: Any,
    meter_ids: Sequence[str] | None = None,
    account_ids: Sequence[str] | None = None,
    aggregations: Sequence[Mapping[str, Any]] | None = None,
    groups: Sequence[Mapping[str, Any]] | None = None,
    dimension_filters: Sequence[Mapping[str, Any]] | None = None,
    limit: int = MAX_LIMIT,
    file_format: str | None = None,
    pacer: Pacer | None = None,
) -> dict[str, Any]:
    """Run a usage query over ``[start, end)``, split until complete, and write every item to
    ``destination`` (a local path or an ``ObjectStoragePath``; replaced whole when done).

    :return: ``{"destination", "format", "rows", "requests", "parts", "start", "end"}``.
    """
    from m3ter_provider.core.download import _Target

    body = query_body(
        start=start,
        end=end,
        meter_ids=meter_ids,
        account_ids=account_ids,
        aggregations=aggregations,
        groups=groups,
        dimension_filters=dimension_filters,
        limit=limit,
    )
    fmt = file_format_of(destination, file_format)
    if fmt == "parquet":
        _pyarrow()
    stats: dict[str, int] = {}
    rows = parts = 0
    columns: dict[str, bool] = {}  # flat column -> numeric so far
    with tempfile.TemporaryFile("w+b", prefix="m3ter-usage-") as lines:
        for _start, _end, items in iter_parts(client, body, pacer=pacer, stats=stats):
            parts += 1
            for item in items:
                lines.write(json.dumps(item, separators=(",", ":")).encode() + b"\n")
                if fmt != "jsonl":
                    _note_columns(columns, _flatten(item))
            rows += len(items)
        lines.seek(0)
        target = _Target(destination)
        try:
            with target.open_temporary() as out:
                if fmt == "jsonl":
                    while block := lines.read(1 << 20):
                        out.write(block)
                elif fmt == "csv":
                    _write_csv(lines, out, list(columns))
                else:
                    _write_parquet(lines, out, columns)
            target.commit()
        except BaseException:
            target.discard()
            raise
    log.info(
        "Wrote %s of m3ter usage (%s, %s) to %s.",
        plural(rows, "row"),
        plural(stats.get("requests", 0), "query", "queries"),
        plural(parts, "part"),
        destination,
    )
    return {
        "destination": str(destination),
        "format": fmt,
        "rows": rows,
        "requests": stats.get("requests", 0),
        "parts": parts,
        "start": body["startDate"],
        "end": body["endDate"],
    }


def _flatten(item: Mapping[str, Any]) -> dict[str, Any]:
    """Nested maps as ``map.key`` columns (``measure.gb``), as the CSV measurement reader takes them."""
    flat: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                flat[f"{key}.{sub}"] = inner
        else:
            flat[key] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _note_columns(columns: dict[str, bool], flat: Mapping[str, Any]) -> None:
    for key, value in flat.items():
        numeric = value is None or _is_number(value)
        columns[key] = columns.get(key, True) and numeric


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _records(lines: Any) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            yield _flatten(json.loads(line))


def _write_csv(lines: Any, out: Any, columns: list[str]) -> None:
    import csv
    import io

    text = io.TextIOWrapper(out, encoding="utf-8", newline="", write_through=True)
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for record in _records(lines):
        writer.writerow({k: _cell(v) for k, v in record.items()})
    text.flush()
    text.detach()


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise M3terConfigError(
            "writing Parquet needs pyarrow: pip install 'airflow-provider-m3ter[parquet]', or write "
            "JSON Lines or CSV."
        ) from None
    return pyarrow


def _write_parquet(lines: Any, out: Any, columns: Mapping[str, bool], batch_rows: int = 10_000) -> None:
    import itertools

    pa = _pyarrow()
    import pyarrow.parquet as pq

    columns = columns or {"ts": False}  # no rows: a file with one (empty) column
    schema = pa.schema(
        [(name, pa.float64() if numeric else pa.string()) for name, numeric in columns.items()]
    )
    records = _records(lines)
    with pq.ParquetWriter(out, schema) as writer:
        while batch := list(itertools.islice(records, batch_rows)):
            arrays = {
                name: [
                    None
                    if (v := r.get(name)) is None
                    else (float(v) if numeric else (v if isinstance(v, str) else str(_cell(v))))
                    for r in batch
                ]
                for name, numeric in columns.items()
            }
            writer.write_table(pa.table(arrays, schema=schema))
