"""Measurement inputs read lazily, in chunks of validated structs: iterables of dicts and files.

A list, a generator or any iterable of dicts is read 1,000 rows at a time; a JSON Lines or CSV file
(a local path or anything with ``open()``, such as an ``ObjectStoragePath``) 1 MiB at a time. JSON
Lines are decoded straight into measurement structs, without building dicts.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import operator
import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from m3ter_provider.core.ingest import schema
from m3ter_provider.errors import M3terConfigError, M3terValidationError

#: rows of an iterable converted at once
CHUNK_ROWS = 1000
#: bytes of a file read at once
BLOCK_BYTES = 1 << 20
#: measurement file formats, by file suffix
FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
#: CSV columns taken as they are; map fields are columns named ``<map>.<key>`` (``measure.gb``)
CSV_PLAIN_COLUMNS = ("account", "meter", "ts", "ets", "uid")

#: a chunk of validated measurements and how to name the row at an index in it
Chunk = tuple[list[Any], Callable[[int], str]]


class MeasurementFile:
    """A JSON Lines or CSV file of measurements, read lazily when submitted.

    JSON Lines: one measurement object per line; blank lines are skipped. CSV: a header row;
    ``account``, ``meter``, ``ts``, ``ets`` and ``uid`` columns as they are, and one column per map
    entry named ``<map>.<key>`` (``measure.gb``, ``who.region``); ``measure``, ``cost`` and
    ``income`` cells are numbers. Empty cells are left out.

    :param path: a local path, or an object with ``open()`` (an ``ObjectStoragePath``).
    :param file_format: ``"jsonl"`` or ``"csv"``; by default taken from the file's suffix.
    """

    def __init__(self, path: Any, file_format: str | None = None) -> None:
        if not hasattr(path, "open") or isinstance(path, str):
            path = pathlib.Path(os.fspath(path))
        self.path = path
        self.file_format = file_format_of(path, file_format)

    def __repr__(self) -> str:
        return f"MeasurementFile({str(self.path)!r}, file_format={self.file_format!r})"

    def chunks(self) -> Iterator[Chunk]:
        with self.path.open("rb") as handle:
            blocks = _blocks(handle)
            if self.file_format == "jsonl":
                yield from _json_lines_chunks(blocks, str(self.path))
            else:
                yield from _csv_chunks(blocks, str(self.path))


def file_format_of(path: Any, file_format: str | None) -> str:
    """``"jsonl"`` or ``"csv"``, from ``file_format`` or else the path's suffix."""
    if file_format:
        fmt = file_format.lower().lstrip(".")
        fmt = {"ndjson": "jsonl", "jsonlines": "jsonl"}.get(fmt, fmt)
        if fmt not in ("jsonl", "csv"):
            raise M3terConfigError(f"file_format {file_format!r}: use 'jsonl' or 'csv'.")
        return fmt
    suffix = pathlib.PurePosixPath(str(path)).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise M3terConfigError(
            f"measurements file {str(path)!r}: cannot tell the format from the suffix {suffix!r}; "
            "name it .jsonl, .ndjson or .csv, or set file_format='jsonl' or 'csv'."
        )
    return FILE_FORMATS[suffix]


def chunks_of(measurements: Any) -> Iterator[Chunk]:
    """Validated measurement structs, chunk by chunk, from any supported input."""
    if isinstance(measurements, MeasurementFile):
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
            _validated([row], list[kind], lambda _i, index=index: f"measurement #{index}")  # raises
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
        for row in structs:
            if row.ts.tzinfo is not utc:
                row.ts = row.ts.astimezone(utc)
    ends = set(map(id, map(_TZ, filter(None, map(_ETS, structs)))))
    if ends and ends != only_utc:
        for row in structs:
            if row.ets is not None and row.ets.tzinfo is not utc:
                row.ets = row.ets.astimezone(utc)
    return structs


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
            return schema.explain(exc, lambda _i, number=number: f"{path} line {number}", [json.loads(line)])
        except msgspec.DecodeError as exc:
            return M3terValidationError(f"{path} line {number}: not valid JSON ({exc}).")
    return M3terValidationError(f"{path}: not valid JSON Lines near line {first_line}.")


def _text_lines(blocks: Iterable[tuple[bytes, int]], path: str) -> Iterator[str]:
    for block, first_line in blocks:
        try:
            text = block.decode("utf-8-sig" if first_line == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise M3terValidationError(f"{path} near line {first_line}: not UTF-8 text ({exc}).") from None
        yield from text.splitlines(keepends=True)


def _csv_chunks(blocks: Iterable[tuple[bytes, int]], path: str) -> Iterator[Chunk]:

    kind = list[schema.measurement_type()]  # type: ignore[misc]
    reader = csv.DictReader(_text_lines(blocks, path))
    columns = reader.fieldnames or []
    maps = (*schema.NUMBER_MAPS, *schema.STRING_MAPS)
    for column in columns:
        head, _, key = column.partition(".")
        if column in CSV_PLAIN_COLUMNS or (key and head in maps):
            continue
        raise M3terValidationError(
            f"{path}: unknown column {column!r}; use {', '.join(CSV_PLAIN_COLUMNS)} or '<map>.<key>' "
            f"with a map among {', '.join(maps)} (for example 'measure.gb')."
        )
    rows = ((_csv_item(row, reader.line_num, path), reader.line_num) for row in reader)
    while raw := list(itertools.islice(rows, CHUNK_ROWS)):
        chunk = [pair for pair in raw if pair[0]]
        if not chunk:
            continue
        items = [item for item, _ in chunk]
        lines = [line for _, line in chunk]

        def label(index: int, lines: list[int] = lines) -> str:
            return f"{path} line {lines[index]}"

        yield _validated(items, kind, label), label


def _csv_item(row: dict[str | None, Any], number: int, path: str) -> dict[str, Any]:
    item: dict[str, Any] = {}
    for column, cell in row.items():
        if column is None:
            raise M3terValidationError(f"{path} line {number}: more cells than header columns.")
        if cell is None or cell == "":
            continue
        head, _, key = column.partition(".")
        if not key:
            item[column] = cell
        elif head in schema.NUMBER_MAPS:
            try:
                item.setdefault(head, {})[key] = float(cell)
            except ValueError:
                raise M3terValidationError(
                    f"{path} line {number}: column {column!r} is {cell!r}; m3ter takes a number there."
                ) from None
        else:
            item.setdefault(head, {})[key] = cell
    return item
