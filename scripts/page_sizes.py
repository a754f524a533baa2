"""Print m3ter_provider.core.paging.MAX_PAGE_SIZES from m3ter's OpenAPI spec (paste the output there).

Usage: python scripts/page_sizes.py [path/to/m3ter-openapi.json]
Without a path it looks where tests/core/test_paging.py looks: the packaged spec, then ../shared.
"""

from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC_PLACES = (
    ROOT / "m3ter_provider" / "testing" / "m3ter-openapi.json",
    ROOT.parent / "shared" / "m3ter-openapi.json",
)
ORG_PREFIX = "/organizations/{orgId}/"


def find_spec() -> pathlib.Path | None:
    return next((place for place in SPEC_PLACES if place.is_file()), None)


def max_page_sizes(spec: dict) -> dict[str, int]:
    """Org-relative path template -> the ``maximum`` of its GET operation's ``pageSize`` parameter."""
    shared = spec.get("components", {}).get("parameters", {})
    table: dict[str, int] = {}
    for path, operations in spec["paths"].items():
        operation = operations.get("get")
        if not isinstance(operation, dict):
            continue
        for parameter in operations.get("parameters", []) + operation.get("parameters", []):
            if "$ref" in parameter:
                parameter = shared[parameter["$ref"].rsplit("/", 1)[-1]]
            if parameter.get("name") == "pageSize" and "maximum" in parameter.get("schema", {}):
                key = path[len(ORG_PREFIX) :] if path.startswith(ORG_PREFIX) else path
                table[key] = int(parameter["schema"]["maximum"])
    return dict(sorted(table.items()))


def main() -> None:
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else find_spec()
    if path is None:
        sys.exit("m3ter-openapi.json not found: give its path")
    table = max_page_sizes(json.loads(path.read_text()))
    print("MAX_PAGE_SIZES: dict[str, int] = {")
    for key, value in table.items():
        print(f'    "{key}": {value},')
    print("}")


if __name__ == "__main__":
    main()
