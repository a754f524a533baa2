"""m3ter's search endpoints (``GET /accounts/search``, ``/bills/search``, ``/commitments/search``).

``searchQuery`` holds ``$``-separated terms ``<field><comparator><value>`` with the comparators
``:`` (equals; for ``ids``/``codes`` one of a comma-separated list), ``~`` (contains, any case),
``>``, ``>=``, ``<``, ``<=`` (dates, numbers or text); ``operator`` AND (default) or OR joins them.
Pages are ``pageSize`` items (default 10) from document ``fromDocument`` (default 0); the response
carries ``nextToken``: the ``fromDocument`` of the next page.
"""

from __future__ import annotations

import copy
import re

from .common import ApiError
from .relations import moment
from .store import query_value

DEFAULT_SEARCH_PAGE = 10
MAX_SEARCH_PAGE = 100
_TERM = re.compile(r"^([A-Za-z][A-Za-z0-9_.]*)(>=|<=|:|~|>|<)(.*)$")
_LIST_FIELDS = {"ids": "id", "codes": "code"}


def search(items: list[dict], query: dict[str, list[str]]) -> dict:
    """One page of ``items`` matching the request's searchQuery, sorted as asked."""
    terms = [_parse(term) for term in (query_value(query, "searchQuery") or "").split("$") if term]
    combine = any if (query_value(query, "operator") or "AND") == "OR" else all
    found = [item for item in items if not terms or combine(_holds(item, *term) for term in terms)]
    sort_by = query_value(query, "sortBy")
    if sort_by:
        found.sort(key=lambda item: _sort_key(item.get(sort_by)))
    if (query_value(query, "sortOrder") or "ASC") == "DESC":
        found.reverse()
    start = int(query_value(query, "fromDocument") or 0)
    size = int(query_value(query, "pageSize") or DEFAULT_SEARCH_PAGE)
    if start < 0:
        raise ApiError(400, "fromDocument: must be 0 or more")
    body: dict = {"data": [copy.deepcopy(item) for item in found[start : start + size]]}
    if start + size < len(found):
        body["nextToken"] = str(start + size)
    return body


def _parse(term: str) -> tuple[str, str, str]:
    match = _TERM.match(term)
    if not match:
        raise ApiError(
            400, f"searchQuery: cannot read the term {term!r} (expected e.g. name~Acme or currency:USD)"
        )
    return match.group(1), match.group(2), match.group(3)


def _holds(item: dict, field: str, comparator: str, wanted: str) -> bool:
    if field in _LIST_FIELDS:
        return str(item.get(_LIST_FIELDS[field])) in wanted.split(",")
    value = item.get(field)
    if value is None:
        return False
    if comparator == ":":
        return str(value).lower() == wanted.lower() if isinstance(value, bool) else str(value) == wanted
    if comparator == "~":
        return wanted.lower() in str(value).lower()
    left, right = _comparable(value), _comparable(wanted)
    if type(left) is not type(right):
        left, right = str(value), wanted
    return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[comparator]


def _comparable(value: object) -> object:
    when = moment(value)
    if when is not None:
        return when
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def _sort_key(value: object) -> tuple[int, object]:
    comparable = _comparable(value) if value is not None else ""
    return ({"datetime": 0, "float": 1}.get(type(comparable).__name__, 2), comparable)
