"""``m3ter-emulator`` as a first-time user meets it: an export line to paste, and a busy port explained."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from m3ter_provider.testing.cli import main


def test_a_port_in_use_is_explained_not_a_traceback(capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "--port 0" in err
    assert "Traceback" not in err and "OSError" not in err


def test_the_printed_connection_is_an_export_line_a_shell_can_run() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "m3ter_provider.testing", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        export_line = process.stdout.readline().strip()
        assert export_line.startswith("export AIRFLOW_CONN_M3TER_DEFAULT="), export_line
        shell = subprocess.run(
            ["bash", "-c", f'{export_line}; printf %s "$AIRFLOW_CONN_M3TER_DEFAULT"'],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ.get("PATH", "")},
        )
        conn = json.loads(shell.stdout)
        assert conn["host"] == url and conn["extra"] == {"org_id": "emulator-org"}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        process.stdout.close()
        process.stderr.close()
