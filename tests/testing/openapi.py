"""OpenAPI 3.0 -> JSON Schema helpers: find the m3ter spec, validate responses against it."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from m3ter_provider.testing.spec import SPEC_FILE

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_ENV = "M3TER_OPENAPI_SPEC"
IGNORED_KEYWORDS = {
    "discriminator",
    "example",
    "examples",
    "readOnly",
    "writeOnly",
    "xml",
    "externalDocs",
    "deprecated",
    "nullable",
}


# The spec requires EventResponse.dtActioned ("when an Event was actioned"), which an Event nobody
# has actioned cannot have: the emulator leaves it out until then, so the tests do not require it.
REQUIRED_QUIRKS = (("EventResponse", "dtActioned"),)


def find_spec() -> Path | None:
    """The m3ter OpenAPI spec: $M3TER_OPENAPI_SPEC, else the copy shipped in the package."""
    candidates = [os.environ.get(SPEC_ENV), SPEC_FILE]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def to_json_schema(node: Any) -> Any:
    """Convert an OpenAPI 3.0 schema to draft-4 JSON Schema (nullable, Java-only patterns, extensions)."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in IGNORED_KEYWORDS or key.startswith("x-"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key == "pattern" and not _compiles(value):
            continue  # m3ter's patterns use Java classes (\p{Cntrl}) Python's re cannot compile
        else:
            out[key] = to_json_schema(value)
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _is_date_time(value: object) -> bool:
    """RFC 3339 date-time (what OpenAPI's ``format: date-time`` means)."""
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.match(value):
        return False
    try:
        datetime.fromisoformat(
            re.sub(
                r"\.(\d{1,6})\d*",
                lambda m: "." + m.group(1).ljust(6, "0"),
                value.upper().replace("Z", "+00:00"),
            )
        )
    except ValueError:
        return False
    return True


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


class Spec:
    """The loaded spec: operation lookup by concrete path, response validation, strictness check."""

    def __init__(self, path: Path) -> None:
        import jsonschema  # test-only dependency (comes with Airflow)

        self.raw = json.loads(path.read_text())
        self.schemas = to_json_schema(self.raw["components"]["schemas"])
        for name, field in REQUIRED_QUIRKS:
            self.schemas[name]["required"].remove(field)
        self._jsonschema = jsonschema
        self._format_checker = jsonschema.FormatChecker()
        self._format_checker.checks("date-time")(_is_date_time)
        self._templates = [(tuple(p.strip("/").split("/")), p) for p in self.raw["paths"]]

    def template_for(self, path: str) -> str | None:
        """The spec path template a concrete path routes to (literal segments win)."""
        parts = tuple(path.strip("/").split("/"))
        best: tuple[tuple[int, ...], str] | None = None
        for segments, template in self._templates:
            if len(segments) != len(parts):
                continue
            if all(seg.startswith("{") or seg == part for seg, part in zip(segments, parts, strict=True)):
                rank = tuple(int(seg.startswith("{")) for seg in segments)
                if best is None or rank < best[0]:
                    best = (rank, template)
        return best[1] if best else None

    def operation(self, method: str, template: str) -> dict | None:
        return self.raw["paths"].get(template, {}).get(method.lower())

    def response_schema(self, method: str, template: str, status: int) -> dict | None:
        """The JSON schema the spec gives for this operation's ``status`` (exact, then 4XX/5XX, default)."""
        op = self.operation(method, template)
        assert op is not None, f"{method} {template} is not in the spec"
        responses = op["responses"]
        entry = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        assert entry is not None, f"{method} {template}: the spec documents no {status} response"
        if "$ref" in entry:
            entry = self.raw["components"]["responses"][entry["$ref"].split("/")[-1]]
        content = entry.get("content", {}).get("application/json")
        return None if content is None else to_json_schema(content["schema"])

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].split("/")[-1]]
        return schema

    def validate(self, instance: Any, schema: dict, strict: bool = True) -> None:
        """Validate against ``schema`` (refs into the spec's components); ``strict``: no undocumented keys."""
        root = {"allOf": [schema], "components": {"schemas": self.schemas}}
        validator = self._jsonschema.Draft4Validator(root, format_checker=self._format_checker)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        extra = self.undocumented(instance, schema, "$") if strict else []
        assert not extra, f"keys the spec does not document: {extra}"

    def undocumented(self, instance: Any, schema: dict, where: str) -> list[str]:
        """Paths of object keys the schema does not declare (where it declares no additionalProperties)."""
        props, additional = self._properties(schema)
        found: list[str] = []
        if isinstance(instance, dict) and props is not None and additional is None:
            for key, value in instance.items():
                if key not in props:
                    found.append(f"{where}.{key}")
                else:
                    found += self.undocumented(value, props[key], f"{where}.{key}")
        elif isinstance(instance, list):
            items = self.resolve(schema).get("items")
            if isinstance(items, dict):
                for index, value in enumerate(instance):
                    found += self.undocumented(value, items, f"{where}[{index}]")
        return found

    def _properties(self, schema: dict) -> tuple[dict | None, Any]:
        schema = self.resolve(schema)
        if "anyOf" in schema or "oneOf" in schema:
            return None, None  # alternatives: leave to the validator
        props: dict | None = dict(schema["properties"]) if "properties" in schema else None
        additional = schema.get("additionalProperties")
        for part in schema.get("allOf", []):
            sub_props, sub_additional = self._properties(part)
            if sub_props is not None:
                props = {**(props or {}), **sub_props}
            additional = additional if additional is not None else sub_additional
        return props, additional
