"""Config entities (accounts, products, meters, ...) and m3ter's nextToken paging."""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .common import ApiError, code_problem, iso, new_id, utcnow
from .relations import check_delete, check_references, derived_fields, predicate_filter

DEFAULT_PAGE_SIZE = 10
"""pageSize when the request has none (the spec only documents 10 for search endpoints)."""

SYSTEM_FIELDS = ("id", "version", "dtCreated", "dtLastModified", "createdBy", "lastModifiedBy")
SERVER_FIELDS = {"balances": ("amount",)}
"""Fields m3ter maintains itself (a Balance's amount moves with its transactions): a PUT keeps them."""


@dataclass(frozen=True)
class CollectionSpec:
    """One CRUD collection: its URL segment, paging maximum, required fields and list filters."""

    name: str
    max_page_size: int
    required: tuple[str, ...]
    filters: dict[str, str] = field(default_factory=dict)  # query parameter -> entity field
    unique_code: bool = False


def _spec(
    name: str, max_page: int, required: str, filters: str = "", unique_code: bool = False, ids: bool = True
) -> CollectionSpec:
    pairs = (item.split("=") if "=" in item else (item, item) for item in filters.split())
    by_id = {"ids": "id"} if ids else {}
    return CollectionSpec(name, max_page, tuple(required.split()), {**by_id, **dict(pairs)}, unique_code)


# Required fields are the *Request schema's, maxima the list operation's pageSize maximum
# (tests/testing/test_emulator_spec.py checks this table against the spec).
COLLECTIONS: dict[str, CollectionSpec] = {
    spec.name: spec
    for spec in (
        _spec("accounts", 100, "code emailAddress name", "codes=code", unique_code=True),
        _spec("products", 200, "code name", unique_code=True),
        _spec("meters", 100, "code dataFields derivedFields name", "codes=code productId", unique_code=True),
        _spec(
            "aggregations",
            100,
            "aggregation meterId name quantityPerUnit rounding targetField unit",
            "codes=code",
            unique_code=True,
        ),
        _spec(
            "compoundaggregations",
            100,
            "calculation name quantityPerUnit rounding unit",
            "codes=code productId",
            unique_code=True,
        ),
        _spec("plans", 100, "code name planTemplateId", "accountId", unique_code=True),
        _spec(
            "plantemplates",
            100,
            "billFrequency currency name productId standingCharge",
            "productId",
            unique_code=True,
        ),
        _spec("pricings", 100, "pricingBands startDate", "planId planTemplateId aggregationId"),
        _spec(
            "accountplans", 100, "accountId startDate", "account=accountId plan=planId contract=contractId"
        ),
        _spec("contracts", 100, "accountId endDate name startDate", "codes=code accountId", unique_code=True),
        _spec("counters", 200, "name unit", "codes=code productId", unique_code=True),
        _spec("commitments", 100, "accountId amount currency endDate startDate", "accountId contractId"),
        _spec("plangroups", 200, "currency name", "accountId", unique_code=True),
        _spec(
            "balances",
            100,
            "accountId code currency endDate name startDate",
            "accountId contractId contract=contractId",
        ),
        _spec("statementdefinitions", 100, "aggregationFrequency", ids=False),
        _spec("picklists/currency", 100, "name", "codes=code archived", unique_code=True),
        _spec("picklists/transactiontypes", 100, "name", "codes=code archived", unique_code=True),
        _spec("dataexports/destinations", 200, ""),  # S3 or GCS: the spec's anyOf checks each
        _spec("dataexports/schedules", 100, ""),  # USAGE or OPERATIONAL: likewise
    )
}

# Every list endpoint the emulator serves -> the spec's pageSize maximum.
PAGE_SIZE_MAXIMA: dict[str, int] = {
    **{f"/organizations/{{orgId}}/{spec.name}": spec.max_page_size for spec in COLLECTIONS.values()},
    "/organizations/{orgId}/bills": 100,
    "/organizations/{orgId}/billjobs": 100,
    "/organizations/{orgId}/statementjobs": 100,
    "/organizations/{orgId}/dataexports/jobs": 100,
    "/organizations/{orgId}/fileuploads/measurements/jobs": 100,
}


def query_values(query: dict[str, list[str]], name: str) -> list[str] | None:
    """A list-valued query parameter: repeated (``ids=a&ids=b``) and/or comma-separated."""
    raw = query.get(name)
    if not raw:
        return None
    values = [part.strip() for item in raw for part in item.split(",") if part.strip()]
    return values or None


def query_value(query: dict[str, list[str]], name: str) -> str | None:
    """A single-valued query parameter; empty means absent."""
    raw = query.get(name)
    return raw[-1] if raw and raw[-1] != "" else None


