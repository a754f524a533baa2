"""Every ```python block of docs/warehouse.md runs, as the docs site's test runs them: in a fresh
interpreter, ``AIRFLOW_CONN_M3TER_DEFAULT`` pointing at a fresh emulator with a Meter ``api_calls``,
the working directory a temporary folder."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from m3ter_provider.testing import M3terEmulator
from tests.testing.helpers import know_meters

PAGE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "warehouse.md"
BLOCK = re.compile(r"(<!-- not run: [^>]*-->\s*)?```python\n(.*?)```", re.DOTALL)


def blocks() -> list[str]:
    return [code for skipped, code in BLOCK.findall(PAGE.read_text()) if not skipped]


def test_the_page_has_one_block_per_capability():
    assert len(blocks()) == 4


@pytest.mark.parametrize("index", range(len(blocks())))
def test_docs_block_runs_against_a_fresh_emulator(index, tmp_path):
    with M3terEmulator() as emulator:
        know_meters(emulator, "api_calls")
        env = {**os.environ, "AIRFLOW_CONN_M3TER_DEFAULT": emulator.airflow_conn_json()}
        result = subprocess.run(
            [sys.executable, "-c", blocks()[index]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert emulator.stats()["measurements_stored"] > 0
