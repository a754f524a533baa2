"""pytest fixtures for the m3ter emulator (registered as a ``pytest11`` entry point).

Imports nothing heavy: the emulator is standard library only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import M3terEmulator


@pytest.fixture
def m3ter_emulator() -> Iterator[M3terEmulator]:
    """A fresh, started emulator on a free port; stopped after the test."""
    with M3terEmulator() as emulator:
        yield emulator


@pytest.fixture
def m3ter_conn(m3ter_emulator: M3terEmulator, monkeypatch: pytest.MonkeyPatch) -> M3terEmulator:
    """``m3ter_emulator`` with ``AIRFLOW_CONN_M3TER_DEFAULT`` pointing at it; returns the emulator."""
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", m3ter_emulator.airflow_conn_json())
    return m3ter_emulator
