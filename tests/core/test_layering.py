"""The framework-free core imports nothing from Airflow (import-linter checks the same statically)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import m3ter_provider.core

CORE = sorted(
    ["m3ter_provider.core", "m3ter_provider.errors"]
    + [info.name for info in pkgutil.walk_packages(m3ter_provider.core.__path__, "m3ter_provider.core.")]
)


def test_the_core_list_holds_every_core_module():
    names = ["client", "config", "download", "ingest", "ingest.failures", "ingest.sender", "jobs"]
    names += ["paging", "retry", "tokens.cache", "tokens.client", "tokens.store", "transport"]
    for name in names:
        assert f"m3ter_provider.core.{name}" in CORE


def test_the_core_imports_nothing_from_airflow():
    code = (
        "import importlib, json, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
