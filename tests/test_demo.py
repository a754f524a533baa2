"""The README's main command: scripts/demo runs an example DAG end to end against the emulator."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent


def test_demo_runs_the_usage_pipeline_to_success():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "M3TER_"))}
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    tail = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, tail
    assert "==> DAG run of example_m3ter_usage_pipeline: success" in result.stdout, tail
    assert "1 token exchange(s)" in result.stdout, tail
    assert "usage.csv" in result.stdout, tail
    # neither the demo nor the task logs show the (emulator's) Api Secret
    assert "emulator-api-secret" not in result.stdout + result.stderr
