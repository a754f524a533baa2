"""Cluster tests run only when asked for (``-m cluster``): .ci/run gives them their own step, with the
``cluster`` extra installed and ``M3TER_REQUIRE_CLUSTER=1`` (a missing Redis or PostgreSQL fails)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "cluster" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="a real Celery cluster: run it with -m cluster (.ci/run does)")
    for item in items:
        if item.get_closest_marker("cluster"):
            item.add_marker(skip)
