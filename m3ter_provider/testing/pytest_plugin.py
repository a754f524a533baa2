"""pytest fixtures for the m3ter emulator (registered as a ``pytest11`` entry point).

Imports nothing heavy: the emulator is standard library only.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import M3terEmulator


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "m3ter_emulator(**kwargs): M3terEmulator arguments for the m3ter_emulator fixture, "
        "e.g. limits=False for a test that sends faster than m3ter's rate limits allow",
    )


@pytest.fixture
def m3ter_emulator(request: pytest.FixtureRequest) -> Iterator[M3terEmulator]:
    """A fresh, started emulator on a free port (m3ter's rate limits on); stopped after the test.

    ``@pytest.mark.m3ter_emulator(limits=False, job_duration=0.1)`` passes arguments to
    :class:`M3terEmulator` (say in the test why limits are off).
    """
    marker = request.node.get_closest_marker("m3ter_emulator")
    with M3terEmulator(**(marker.kwargs if marker else {})) as emulator:
        yield emulator


@pytest.fixture
def m3ter_conn(m3ter_emulator: M3terEmulator, monkeypatch: pytest.MonkeyPatch) -> M3terEmulator:
    """``m3ter_emulator`` with ``AIRFLOW_CONN_M3TER_DEFAULT`` pointing at it; returns the emulator."""
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", m3ter_emulator.airflow_conn_json())
    return m3ter_emulator