def _encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode("ascii")


def _decode_token(token: str) -> int:
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        prefix, _, number = text.partition(":")
        if prefix != "after":
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeError) as error:
        raise ApiError(400, "nextToken: invalid value") from error


def paginate(rows: Iterable[tuple[int, dict]], query: dict[str, list[str]], maximum: int) -> dict:
    """Return one page ``{"data": [...], "nextToken"?}`` of ``rows`` (``(seq, item)``, seq ascending)."""
    size_text = query_value(query, "pageSize")
    page_size = DEFAULT_PAGE_SIZE
    if size_text is not None:
        try:
            page_size = int(size_text)
        except ValueError as error:
            raise ApiError(400, f"pageSize: {size_text!r} is not an integer") from error
        if not 1 <= page_size <= maximum:
            raise ApiError(400, f"pageSize: must be between 1 and {maximum}, got {page_size}")
    token = query_value(query, "nextToken")
    after = _decode_token(token) if token is not None else None
    page: list[tuple[int, dict]] = []
    more = False
    for seq, item in rows:
        if after is not None and seq <= after:
            continue
        if len(page) == page_size:
            more = True
            break
        page.append((seq, item))
    body: dict = {"data": [copy.deepcopy(item) for _, item in page]}
    if more:
        body["nextToken"] = _encode_token(page[-1][0])
    return body


def filter_rows(
    rows: Iterable[tuple[int, dict]], query: dict[str, list[str]], filters: dict[str, str]
) -> Iterable[tuple[int, dict]]:
    """Keep rows whose fields match every filter present in ``query`` (any of the listed values)."""
    wanted = {fld: set(vals) for param, fld in filters.items() if (vals := query_values(query, param))}
    for seq, item in rows:
        if all(_field_matches(item.get(fld), values) for fld, values in wanted.items()):
            yield seq, item


def _field_matches(value: object, wanted: set[str]) -> bool:
    if isinstance(value, list):
        return any(str(v) in wanted for v in value)
    if isinstance(value, bool):
        return str(value).lower() in {w.lower() for w in wanted}
    return value is not None and str(value) in wanted


