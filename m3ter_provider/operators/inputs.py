"""Reading operator inputs: lists given as rendered templates, and paths to measurement files."""

from __future__ import annotations

import ast
import json
import os
import pathlib
from collections.abc import Iterable
from typing import Any

from m3ter_provider.errors import M3terConfigError


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


def measurements_from_value(value: Any) -> Any:
    """Measurements given inline: any iterable of dicts (a list, a generator), a rendered list, or
    ``{"measurements": [...]}``. An iterable is passed on as it is, to be read lazily."""
    value = parse_rendered(value, "measurements")
    if isinstance(value, dict) and isinstance(value.get("measurements"), list):
        value = value["measurements"]
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, Iterable):
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
