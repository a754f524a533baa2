"""The end-to-end tests here start a real Airflow scheduler (or a soak of killed task processes): under
pytest-xdist they share one group, so they run one after another on one worker, never two schedulers
at once on the 2-core machine (``scripts/test`` passes ``--dist loadgroup``)."""

from __future__ import annotations

import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in pathlib.Path(str(item.path)).parents:
            item.add_marker(pytest.mark.xdist_group("airflow-scheduler"))
