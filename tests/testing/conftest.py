"""Fixtures for the emulator's own tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from m3ter_provider.testing import M3terEmulator

# The plugin's fixtures, so these tests also run when the pytest11 entry point is not installed.
from m3ter_provider.testing.pytest_plugin import m3ter_conn, m3ter_emulator  # noqa: F401
from tests.testing.helpers import Api
from tests.testing.openapi import SPEC_ENV, SPEC_FILE, Spec, find_spec


@pytest.fixture
def emu() -> Iterator[M3terEmulator]:
    """A started emulator with short jobs."""
    with M3terEmulator(job_duration=0.2) as emulator:
        yield emulator


@pytest.fixture
def api(emu: M3terEmulator) -> Iterator[Api]:
    """An authenticated client of ``emu``."""
    client = Api(emu)
    yield client
    client.session.close()


@pytest.fixture(scope="session")
def spec() -> Spec:
    """The m3ter OpenAPI spec shipped in the package (or $M3TER_OPENAPI_SPEC): missing is a failure."""
    path = find_spec()
    if path is None:
        pytest.fail(f"m3ter OpenAPI spec not found: the package should ship {SPEC_FILE} (or set ${SPEC_ENV})")
    return Spec(path)
