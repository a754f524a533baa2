"""Default page sizes: each endpoint's maximum pageSize from m3ter's spec."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest

from m3ter_provider.core.paging import MAX_PAGE_SIZES, max_page_size

REPO = pathlib.Path(__file__).resolve().parents[2]


def _spec_path() -> pathlib.Path:
    """m3ter's spec, shipped with the emulator (a missing copy fails the test, never skips it)."""
    return REPO / "m3ter_provider" / "testing" / "m3ter-openapi.json"


def _script():
    spec = importlib.util.spec_from_file_location("page_sizes", REPO / "scripts" / "page_sizes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_table_is_what_the_spec_says():
    path = _spec_path()
    assert path.is_file(), f"{path} is missing: the package ships m3ter's spec there"
    expected = _script().max_page_sizes(json.loads(path.read_text()))
    assert expected == MAX_PAGE_SIZES
    assert set(MAX_PAGE_SIZES.values()) == {50, 100, 200}
    assert MAX_PAGE_SIZES["integrationdestinations/marketplace/usageReport"] == 50


@pytest.mark.parametrize(
    ("path", "size"),
    [
        ("accounts", 100),
        ("products", 200),
        ("counters", 200),
        ("/organizations/org-1/accounts", 100),
        ("/organizations/org-1/products/", 200),
        ("accounts/abc-123/children", 200),
        ("bills/b1/lineitems", 100),
        ("balances/b1/transactions", 200),
        ("integrationconfigs/entity/Account", 200),
        ("integrationconfigs", 200),
        ("accounts/search", 100),  # a literal segment beats {id}
        ("accounts?codes=a", 100),
        ("accounts/a1", None),
        ("nosuchthing", None),
        ("/oauth/token", None),
    ],
)
def test_lookup_by_path(path, size):
    assert max_page_size(path) == size
