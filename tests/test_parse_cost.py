"""DAG parse cost: the operator, sensor and trigger modules import nothing heavy on top of Airflow."""

from __future__ import annotations

import json
import subprocess
import sys

#: what a DAG file must not pay for at parse time: the async HTTP stack, msgspec, the official SDK
HEAVY = ("httpx", "msgspec", "m3ter")

_PROBE = """
import json, sys
import airflow  # a DAG file imports Airflow and its base classes first
from airflow.providers.common.compat.sdk import DAG, BaseHook, BaseOperator, BaseSensorOperator
heavy = set(sys.argv[1:])
# Airflow may have loaded some of them already: forget them (Airflow's own modules keep their
# references) and refuse to load them again, so an import in our modules fails loudly
for name in [n for n in sys.modules if n.split(".")[0] in heavy]:
    del sys.modules[name]
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in heavy:
            raise ImportError(f"{name} imported at DAG parse time")
sys.meta_path.insert(0, Refuse())
before = set(sys.modules)
import m3ter_provider.operators.m3ter, m3ter_provider.sensors.m3ter, m3ter_provider.triggers.m3ter
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_operator_sensor_and_trigger_modules_import_nothing_heavy():
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *HEAVY], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    out = out.stdout
    added = json.loads(out.strip().splitlines()[-1])
    assert any(name.startswith("m3ter_provider.operators") for name in added)  # the probe did import them
    heavy = sorted(name for name in added if name.split(".")[0] in HEAVY)
    assert heavy == [], f"imported at DAG parse time: {heavy}"