class EntityStore:
    """Every collection's entities, in creation order, with optimistic versioning."""

    def __init__(self, actor: str, sequence: Callable[[], int] | None = None) -> None:
        self.actor = actor
        self._next_seq = sequence or itertools.count().__next__
        self._tables: dict[str, dict[str, tuple[int, dict]]] = {}  # insertion order == creation order
        self._codes: dict[str, dict[str, str]] = {}  # collection -> code -> id

    def reset(self) -> None:
        """Drop every entity."""
        self._tables.clear()
        self._codes.clear()

    def rows(self, collection: str) -> list[tuple[int, dict]]:
        """``(seq, entity)`` pairs of ``collection`` in creation order (live objects)."""
        return list(self._tables.get(collection, {}).values())

    def all(self, collection: str) -> list[dict]:
        """Copies of every entity of ``collection`` in creation order."""
        return [copy.deepcopy(item) for _, item in self.rows(collection)]

    def find(self, collection: str, entity_id: str) -> dict | None:
        """The live entity with ``entity_id`` or None."""
        row = self._tables.get(collection, {}).get(entity_id)
        return row[1] if row else None

    def find_by_code(self, collection: str, code: str) -> dict | None:
        """The live entity with ``code`` (the first one, if seeding made duplicates) or None."""
        entity_id = self._codes.get(collection, {}).get(code)
        return None if entity_id is None else self.find(collection, entity_id)

    def _index_code(self, collection: str, item: dict) -> None:
        code = item.get("code")
        if isinstance(code, str):
            self._codes.setdefault(collection, {}).setdefault(code, item["id"])

    def _unindex_code(self, collection: str, item: dict) -> None:
        codes = self._codes.get(collection, {})
        code = item.get("code")
        if isinstance(code, str) and codes.get(code) == item["id"]:
            del codes[code]
            for _, other in self.rows(collection):  # a seeded duplicate takes over the code
                if other.get("code") == code and other["id"] != item["id"]:
                    codes[code] = other["id"]
                    break

    def get(self, collection: str, entity_id: str) -> dict:
        """A copy of one entity; 404 when unknown."""
        item = self.find(collection, entity_id)
        if item is None:
            raise ApiError(404, f"{_singular(collection)} with id {entity_id!r} not found")
        return copy.deepcopy(item)

    def insert(self, collection: str, data: dict) -> dict:
        """Store ``data`` as a new entity without validation; return a copy with system fields."""
        now = iso(utcnow())
        fields = {k: copy.deepcopy(v) for k, v in data.items() if k not in SYSTEM_FIELDS}
        item = {
            "id": data.get("id") or new_id(),
            "version": 1,
            **fields,
            "createdBy": self.actor,
            "dtCreated": now,
            "lastModifiedBy": self.actor,
            "dtLastModified": now,
        }
        table = self._tables.setdefault(collection, {})
        if item["id"] in table:
            raise ValueError(f"{collection}: an entity with id {item['id']!r} already exists")
        table[item["id"]] = (self._next_seq(), item)
        self._index_code(collection, item)
        return copy.deepcopy(item)

    def create(self, collection: str, body: object) -> dict:
        """Validate ``body`` against the collection's rules and store it (``POST`` collection)."""
        spec = COLLECTIONS[collection]
        data = self._validated(spec, body, None)
        return self.insert(collection, {**data, **derived_fields(self, collection, data)})

    def update(self, collection: str, entity_id: str, body: object) -> dict:
        """Replace an entity (``PUT``): ``version`` must match the stored one; it then goes up by 1."""
        spec = COLLECTIONS[collection]
        item = self.find(collection, entity_id)
        if item is None:
            raise ApiError(404, f"{_singular(collection)} with id {entity_id!r} not found")
        data = self._validated(spec, body, entity_id)
        version = body.get("version") if isinstance(body, dict) else None
        if version is None:
            raise ApiError(400, "version is required when updating an entity")
        if isinstance(version, bool) or not isinstance(version, int):
            raise ApiError(400, "version must be an integer")
        if version != item["version"]:
            raise ApiError(
                409, f"version conflict: sent version {version}, the current version is {item['version']}"
            )
        kept = {
            k: item[k]
            for k in ("id", "createdBy", "dtCreated", *SERVER_FIELDS.get(collection, ()))
            if k in item
        }
        self._unindex_code(collection, item)
        item.clear()
        item.update(
            {
                **kept,
                "version": version + 1,
                **{k: copy.deepcopy(v) for k, v in data.items() if k not in SYSTEM_FIELDS},
                **derived_fields(self, collection, data),
                "lastModifiedBy": self.actor,
                "dtLastModified": iso(utcnow()),
            }
        )
        self._index_code(collection, item)
        return copy.deepcopy(item)

    def delete(self, collection: str, entity_id: str) -> dict:
        """Remove an entity and return it; 404 when unknown."""
        table = self._tables.get(collection, {})
        if entity_id not in table:
            raise ApiError(404, f"{_singular(collection)} with id {entity_id!r} not found")
        check_delete(self, collection, entity_id)
        item = table.pop(entity_id)[1]
        self._unindex_code(collection, item)
        return item

    def list(self, collection: str, query: dict[str, list[str]]) -> dict:
        """One page of a collection, filtered by the spec's filters."""
        spec = COLLECTIONS[collection]
        rows = predicate_filter(
            self, collection, filter_rows(self.rows(collection), query, spec.filters), query
        )
        return paginate(rows, query, spec.max_page_size)

    def singular(self, collection: str) -> str:
        """m3ter's name for one entity of ``collection`` (e.g. "PlanTemplate")."""
        return _singular(collection)

    def _validated(self, spec: CollectionSpec, body: object, entity_id: str | None) -> dict:
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        for name in spec.required:
            if body.get(name) is None or body.get(name) == "":
                raise ApiError(400, f"{name} is required")
        if "code" in body and body["code"] is not None:
            problem = code_problem(body["code"])
            if problem:
                raise ApiError(400, f"code {problem}")
            if spec.unique_code:
                other = self.find_by_code(spec.name, body["code"])
                if other is not None and other["id"] != entity_id:
                    singular = _singular(spec.name)
                    raise ApiError(400, f"code {body['code']!r} is already used by another {singular}")
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 200):
            raise ApiError(400, "name must be a string of at most 200 characters")
        check_references(self, spec.name, body)
        return body


def _singular(collection: str) -> str:
    names = {
        "compoundaggregations": "CompoundAggregation",
        "plantemplates": "PlanTemplate",
        "accountplans": "AccountPlan",
        "plangroups": "PlanGroup",
        "billjobs": "BillJob",
        "statementjobs": "StatementJob",
        "statementdefinitions": "StatementDefinition",
        "picklists/currency": "Currency",
        "picklists/transactiontypes": "TransactionType",
        "dataexports/destinations": "Destination",
        "dataexports/schedules": "Schedule",
        "balancetransactions": "BalanceTransaction",
    }
    return names.get(collection, collection[:-1].capitalize())
