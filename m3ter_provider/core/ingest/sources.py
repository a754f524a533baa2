"""Measurement inputs read lazily, in chunks of validated structs: iterables of dicts and files.

A list, a generator or any iterable of dicts is read 1,000 rows at a time; a JSON Lines or CSV file
(a local path or anything with ``open()``, such as an ``ObjectStoragePath``) 1 MiB at a time. JSON
Lines are decoded straight into measurement structs, without building dicts.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import itertools
import operator
import os
import pathlib
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from m3ter_provider.core.ingest import schema
from m3ter_provider.core.ingest.columns import PLAIN_COLUMNS, ColumnMap
from m3ter_provider.core.limits import check_file_format
from m3ter_provider.errors import M3terConfigError, M3terValidationError

#: rows of an iterable converted at once
CHUNK_ROWS = 1000
#: bytes of a file read at once
BLOCK_BYTES = 1 << 20
#: measurement file formats, by file suffix
FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
#: CSV columns taken as they are; map fields are columns named ``<map>.<key>`` (``measure.gb``)
CSV_PLAIN_COLUMNS = PLAIN_COLUMNS

#: a chunk of validated measurements and how to name the row at an index in it
Chunk = tuple[list[Any], Callable[[int], str]]


class Source:
    """An input that reads itself in validated chunks (files, query results)."""

    def chunks(self) -> Iterator[Chunk]:  # pragma: no cover - every source defines it
        raise NotImplementedError


class MeasurementFile(Source):
    """A JSON Lines, CSV or Parquet file of measurements, read lazily when submitted.

    JSON Lines: one measurement object per line; blank lines are skipped. CSV: a header row;
    ``account``, ``meter``, ``ts``, ``ets`` and ``uid`` columns as they are, and one column per map
    entry named ``<map>.<key>`` (``measure.gb``, ``who.region``); ``measure``, ``cost`` and
    ``income`` cells are numbers. Empty cells are left out. Parquet: the same column names, or a
    struct or map column per map (``who``, ``measure``); read one record batch at a time (needs
    pyarrow: the ``parquet`` extra).

    :param path: a local path, or an object with ``open()`` (an ``ObjectStoragePath``).
    :param file_format: ``"jsonl"``, ``"csv"`` or ``"parquet"``; by default taken from the file's suffix.
    :param column_mapping: CSV and Parquet: ``{column: field}`` renames columns
        (``{"customer": "account", "calls": "measure.api_calls"}``).
    """

    def __init__(
        self, path: Any, file_format: str | None = None, column_mapping: Mapping[str, str] | None = None
    ) -> None:
        if not hasattr(path, "open") or isinstance(path, str):
            path = pathlib.Path(os.fspath(path))
        self.path = path
        self.file_format = file_format_of(path, file_format)
        if column_mapping and self.file_format == "jsonl":
            raise M3terConfigError(
                "column_mapping is for CSV and Parquet files; JSON Lines name their fields."
            )
        self.column_mapping = dict(column_mapping or {})

    def __repr__(self) -> str:
        return f"MeasurementFile({str(self.path)!r}, file_format={self.file_format!r})"

    def chunks(self) -> Iterator[Chunk]:
        with self.path.open("rb") as handle:
            if self.file_format == "parquet":
                yield from _parquet_chunks(handle, str(self.path), self.column_mapping)
                return
            blocks = _blocks(handle)
            if self.file_format == "jsonl":
                yield from _json_lines_chunks(blocks, str(self.path))
            else:
                yield from _csv_chunks(blocks, str(self.path), self.column_mapping)


def file_format_of(path: Any, file_format: str | None) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"``, from ``file_format`` or else the path's suffix."""
    if file_format is not None and file_format != "":
        fmt = check_file_format(file_format)
        assert fmt is not None
        return fmt
    suffix = pathlib.PurePosixPath(str(path)).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise M3terConfigError(
            f"measurements file {str(path)!r}: cannot tell the format from the suffix {suffix!r}; "
            "name it .jsonl, .ndjson, .csv or .parquet, or set file_format='jsonl', 'csv' or 'parquet'."
        )
    return FILE_FORMATS[suffix]


