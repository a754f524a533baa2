"""m3ter's OpenAPI spec (shipped beside this module) and a compact validator for what it uses.

The spec uses a small subset of JSON Schema: ``$ref``, ``type`` (+ ``nullable``), ``required``,
``properties``, ``additionalProperties`` (maps), ``items``, ``enum``, ``minLength``/``maxLength``,
``minItems``/``maxItems``, ``minimum``/``maximum`` (``exclusiveMinimum`` as a boolean),
``pattern`` (a full match, as Java's ``Pattern.matches``; two of them in Java syntax, translated
here), ``format`` ``date``/``date-time``/``email`` and the integer ranges of ``int32``/``int64``,
``allOf`` and ``anyOf``. :func:`clean` checks a request body or query value against such a schema
and returns a copy that keeps only the keys the schema declares (m3ter ignores the others), or
raises :class:`~.common.ApiError` 400 naming the field, as m3ter answers a wrongly typed field.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from .common import ApiError, code_problem, parse_date, parse_datetime

SPEC_FILE = Path(__file__).with_name("m3ter-openapi.json")
"""m3ter's published OpenAPI spec, shipped as package data (see README.md in this folder)."""

_JAVA_CODE_PATTERN = r"^([^[\p{Cntrl}\s]])|([^[\p{Cntrl}\s]][[^[\p{Cntrl}\s]] ]*[^[\p{Cntrl}\s]])$"
_JAVA_IDENTIFIER_PATTERN = r"^[\p{L}_$][\p{L}_$0-9]*$"
_MISSING = object()
_INTEGER_BITS = {"int32": 32, "int64": 64}
# An address as Java's (Hibernate) email validators accept one: dot-atom local part, then a domain
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)


@functools.lru_cache(maxsize=1)
def load_spec() -> dict:
    """The parsed spec (read once per process)."""
    return json.loads(SPEC_FILE.read_text(encoding="utf-8"))


@functools.cache
def operation(method: str, template: str) -> dict | None:
    """The spec's operation object for ``METHOD /template``, or None."""
    op = load_spec()["paths"].get(template, {}).get(method.lower())
    return op if isinstance(op, dict) else None


def request_schema(op: dict) -> dict | None:
    """The JSON request body schema of an operation, or None."""
    content = op.get("requestBody", {}).get("content", {})
    media = content.get("application/json") or next(iter(content.values()), None)
    return None if media is None else media.get("schema")


def query_parameters(op: dict) -> dict[str, dict]:
    """The operation's query parameters by name."""
    return {p["name"]: p for p in op.get("parameters", []) if p.get("in") == "query"}


def resolve(schema: dict) -> dict:
    """Follow ``$ref`` into ``components/schemas``."""
    while "$ref" in schema:
        schema = load_spec()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def clean(value: Any, schema: dict, where: str) -> Any:
    """Validate ``value`` against ``schema``; return it without undeclared object keys.

    :param where: the field's name as the error message shows it (``""`` for a whole body).
    """
    schema = resolve(schema)
    if value is None:
        if _allows_null(schema):
            return None
        _fail(where, "must not be null")
    if "anyOf" in schema or "oneOf" in schema:
        return _clean_alternatives(value, schema, where)
    if "discriminator" in schema and isinstance(value, dict):
        # a base schema whose subtypes extend it (DataExplorerGroup: ACCOUNT, DIMENSION, TIME)
        mapped = (schema["discriminator"].get("mapping") or {}).get(
            str(value.get(schema["discriminator"].get("propertyName"), ""))
        )
        if mapped is not None and resolve({"$ref": mapped}) is not schema:
            return clean(value, {"$ref": mapped}, where)
    merged = _merged(schema)
    kind = merged.get("type")
    if kind is None and ("properties" in merged or "additionalProperties" in merged):
        kind = "object"
    _check_type(value, kind, where)
    if "enum" in merged and value not in merged["enum"]:
        _fail(where, f"must be one of {', '.join(map(str, merged['enum']))}, got {value!r}")
    if isinstance(value, str):
        _check_string(value, merged, where)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, merged, where)
    elif isinstance(value, list):
        return _clean_array(value, merged, where)
    elif isinstance(value, dict):
        return _clean_object(value, merged, where)
    return value


def _fail(where: str, reason: str) -> None:
    raise ApiError(400, f"{where}: {reason}" if where else f"request body {reason}")


def _declares_type(schema: dict) -> bool:
    return any(k in schema for k in ("type", "properties", "enum", "allOf", "items"))


def _allows_null(schema: dict) -> bool:
    """``nullable``, no type at all, or (``anyOf``/``oneOf``) an alternative that allows null."""
    if schema.get("nullable"):
        return True
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        return any(_allows_null(resolve(option)) for option in alternatives)
    return not _declares_type(schema)


_MERGED: dict[int, tuple[dict, dict]] = {}  # id(schema) -> (schema, merged): the spec's dicts live on


def _merged(schema: dict) -> dict:
    """``schema`` with its ``allOf`` parts folded in (properties and required united)."""
    found = _MERGED.get(id(schema))
    if found is not None and found[0] is schema:
        return found[1]
    if "allOf" not in schema:
        merged = schema
    else:
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        properties = dict(merged.get("properties", {}))
        required = list(merged.get("required", []))
        for part in schema["allOf"]:
            sub = _merged(resolve(part))
            properties.update(sub.get("properties", {}))
            required += sub.get("required", [])
            for key, val in sub.items():
                if key not in ("properties", "required", "description"):
                    merged.setdefault(key, val)
        if properties:
            merged["properties"] = properties
        if required:
            merged["required"] = required
    _MERGED[id(schema)] = (schema, merged)
    return merged


