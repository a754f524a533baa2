"""Every ``python`` block of docs/assets-events-lineage.md runs as pasted, against a fresh emulator.

The same conditions as the docs site's generic runner: ``AIRFLOW_CONN_M3TER_DEFAULT`` points at the
emulator, a Meter ``api_calls`` exists, the working directory is a temporary folder. A block preceded
by ``<!-- not run: <reason> -->`` is skipped.
"""

from __future__ import annotations

import pathlib
import re

import pytest

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "assets-events-lineage.md"
BLOCKS = [
    (match.group(2), match.start())
    for match in re.finditer(r"(<!-- not run:[^>]*-->\n)?```python\n(.*?)^```", PAGE.read_text(), re.S | re.M)
    if match.group(1) is None
]


@pytest.mark.parametrize("code", [code for code, _ in BLOCKS], ids=[f"offset{at}" for _, at in BLOCKS])
def test_docs_block_runs(code, m3ter_conn, tmp_path, monkeypatch):
    m3ter_conn.seed("meters", [{"code": "api_calls", "name": "API calls"}])
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(PAGE), "exec"), {"__name__": "docs_block"})  # noqa: S102 - the page is ours


def test_the_page_has_runnable_blocks():
    assert len(BLOCKS) >= 1
