"""The command, the pytest fixtures, and the standard-library-only promise."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

import m3ter_provider.testing as emulator_package
from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing.cli import build_parser

PACKAGE_DIR = Path(emulator_package.__file__).parent
REPO_ROOT = PACKAGE_DIR.parents[1]
ALLOWED_THIRD_PARTY = {"pytest_plugin.py": {"pytest"}}  # the plugin module runs inside pytest anyway


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE_DIR.glob("*.py")))
def test_emulator_modules_import_only_the_standard_library(module: str) -> None:
    tree = ast.parse((PACKAGE_DIR / module).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"__future__"} | ALLOWED_THIRD_PARTY.get(module, set())
    assert imported <= allowed, f"{module} imports {sorted(imported - allowed)}"


def test_importing_the_emulator_and_plugin_pulls_in_nothing_heavy() -> None:
    code = (
        "import sys, m3ter_provider.testing, m3ter_provider.testing.pytest_plugin;"
        "import m3ter_provider.testing.cli;"
        "heavy = sorted({'airflow', 'requests', 'httpx', 'urllib3', 'jsonschema'} & set(sys.modules));"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cli_serves_until_terminated() -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "m3ter_provider.testing",
            "--port",
            "0",
            "--org-id",
            "cli-org",
            "--access-key-id",
            "cli-key",
            "--api-secret",
            "cli-secret",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        first = process.stdout.readline()
        assert "serving on http://127.0.0.1:" in first, first + process.stderr.read()
        url = first.strip().rsplit(" ", 1)[-1]
        conn_line = process.stdout.readline().strip()
        conn = json.loads(conn_line.split("=", 1)[1].strip("'"))
        assert conn == {
            "conn_type": "m3ter",
            "login": "cli-key",
            "password": "cli-secret",
            "host": url,
            "extra": {"org_id": "cli-org"},
        }
        token = requests.post(
            f"{url}/oauth/token",
            auth=("cli-key", "cli-secret"),
            data={"grant_type": "client_credentials"},
            timeout=5,
        )
        assert token.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()


def test_cli_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port, args.org_id, args.job_duration) == ("127.0.0.1", 8765, "emulator-org", 1.0)
    assert args.token_expires_in == 18000 and not args.verbose


def test_m3ter_emulator_fixture_is_started(m3ter_emulator: M3terEmulator) -> None:
    assert m3ter_emulator.running
    assert requests.get(f"{m3ter_emulator.url}/_emulator/stats", timeout=5).status_code == 200


def test_m3ter_conn_fixture_sets_the_airflow_connection(m3ter_conn: M3terEmulator) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_M3TER_DEFAULT"])
    assert conn["host"] == m3ter_conn.url
    assert conn["login"] == m3ter_conn.access_key_id
    assert conn["password"] == m3ter_conn.api_secret
    assert conn["extra"] == {"org_id": m3ter_conn.org_id} == m3ter_conn.connection_extra()


def test_start_stop_and_repr() -> None:
    emu = M3terEmulator()
    assert not emu.running
    emu.start()
    assert emu.start() is emu and emu.port != 0
    assert "running" in repr(emu)
    emu.stop()
    emu.stop()
    assert not emu.running


def test_quiet_by_default_and_verbose_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    with M3terEmulator() as quiet:
        requests.get(f"{quiet.url}/_emulator/stats", timeout=5)
        requests.get(f"{quiet.url}/nowhere", timeout=5)
    assert capsys.readouterr().err == ""
    with M3terEmulator(verbose=True) as loud:
        requests.get(f"{loud.url}/_emulator/stats", timeout=5)
    assert "GET /_emulator/stats" in capsys.readouterr().err
