"""The import-linter contracts in pyproject.toml hold on the tree, and each one fails when its rule is
broken (run on a copy of the package with one offending import added)."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LINT_IMPORTS = pathlib.Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")


def lint_imports(root: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300
    )


def copy_of_the_tree(tmp_path: pathlib.Path) -> pathlib.Path:
    for source in (ROOT / "m3ter_provider").rglob("*.py"):
        target = tmp_path / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "__init__.py").touch()
    shutil.copyfile(ROOT / "tests" / "import_contracts.py", tmp_path / "tests" / "import_contracts.py")
    shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract", "said"),
    [
        (
            "core/_text.py",
            "from m3ter_provider.hooks.m3ter import M3terHook",
            "The core (and the error family) imports nothing from Airflow",
            "m3ter_provider.core is not allowed to import airflow",
        ),
        (
            "errors.py",
            "import airflow",
            "The core (and the error family) imports nothing from Airflow",
            "m3ter_provider.errors is not allowed to import airflow",
        ),
        (
            "testing/common.py",
            "import requests",
            "The emulator imports nothing of the provider, and only the standard library",
            "m3ter_provider.testing.common imports requests",
        ),
        (
            "testing/common.py",
            "from m3ter_provider.errors import M3terError",
            "The emulator imports nothing of the provider, and only the standard library",
            "m3ter_provider.testing.common imports m3ter_provider.errors",
        ),
        (
            "sensors/m3ter.py",
            "from m3ter_provider.operators._base import TryRecord",
            "do not reach into each other's private (_x) modules",
            "m3ter_provider.sensors.m3ter imports m3ter_provider.operators._base",
        ),
        (
            "hooks/m3ter.py",
            "from m3ter_provider.operators.m3ter import M3terDataExportOperator",
            "Hooks do not import operators, sensors, triggers or transfers",
            "m3ter_provider.hooks is not allowed to import m3ter_provider.operators",
        ),
    ],
)
def test_a_contract_breaks_when_its_rule_is_broken(tmp_path, module, line, contract, said):
    root = copy_of_the_tree(tmp_path)
    with (root / "m3ter_provider" / module).open("a", encoding="utf-8") as handle:
        handle.write(f"\n{line}  # noqa\n")
    result = lint_imports(root)
    text = " ".join(result.stdout.split())  # import-linter wraps long lines
    assert result.returncode == 1, text
    assert "1 broken" in text
    assert f"{contract}" in text
    assert said in text
