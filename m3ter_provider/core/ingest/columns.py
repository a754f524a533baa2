"""Flat rows (CSV lines, SQL result rows, Parquet records) as measurement dicts, by column name.

A column is a measurement field by its name (``account``, ``meter``, ``ts``, ``ets``, ``uid``) or a
map entry named ``<map>.<key>`` (``measure.gb``, ``who.region``); a ``column_mapping`` renames
columns first (``{"customer": "account", "calls": "measure.api_calls"}``). One reader serves the
CSV files, the SQL transfer and Parquet files, so the rules are written once.
"""

from __future__ import annotations

import decimal
from typing import TYPE_CHECKING, Any

from m3ter_provider.core.ingest import schema
from m3ter_provider.errors import M3terValidationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

#: columns taken as they are; map fields are columns named ``<map>.<key>`` (``measure.gb``)
PLAIN_COLUMNS = ("account", "meter", "ts", "ets", "uid")
MAPS = (*schema.NUMBER_MAPS, *schema.STRING_MAPS)


def _number(cell: Any) -> float:
    if isinstance(cell, bool):
        raise ValueError("a boolean")
    if isinstance(cell, (int, float, decimal.Decimal)):
        return float(cell)
    return float(str(cell))


class ColumnMap:
    """How the columns of a result set or file become measurement fields.

    :param columns: the column names, in order.
    :param source: names the input in error messages (a path, ``"the SQL query"``).
    :param column_mapping: ``{column: field}``; a field is a plain field or ``<map>.<key>``.
        Columns not in it are read by their own names.
    :param whole_maps: a column named after a map itself (``who``) holds the whole map (a
        Parquet struct or map column); off for CSV, whose cells are text.
    """

    def __init__(
        self,
        columns: Sequence[str],
        source: str,
        column_mapping: Mapping[str, str] | None = None,
        *,
        whole_maps: bool = False,
    ) -> None:
        mapping = dict(column_mapping or {})
        unknown = [column for column in mapping if column not in columns]
        if unknown:
            raise M3terValidationError(
                f"{source}: column_mapping names {', '.join(map(repr, unknown))}, which "
                f"{'is' if len(unknown) == 1 else 'are'} not among its columns ({', '.join(columns)})."
            )
        self.source = source
        self.columns = list(columns)
        #: (index, field, key): key None for a plain field or a whole map
        self.targets: list[tuple[int, str, str | None]] = []
        seen: dict[tuple[str, str | None], str] = {}
        for index, column in enumerate(columns):
            target = mapping.get(column, column)
            head, _, key = str(target).partition(".")
            if target in PLAIN_COLUMNS or (key and head in MAPS) or (whole_maps and target in MAPS):
                where = (head, key or None)
                if where in seen:
                    raise M3terValidationError(
                        f"{source}: columns {seen[where]!r} and {column!r} both give {target!r}; "
                        "keep one (or map one elsewhere with column_mapping)."
                    )
                seen[where] = column
                self.targets.append((index, head, key or None))
                continue
            renamed = f" (mapped to {target!r})" if column in mapping else ""
            raise M3terValidationError(
                f"{source}: unknown column {column!r}{renamed}; use {', '.join(PLAIN_COLUMNS)} or "
                f"'<map>.<key>' with a map among {', '.join(MAPS)} (for example 'measure.gb'), "
                "rename it with column_mapping, or leave it out of the input."
            )

    def item(self, values: Sequence[Any], label: Callable[[], str]) -> dict[str, Any]:
        """One row's measurement dict: empty and NULL cells are left out; map values are converted
        (numbers for ``measure``/``cost``/``income``, text for the string maps).

        :param label: names the row in an error (called only on an error).
        """
        if len(values) > len(self.targets):
            raise M3terValidationError(f"{label()}: more cells than header columns.")
        item: dict[str, Any] = {}
        for (index, head, key), cell in zip(self.targets, values, strict=False):
            if cell is None or cell == "":
                continue
            if key is None:
                # a Parquet map column reads as a list of (key, value) pairs
                item[head] = dict(cell) if head in MAPS and isinstance(cell, list) else cell
            elif head in schema.NUMBER_MAPS:
                try:
                    item.setdefault(head, {})[key] = _number(cell)
                except (TypeError, ValueError, decimal.InvalidOperation):
                    raise M3terValidationError(
                        f"{label()}: column {self.columns[index]!r} is {cell!r}; m3ter takes a number there."
                    ) from None
            else:
                item.setdefault(head, {})[key] = cell if isinstance(cell, str) else str(cell)
        return item
