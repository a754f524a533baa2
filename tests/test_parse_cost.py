"""DAG parse cost: the operator, sensor, trigger and hook modules import nothing heavy on top of Airflow.

A DAG file imports them at every parse; the HTTP stack, msgspec, the SDK and the provider's client,
transport and ingest modules wait until a task runs.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: third-party packages a DAG file must not pay for at parse time: the HTTP stacks, msgspec, the SDK
HEAVY_PACKAGES = ("requests", "urllib3", "httpx", "msgspec", "m3ter")
#: the provider's modules that load them (a package refuses its submodules too)
HEAVY_MODULES = ("m3ter_provider.core.client", "m3ter_provider.core.transport", "m3ter_provider.core.ingest")
#: what a DAG file imports from the provider (the trigger module last: it must not come before)
PARSED = (
    "m3ter_provider.operators.m3ter",
    "m3ter_provider.operators.measurements",
    "m3ter_provider.operators.accounts",
    "m3ter_provider.operators.bills",
    "m3ter_provider.operators.statements",
    "m3ter_provider.sensors.m3ter",
    "m3ter_provider.hooks.m3ter",
    "m3ter_provider.links",
    "m3ter_provider.assets",
    "m3ter_provider.sensors.events",
    "m3ter_provider.operators.asset_events",
)
TRIGGER = "m3ter_provider.triggers.m3ter"

_PROBE = """
import json, sys
import airflow  # a DAG file imports Airflow and its base classes first
from airflow.providers.common.compat.sdk import DAG, BaseHook, BaseOperator, BaseSensorOperator
spec = json.loads(sys.argv[1])

def is_heavy(name):
    return name.split(".")[0] in spec["packages"] or any(
        name == m or name.startswith(m + ".") for m in spec["modules"]
    )

# Airflow may have loaded some of them already: forget them (Airflow's own modules keep their
# references) and refuse to load them again, so an import in our modules fails loudly
for name in [n for n in sys.modules if is_heavy(n)]:
    del sys.modules[name]
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if is_heavy(name):
            raise ImportError(f"{name} imported at DAG parse time")
sys.meta_path.insert(0, Refuse())
added = {}
for module in spec["imports"]:
    before = set(sys.modules)
    __import__(module)
    added[module] = sorted(set(sys.modules) - before)
print(json.dumps(added))
"""


def _probe(imports: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    """Import ``imports`` in order in a fresh interpreter that refuses the heavy modules."""
    spec = {"packages": HEAVY_PACKAGES, "modules": HEAVY_MODULES, "imports": imports}
    return subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(spec)], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def added() -> dict[str, list[str]]:
    """What each module a DAG file imports added to ``sys.modules``, then what the trigger module did."""
    out = _probe((*PARSED, TRIGGER))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_operator_sensor_trigger_and_hook_modules_import_nothing_heavy(added):
    assert "m3ter_provider.operators.m3ter" in added["m3ter_provider.operators.m3ter"]  # the probe did import
    everything = sorted({name for names in added.values() for name in names})
    heavy = [
        name
        for name in everything
        if name.split(".")[0] in HEAVY_PACKAGES
        or any(name == m or name.startswith(m + ".") for m in HEAVY_MODULES)
    ]
    assert heavy == [], f"imported at DAG parse time: {heavy}"


def test_operators_and_sensor_leave_the_trigger_module_to_deferral(added):
    """The trigger module loads Airflow's trigger base (pydantic): only a deferring task needs it."""
    parsed = sorted({name for module in PARSED for name in added[module]})
    assert TRIGGER not in parsed
    assert "airflow.triggers.base" not in parsed
    assert TRIGGER in added[TRIGGER]  # and it imports on its own without anything heavy


def test_the_probe_refuses_a_heavy_import():
    """The probe fails a module that imports the client (and requests) at module level."""
    out = _probe(("m3ter_provider.core.download",))
    assert out.returncode != 0
    assert "imported at DAG parse time" in out.stderr
