"""Reading operator inputs: lists given as rendered templates, and measurement files (JSON Lines, CSV)."""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

from m3ter_provider.errors import M3terConfigError, M3terValidationError
from m3ter_provider.ingest import NUMBER_MAPS, STRING_MAPS

#: measurement file formats, by file suffix
FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
#: CSV columns taken as they are; map fields are columns named ``<map>.<key>`` (``measure.gb``)
CSV_PLAIN_COLUMNS = ("account", "meter", "ts", "ets", "uid")


def parse_rendered(value: Any, name: str) -> Any:
    """A value that may arrive as the text of a rendered template (``"{{ ti.xcom_pull(...) }}"``).

    Airflow renders templates to strings unless the DAG sets ``render_template_as_native_obj``:
    a list pulled from XCom arrives as its JSON or Python ``repr``. Both are read back; anything
    else is returned unchanged.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if not text or text[0] not in "[{":
        return value
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise M3terConfigError(
            f"{name} is a string that looks like a list or dict but is neither JSON nor a Python literal: "
            f"{text[:80]!r}."
        ) from None


def as_id_list(value: Any, name: str) -> list[str] | None:
    """A list of ids from a list, a rendered list, or a comma-separated string; ``None`` stays ``None``."""
    value = parse_rendered(value, name)
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple, set)):
        return [str(item) for item in value]
    raise M3terConfigError(f"{name} must be a list of ids or a comma-separated string, not {value!r}.")


def measurements_from_value(value: Any) -> list[Any]:
    """Measurements given inline: a list of dicts, a rendered list, or ``{"measurements": [...]}``."""
    value = parse_rendered(value, "measurements")
    if isinstance(value, dict) and isinstance(value.get("measurements"), list):
        value = value["measurements"]
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise M3terConfigError(
            f"measurements must be a list of dicts (or an XCom holding one), not {type(value).__name__}."
        )
    return value


def open_path(path: Any) -> Any:
    """A local path, or an ``ObjectStoragePath`` (also from a ``scheme://`` string), ready to ``open()``."""
    if hasattr(path, "open") and not isinstance(path, (str, os.PathLike)):
        return path
    if hasattr(path, "fs"):  # an ObjectStoragePath is also os.PathLike
        return path
    text = os.fspath(path)
    if "://" in text:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(text)
    return pathlib.Path(text)


def file_format_of(path: Any, file_format: str | None) -> str:
    if file_format:
        fmt = file_format.lower().lstrip(".")
        fmt = {"ndjson": "jsonl", "jsonlines": "jsonl"}.get(fmt, fmt)
        if fmt not in ("jsonl", "csv"):
            raise M3terConfigError(f"file_format {file_format!r}: use 'jsonl' or 'csv'.")
        return fmt
    suffix = pathlib.PurePosixPath(str(path)).suffix.lower()
    if suffix not in FILE_FORMATS:
        raise M3terConfigError(
            f"measurements_file {str(path)!r}: cannot tell the format from the suffix {suffix!r}; "
            "name it .jsonl, .ndjson or .csv, or set file_format='jsonl' or 'csv'."
        )
    return FILE_FORMATS[suffix]


def read_measurements_file(path: Any, file_format: str | None = None) -> list[dict[str, Any]]:
    """Read measurements from a JSON Lines or CSV file (local path or ``ObjectStoragePath``).

    JSON Lines: one measurement object per line; blank lines are skipped. CSV: a header row;
    ``account``, ``meter``, ``ts``, ``ets`` and ``uid`` columns as they are, and one column per map
    entry named ``<map>.<key>`` (``measure.gb``, ``who.region``); ``measure``, ``cost`` and
    ``income`` cells are numbers. Empty cells are left out.
    """
    target = open_path(path)
    fmt = file_format_of(target, file_format)
    with target.open("r", encoding="utf-8", newline="") as handle:
        text = handle.read()  # Airflow 2's ObjectStoragePath file wrapper cannot be iterated by line
    lines = io.StringIO(text, newline="")
    return list(_jsonl_rows(lines, path) if fmt == "jsonl" else _csv_rows(lines, path))


def _jsonl_rows(handle: Any, path: Any) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(handle, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise M3terValidationError(f"{path} line {number}: not valid JSON ({exc}).") from None
        if not isinstance(item, dict):
            raise M3terValidationError(f"{path} line {number}: expected a JSON object, not {item!r:.60}.")
        yield item


def _csv_rows(handle: Any, path: Any) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(handle)
    columns = reader.fieldnames or []
    for column in columns:
        head, _, key = column.partition(".")
        if column in CSV_PLAIN_COLUMNS or (key and head in (*NUMBER_MAPS, *STRING_MAPS)):
            continue
        raise M3terValidationError(
            f"{path}: unknown column {column!r}; use {', '.join(CSV_PLAIN_COLUMNS)} or '<map>.<key>' "
            f"with a map among {', '.join((*NUMBER_MAPS, *STRING_MAPS))} (for example 'measure.gb')."
        )
    for number, row in enumerate(reader, 2):
        item: dict[str, Any] = {}
        for column, cell in row.items():
            if column is None:
                raise M3terValidationError(f"{path} line {number}: more cells than header columns.")
            if cell is None or cell == "":
                continue
            head, _, key = column.partition(".")
            if not key:
                item[column] = cell
            elif head in NUMBER_MAPS:
                try:
                    item.setdefault(head, {})[key] = float(cell)
                except ValueError:
                    raise M3terValidationError(
                        f"{path} line {number}: column {column!r} is {cell!r}; m3ter takes a number there."
                    ) from None
            else:
                item.setdefault(head, {})[key] = cell
        if item:
            yield item