def chunks_of(measurements: Any) -> Iterator[Chunk]:
    """Validated measurement structs, chunk by chunk, from any supported input."""
    if isinstance(measurements, Source):
        return measurements.chunks()
    if isinstance(measurements, os.PathLike) or (
        hasattr(measurements, "open") and not isinstance(measurements, Iterable)
    ):
        return MeasurementFile(measurements).chunks()
    if isinstance(measurements, (str, bytes, Mapping)) or not isinstance(measurements, Iterable):
        raise M3terValidationError(
            "measurements must be a list (or any iterable) of dicts, or a file path (pathlib.Path, "
            f"ObjectStoragePath, MeasurementFile), not a single {type(measurements).__name__}."
        )
    return _dict_chunks(iter(measurements))


def _dict_chunks(rows: Iterator[Any]) -> Iterator[Chunk]:
    """Each row converted to a struct the moment it is pulled, never collected by reference first.

    A generator may yield one dict again and again, changing it in between (a common way to build
    rows in a loop): collecting the references and converting later would read the last values
    only. Converting as pulled copies every value (maps included) before the next row is asked for,
    and costs no more than converting a list of 1,000 at once.
    """
    import msgspec

    kind = schema.measurement_type()
    convert = msgspec.convert
    start = 0
    while True:
        structs: list[Any] = []
        append = structs.append
        try:
            for row in itertools.islice(rows, CHUNK_ROWS):
                append(convert(row, kind))
        except msgspec.ValidationError:
            index = start + len(structs)
            _validated([row], types.GenericAlias(list, kind), functools.partial(_row_label, index))
            raise  # pragma: no cover - the list conversion fails as the row's did
        if not structs:
            return

        def label(index: int, start: int = start) -> str:
            return f"measurement #{start + index}"

        yield _checked(structs, label), label
        start += len(structs)


_TS = operator.attrgetter("ts")
_ETS = operator.attrgetter("ets")
_TZ = operator.attrgetter("tzinfo")


def _validated(items: list[Any], kind: Any, label: Callable[[int], str]) -> list[Any]:
    """``items`` (dicts) as validated measurement structs; a bad one raises, naming it by ``label``."""
    import msgspec

    try:
        structs = msgspec.convert(items, kind)
    except msgspec.ValidationError as exc:
        raise schema.explain(exc, label, items) from None
    return _checked(structs, label)


def _checked(structs: list[Any], label: Callable[[int], str]) -> list[Any]:
    """Codes checked against m3ter's pattern; date-times normalised to UTC.

    The common case (every date-time already in UTC) is seen in one pass at C speed; only a chunk
    with other offsets walks its rows in Python.
    """
    schema.check_codes(structs, label)
    utc = dt.timezone.utc
    only_utc = {id(utc)}  # by identity: timezone(timedelta(0)) == utc, but is another object
    if set(map(id, map(_TZ, map(_TS, structs)))) != only_utc:
        for index, row in enumerate(structs):
            if row.ts.tzinfo is not utc:
                row.ts = _in_utc(row.ts, "ts", label, index)
    ends = set(map(id, map(_TZ, filter(None, map(_ETS, structs)))))
    if ends and ends != only_utc:
        for index, row in enumerate(structs):
            if row.ets is not None and row.ets.tzinfo is not utc:
                row.ets = _in_utc(row.ets, "ets", label, index)
    return structs


def _in_utc(when: dt.datetime, field: str, label: Callable[[int], str], index: int) -> dt.datetime:
    """``when`` in UTC; a date-time whose UTC time falls outside years 1 to 9999 is refused by name."""
    try:
        return when.astimezone(dt.timezone.utc)
    except OverflowError:
        raise M3terValidationError(
            f"{label(index)}: {field!r} {when.isoformat()!r} is out of range: in UTC it falls outside the "
            "years 1 to 9999. Give a real usage time, e.g. '2026-01-31T12:00:00Z'."
        ) from None


def _blocks(handle: Any) -> Iterator[tuple[bytes, int]]:
    """Whole lines, about a block at a time, with the number of the block's first line."""
    rest = b""
    line = 1
    while data := handle.read(BLOCK_BYTES):
        data = rest + data
        cut = data.rfind(b"\n") + 1
        if not cut:
            rest = data
            continue
        block, rest = data[:cut], data[cut:]
        yield block, line
        line += block.count(b"\n")
    if rest:
        yield rest, line


def _json_lines_chunks(blocks: Iterable[tuple[bytes, int]], path: str) -> Iterator[Chunk]:
    import msgspec

    decoder = schema.line_decoder()
    for block, first_line in blocks:

        def label(index: int, block: bytes = block, first_line: int = first_line) -> str:
            return f"{path} line {_line_of_item(block, first_line, index)}"

        try:
            structs = decoder.decode_lines(block)
        except (msgspec.ValidationError, msgspec.DecodeError):
            raise _first_bad_line(block, first_line, path) from None
        if structs:
            yield _checked(structs, label), label