def _clean_alternatives(value: Any, schema: dict, where: str) -> Any:
    """The first alternative ``value`` matches; where the schema has a ``discriminator`` and the value
    names a mapped one (``sourceType: USAGE``), that one alone, so its error is the one reported."""
    discriminator = schema.get("discriminator") or {}
    mapped = (discriminator.get("mapping") or {}) if isinstance(value, dict) else {}
    chosen = mapped.get(str(value.get(discriminator.get("propertyName"), ""))) if mapped else None
    if chosen is not None:
        return clean(value, {"$ref": chosen}, where)
    first_error: ApiError | None = None
    for option in schema.get("anyOf") or schema.get("oneOf"):
        try:
            return clean(value, option, where)
        except ApiError as error:
            first_error = first_error or error
    assert first_error is not None
    raise first_error


_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean (true or false)",
    "object": "an object",
    "array": "an array",
}


def _check_type(value: Any, kind: str | None, where: str) -> None:
    if kind is None:
        return
    ok = {
        "string": isinstance(value, str),
        "integer": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer()),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }.get(kind, True)
    if not ok:
        _fail(where, f"must be {_TYPE_NAMES[kind]}, got {json.dumps(value)[:60]}")


def _check_string(value: str, schema: dict, where: str) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        _fail(where, f"must be at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        _fail(where, f"must be at most {schema['maxLength']} characters")
    fmt = schema.get("format")
    if fmt == "date-time" and parse_datetime(value) is None:
        _fail(where, f"must be an ISO-8601 date-time with an offset, got {value!r}")
    if fmt == "date" and parse_date(value) is None:
        _fail(where, f"must be an ISO-8601 date (YYYY-MM-DD), got {value!r}")
    if fmt == "email" and _EMAIL.fullmatch(value) is None:
        _fail(where, f"must be an email address, got {value!r}")
    pattern = schema.get("pattern")
    if pattern is not None and not _matches(pattern, value):
        _fail(where, f"{value!r} does not match the pattern {pattern}")


def _matches(pattern: str, value: str) -> bool:
    if pattern == _JAVA_CODE_PATTERN:
        return code_problem(value, max_length=len(value) or 1) is None
    if pattern == _JAVA_IDENTIFIER_PATTERN:
        return (
            bool(value)
            and (value[0].isalpha() or value[0] in "_$")
            and all(c.isalnum() or c in "_$" for c in value)
        )
    compiled = _compiled(pattern)
    return compiled is None or compiled.fullmatch(value) is not None  # Java's Pattern.matches


@functools.cache
def _compiled(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None  # another Java-only pattern: not checked


def _check_number(value: float, schema: dict, where: str) -> None:
    bits = _INTEGER_BITS.get(schema.get("format", "")) if schema.get("type") == "integer" else None
    if bits is not None and not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        _fail(where, f"must be a {bits}-bit integer (format {schema['format']}), got {value!r}")
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None:
        if schema.get("exclusiveMinimum") is True and value <= low:
            _fail(where, f"must be greater than {low}")
        if value < low:
            _fail(where, f"must be at least {low}")
    if high is not None and value > high:
        _fail(where, f"must be at most {high}")


def _clean_array(value: list, schema: dict, where: str) -> list:
    if "minItems" in schema and len(value) < schema["minItems"]:
        _fail(where, f"must hold at least {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        _fail(where, f"must hold at most {schema['maxItems']} items")
    items = schema.get("items")
    if not isinstance(items, dict):
        return list(value)
    return [clean(item, items, f"{where}[{index}]") for index, item in enumerate(value)]


def _clean_object(value: dict, schema: dict, where: str) -> dict:
    prefix = f"{where}." if where else ""
    for name in schema.get("required", []):
        if value.get(name) is None:
            _fail(f"{prefix}{name}", "is required")
    properties = schema.get("properties")
    additional = schema.get("additionalProperties", _MISSING)
    out: dict = {}
    for key, item in value.items():
        if properties is not None and key in properties:
            out[key] = clean(item, properties[key], f"{prefix}{key}")
        elif isinstance(additional, dict):
            out[key] = clean(item, additional, f"{prefix}{key}")
        elif properties is None or additional is True:
            out[key] = item  # a free-form object: kept as sent
        # else: a key the schema does not declare - ignored, as m3ter does (not stored, not echoed)
    return out


def clean_query(query: dict[str, list[str]], op: dict) -> None:
    """Check the query parameters the operation declares (types, ranges, enums); 400 naming one."""
    for name, param in query_parameters(op).items():
        raw = query.get(name)
        if not raw or all(value == "" for value in raw):
            continue
        schema = resolve(param.get("schema", {}))
        if schema.get("type") == "array":
            parts = [p.strip() for item in raw for p in item.split(",") if p.strip()]
            items = resolve(schema.get("items", {}))
            for part in parts:
                clean(_coerce(part, items, name), items, name)
        else:  # every value given, as a repeated parameter's first value may be the one m3ter reads
            for value in raw:
                if value != "":
                    clean(_coerce(value, schema, name), schema, name)


def _coerce(text: str, schema: dict, name: str) -> Any:
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        _fail(name, f"must be {_TYPE_NAMES[kind]}, got {text!r}")
    if kind == "boolean":
        lowered = text.lower()
        if lowered not in ("true", "false"):
            _fail(name, f"must be true or false, got {text!r}")
        return lowered == "true"
    return text
