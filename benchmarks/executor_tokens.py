"""Token exchanges per DAG run under a real scheduler and LocalExecutor, without and with the worker cache.

Starts, in a throwaway AIRFLOW_HOME: the m3ter emulator (in this process), ``airflow api-server``
(Airflow 3's task processes talk to its Execution API), ``airflow dag-processor`` and ``airflow
scheduler`` with ``LocalExecutor``. Triggers ``m3ter_executor_tokens`` (20 mapped tasks, each in its
own process, each calling m3ter once) and counts the token exchanges the emulator saw during the
run. Then restarts the scheduler with ``AIRFLOW__M3TER__TOKEN_CACHE_DIR`` set and runs it again.

    python benchmarks/executor_tokens.py [--runs N] [--json]

Airflow 3 only: Airflow 2.11 refuses LocalExecutor on SQLite (it needs Postgres or MySQL there).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import requests

ROOT = pathlib.Path(__file__).resolve().parent.parent
DAG_ID = "m3ter_executor_tokens"
TASKS = 20
CONFIG_CALL = "GET /organizations/{orgId}/organizationconfig"


def airflow_major() -> int:
    import importlib.metadata

    return int(
        importlib.metadata.version(
            "apache-airflow-core" if _has("apache-airflow-core") else "apache-airflow"
        ).split(".")[0]
    )


def _has(dist: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Airflow:
    """Airflow's components as subprocesses of this script, in one throwaway AIRFLOW_HOME."""

    def __init__(self, home: pathlib.Path, conn_json: str) -> None:
        self.home = home
        self.port = free_port()
        self.bin = pathlib.Path(sys.executable).parent / "airflow"
        self.api = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "M3TER_"))}
        # SQLite: wait for a lock up to 2 minutes (not 5 s) while 20 task processes start at once
        (home / "m3ter_bench_sqlite.py").write_text("CONNECT_ARGS = {'timeout': 120}\n")
        base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(home), os.environ.get("PYTHONPATH")]))
        self.env = dict(
            base,
            AIRFLOW_HOME=str(home),
            AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "benchmarks" / "dags"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS="m3ter_bench_sqlite.CONNECT_ARGS",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC="m3ter_bench_sqlite.CONNECT_ARGS",
            AIRFLOW__CORE__EXECUTOR="LocalExecutor",
            AIRFLOW__CORE__PARALLELISM=str(TASKS),
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=str(TASKS),
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False",
            AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"{self.api}/execution/",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__CORE__FERNET_KEY="",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
            AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(16),
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            # 20 task processes start at once against one api-server on SQLite: be patient with it
            AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT="120",
            AIRFLOW__WORKERS__EXECUTION_API_RETRIES="10",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="1",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            AIRFLOW_CONN_M3TER_DEFAULT=conn_json,
        )
        self.processes: dict[str, subprocess.Popen] = {}
        self._token: str | None = None

    def run(self, *args: str) -> None:
        log = self.home / f"{args[0]}-{args[1] if len(args) > 1 else ''}.log"
        with log.open("w") as out:
            code = subprocess.run(
                [self.bin, *args], env=self.env, stdout=out, stderr=subprocess.STDOUT
            ).returncode
        if code != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{log.read_text()[-3000:]}")

    def start(self, name: str, *args: str, **env: str) -> None:
        log = (self.home / f"{name}.log").open("a")
        self.processes[name] = subprocess.Popen(
            [self.bin, *args],
            env=dict(self.env, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_api_server(self) -> None:
        """``airflow api-server`` on 127.0.0.1 and this instance's port, one worker process."""
        self.start(
            "api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"
        )

    def stop(self, name: str) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                tail = (self.home / f"{name}.log").read_text()[-3000:]
                raise RuntimeError(f"airflow {name} exited with {process.returncode}:\n{tail}")

    def _auth(self) -> dict[str, str]:
        """A bearer token from the simple auth manager (all admins): Airflow 3.1's public API
        answers 401 without one, 3.3's lets such calls through; both hand one out at ``/auth/token``."""
        if self._token is None:
            answer = requests.get(self.api + "/auth/token", timeout=30)
            if answer.ok:
                self._token = answer.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def get(self, path: str) -> requests.Response:
        return requests.get(self.api + path, headers=self._auth(), timeout=30)

    def post(self, path: str, body: dict) -> requests.Response:
        return requests.post(self.api + path, json=body, headers=self._auth(), timeout=30)

    def wait_for(self, what: str, ready, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(requests.RequestException):
                value = ready()
                if value:
                    return value
            time.sleep(1)
        raise TimeoutError(f"{what} not ready after {timeout:.0f} s (logs in {self.home})")

    def trigger(self) -> str:
        run_id = f"bench-{secrets.token_hex(4)}"
        response = self.post(f"/api/v2/dags/{DAG_ID}/dagRuns", {"dag_run_id": run_id, "logical_date": None})
        response.raise_for_status()
        return run_id

    def run_state(self, run_id: str) -> str | None:
        response = self.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        return response.json().get("state") if response.ok else None


@contextlib.contextmanager
def airflow_with_emulator(
    keep: bool = False, *, dag_id: str = DAG_ID, dags_folder: pathlib.Path | None = None
) -> Iterator[tuple[Airflow, Any]]:
    from m3ter_provider.testing import M3terEmulator

    home = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-executor-airflow-"))
    with M3terEmulator() as emulator:
        airflow = Airflow(home, emulator.airflow_conn_json())
        if dags_folder is not None:
            airflow.env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
        try:
            airflow.run("db", "migrate")
            airflow.start_api_server()
            airflow.start("dag-processor", "dag-processor")
            airflow.wait_for("the api-server", lambda: airflow.get("/api/v2/version").ok, 300)
            airflow.wait_for(f"DAG {dag_id}", lambda: airflow.get(f"/api/v2/dags/{dag_id}").ok, 300)
            yield airflow, emulator
        finally:
            airflow.stop_all()


def measure_run(
    airflow: Airflow, emulator: Any, *, shared_dir: str | None, timeout: float = 900
) -> dict[str, Any]:
    """Start the scheduler (with or without the worker cache), run the DAG once, stop the scheduler."""
    env = {"AIRFLOW__M3TER__TOKEN_CACHE_DIR": shared_dir or ""}
    airflow.start("scheduler", "scheduler", **env)
    try:
        before = emulator.stats()
        started = time.monotonic()
        run_id = airflow.trigger()
        state = airflow.wait_for(
            f"run {run_id}", lambda: (s := airflow.run_state(run_id)) in ("success", "failed") and s, timeout
        )
        elapsed = time.monotonic() - started
        after = emulator.stats()
    finally:
        airflow.stop("scheduler")
    return {
        "worker_token_cache": shared_dir is not None,
        "state": state,
        "tasks": TASKS,
        "token_exchanges": after["token_exchanges"] - before["token_exchanges"],
        "api_calls": after["requests"].get(CONFIG_CALL, 0) - before["requests"].get(CONFIG_CALL, 0),
        "seconds": round(elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="DAG runs per mode (default 1)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop Airflow's processes on the way out
    if airflow_major() < 3:
        print("executor_tokens: needs Airflow 3 (Airflow 2 runs LocalExecutor only on Postgres/MySQL).")
        return 2
    results = []
    with airflow_with_emulator() as (airflow, emulator):
        shared = str(airflow.home / "m3ter-tokens")
        for _ in range(args.runs):
            for directory in (None, shared):
                result = measure_run(airflow, emulator, shared_dir=directory)
                results.append(result)
                if not args.json:
                    print(
                        "worker token cache {}: run {state}, {tasks} tasks, {api_calls} API calls, "
                        "{token_exchanges} token exchange(s), {seconds} s".format(
                            "on " if result["worker_token_cache"] else "off", **result
                        ),
                        flush=True,
                    )
    if args.json:
        print(json.dumps(results))
    return 0 if all(r["state"] == "success" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