def _line_of_item(block: bytes, first_line: int, index: int) -> int:
    """The line number of the ``index``-th non-blank line of ``block``."""
    seen = -1
    for number, line in enumerate(block.split(b"\n"), first_line):
        if line.strip():
            seen += 1
            if seen == index:
                return number
    return first_line


def _first_bad_line(block: bytes, first_line: int, path: str) -> M3terValidationError:
    import json

    import msgspec

    decoder = schema.line_decoder()
    for number, line in enumerate(block.split(b"\n"), first_line):
        if not line.strip():
            continue
        try:
            decoder.decode(line)
        except msgspec.ValidationError as exc:  # a subclass of DecodeError: first
            return schema.explain(exc, _line_label(f"{path} line {number}"), [json.loads(line)])
        except msgspec.DecodeError as exc:
            return M3terValidationError(f"{path} line {number}: not valid JSON ({exc}).")
    return M3terValidationError(f"{path}: not valid JSON Lines near line {first_line}.")


def _line_label(where: str) -> Callable[[int], str]:
    """Names the one row of a JSON Lines line for :func:`schema.explain`."""
    return lambda _index: where


def _text_lines(blocks: Iterable[tuple[bytes, int]], path: str) -> Iterator[str]:
    for block, first_line in blocks:
        try:
            text = block.decode("utf-8-sig" if first_line == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise M3terValidationError(f"{path} near line {first_line}: not UTF-8 text ({exc}).") from None
        # only \n, \r\n and \r end a line for the csv module: str.splitlines would also split a
        # quoted cell at U+2028, U+0085, a form feed... and cut its row in two
        yield from io.StringIO(text, newline="")


def _csv_chunks(
    blocks: Iterable[tuple[bytes, int]], path: str, column_mapping: Mapping[str, str] | None = None
) -> Iterator[Chunk]:
    reader = csv.reader(_text_lines(blocks, path))
    header = next(reader, None) or []
    columns = ColumnMap(header, path, column_mapping)
    rows = ((values, reader.line_num) for values in reader if values)
    yield from mapped_chunks(rows, columns, lambda number: f"{path} line {number}")


def mapped_chunks(
    rows: Iterable[tuple[Sequence[Any], int]], columns: ColumnMap, name: Callable[[int], str]
) -> Iterator[Chunk]:
    """Validated chunks of flat rows (``(values, row number)``) read through ``columns``.

    :param name: names row ``number`` in an error (``"data.csv line 7"``).
    """
    kind = types.GenericAlias(list, schema.measurement_type())  # list[Measurement], built at runtime
    items = ((columns.item(values, functools.partial(name, number)), number) for values, number in rows)
    while raw := list(itertools.islice(items, CHUNK_ROWS)):
        chunk = [pair for pair in raw if pair[0]]
        if not chunk:
            continue
        numbers = [number for _, number in chunk]

        def label(index: int, numbers: list[int] = numbers) -> str:
            return name(numbers[index])

        yield _validated([item for item, _ in chunk], kind, label), label


def _parquet_chunks(handle: Any, path: str, column_mapping: Mapping[str, str] | None) -> Iterator[Chunk]:
    """A Parquet file read a record batch at a time (flat memory): flat ``<map>.<key>`` columns or
    whole struct/map columns (``who``, ``measure``)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise M3terConfigError(
            f"{path}: reading Parquet needs pyarrow: pip install 'airflow-provider-m3ter[parquet]'."
        ) from None
    parquet = pq.ParquetFile(handle)
    columns = ColumnMap(parquet.schema_arrow.names, path, column_mapping, whole_maps=True)

    def rows() -> Iterator[tuple[Sequence[Any], int]]:
        number = 0
        for batch in parquet.iter_batches(batch_size=CHUNK_ROWS):
            for values in zip(*batch.to_pydict().values(), strict=True):
                number += 1
                yield values, number

    yield from mapped_chunks(rows(), columns, lambda number: f"{path} row {number}")


def _row_label(index: int, _offset: int) -> str:
    """Names row ``index`` of an iterable (a label for the one-row list it was checked alone in)."""
    return f"measurement #{index}"
