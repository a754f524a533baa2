"""Browser tests run only when asked for (``-m browser``): .ci/run gives them their own step."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "browser" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="a real-browser test: run it with -m browser (.ci/run does)")
    for item in items:
        if item.get_closest_marker("browser"):
            item.add_marker(skip)
