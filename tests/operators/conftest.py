from __future__ import annotations

from collections.abc import Iterator

import pytest

from m3ter_provider.testing import M3terEmulator
from tests.operators.helpers import set_connection
from tests.testing.helpers import know_meters


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[M3terEmulator]:
    """A started emulator with short jobs, and ``m3ter_default`` pointing at it."""
    with M3terEmulator(job_duration=0.3) as emulator:
        set_connection(monkeypatch, emulator)
        know_meters(emulator, "api_calls", "m", "storage")  # m3ter refuses measurements of unknown Meters
        yield emulator
