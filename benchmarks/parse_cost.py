"""DAG parse cost: what importing the operator module adds on top of an already imported Airflow.

Each sample is a fresh interpreter that imports Airflow (DAG, BaseOperator, BaseHook and
BaseSensorOperator: what any DAG file loads), then times one import: the m3ter operator module or,
for comparison, ``airflow.providers.http.operators.http``. Alternated, medians and spread; also lists
the heavy third-party packages and the provider's core modules each import pulls in.

The provider's bytecode is compiled first, as ``pip install`` does for an installed wheel: with
``PYTHONDONTWRITEBYTECODE`` set (or a read-only checkout) every sample would otherwise time the
compiler on the provider's sources, which a scheduler never pays twice (``--no-compile`` skips
this step).

    python benchmarks/parse_cost.py [--samples 9] [--no-compile]
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import pathlib
import statistics
import subprocess
import sys

HEAVY = ("requests", "urllib3", "httpx", "msgspec", "m3ter", "pydantic")
#: the provider's modules that load the HTTP stack or the ingest machinery: a task's, not a parse's
CORE = (
    "m3ter_provider.core.client",
    "m3ter_provider.core.transport",
    "m3ter_provider.core.tokens.cache",
    "m3ter_provider.core.ingest",
)

_PROBE = """
import json, sys, time
import airflow
from airflow.providers.common.compat.sdk import DAG, BaseHook, BaseOperator, BaseSensorOperator
before = set(sys.modules)
started = time.perf_counter()
__import__(sys.argv[1])
elapsed = time.perf_counter() - started
added = set(sys.modules) - before
heavy = sorted({m.split(".")[0] for m in added} & set(sys.argv[2:]))
heavy += sorted(m for m in added if m in sys.argv[2:] and "." in m)
print(json.dumps({"ms": elapsed * 1000, "modules": len(added), "heavy": heavy}))
"""

MODULES = {
    "m3ter_provider.operators.m3ter": "m3ter",
    "airflow.providers.http.operators.http": "http",
}


def sample(module: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, *HEAVY, *CORE],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--no-compile", action="store_true", help="time with the sources compiled at import")
    args = parser.parse_args(argv)
    if not args.no_compile:
        import m3ter_provider

        compileall.compile_dir(pathlib.Path(m3ter_provider.__file__).parent, quiet=1)
    modules = [m for m in MODULES if importlib.util.find_spec(m.rsplit(".", 2)[0]) is not None]
    samples: dict[str, list[dict]] = {m: [] for m in modules}
    for i in range(args.samples):
        for module in modules if i % 2 == 0 else reversed(modules):
            samples[module].append(sample(module))
    for module, runs in samples.items():
        ms = [r["ms"] for r in runs]
        heavy = ", ".join(runs[-1]["heavy"]) or "none"
        print(
            f"{module}: {statistics.median(ms):.1f} ms median ({min(ms):.1f}-{max(ms):.1f}), "
            f"{runs[-1]['modules']} modules added, heavy modules added: {heavy}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
