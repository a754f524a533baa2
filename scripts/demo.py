"""Run an example DAG end to end with ``airflow dags test`` in a throwaway AIRFLOW_HOME.

The AIRFLOW_HOME is removed on exit; downloaded files stay in ``.demo/output/``. ``--list`` lists
the example DAGs. Against the local m3ter emulator (started in this process, served over real HTTP) unless
M3TER_ACCESS_KEY_ID, M3TER_API_SECRET and M3TER_ORG_ID are set, in which case the DAG talks to
real m3ter (M3TER_API_URL and M3TER_INGEST_URL optional).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "example_dags"
OUTPUT = ROOT / ".demo" / "output"
DEFAULT_DAG = "example_m3ter_usage_pipeline"
REAL_VARS = ("M3TER_ACCESS_KEY_ID", "M3TER_API_SECRET", "M3TER_ORG_ID")


def real_m3ter_connection() -> dict | None:
    given = [name for name in REAL_VARS if os.environ.get(name)]
    if not given:
        return None
    missing = [name for name in REAL_VARS if not os.environ.get(name)]
    if missing:
        sys.exit(f"demo: to use real m3ter, also export {', '.join(missing)} (or unset {', '.join(given)}).")
    extra = {"org_id": os.environ["M3TER_ORG_ID"]}
    if os.environ.get("M3TER_INGEST_URL"):
        extra["ingest_url"] = os.environ["M3TER_INGEST_URL"]
    conn = {
        "conn_type": "m3ter",
        "login": os.environ["M3TER_ACCESS_KEY_ID"],
        "password": os.environ["M3TER_API_SECRET"],
        "extra": extra,
    }
    if os.environ.get("M3TER_API_URL"):
        conn["host"] = os.environ["M3TER_API_URL"]
    return conn


def run(cmd: list[str], env: dict[str, str], log: pathlib.Path | None = None) -> int:
    if log is None:
        return subprocess.run(cmd, env=env, check=False).returncode
    with log.open("w") as handle:
        return subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, check=False).returncode


def example_dag_ids() -> list[str]:
    """The example DAGs' ids, read from their files (no Airflow import needed)."""
    ids = (re.findall(r'dag_id="([^"]+)"', path.read_text()) for path in sorted(EXAMPLES.glob("*.py")))
    return sorted(dag_id for found in ids for dag_id in found)


def main(argv: list[str]) -> int:
    dag_id = argv[1] if len(argv) > 1 else DEFAULT_DAG
    valid = example_dag_ids()
    if dag_id in ("--list", "-l", "--help", "-h") or dag_id not in valid:
        if dag_id not in ("--list", "-l", "--help", "-h"):
            print(f"demo: no example DAG {dag_id!r}.", file=sys.stderr)
        print("Usage: scripts/demo [dag_id]; the example DAGs:", file=sys.stderr)
        for name in valid:
            print(f"  {name}{'  (the default)' if name == DEFAULT_DAG else ''}", file=sys.stderr)
        return 0 if dag_id in ("--list", "-l", "--help", "-h") else 2
    home = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-demo-airflow-"))
    try:
        return run_demo(dag_id, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run_demo(dag_id: str, home: pathlib.Path) -> int:
    """Run ``dag_id`` with AIRFLOW_HOME ``home`` (which the caller removes)."""
    bin_dir = pathlib.Path(sys.executable).parent
    output = OUTPUT  # the example DAGs write under <dag id>/<run id>/
    started = time.time()
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(EXAMPLES),
        M3TER_DEMO_OUTPUT=str(output),
    )
    emulator = None
    conn = real_m3ter_connection()
    if conn is None:
        from m3ter_provider.testing import M3terEmulator

        emulator = M3terEmulator(job_duration=2.0).start()
        conn = json.loads(emulator.airflow_conn_json())
        # the emulator validates measurements as it ingests them: no need to wait for m3ter's
        # asynchronous ingest validation before reading its failure events
        env.setdefault("M3TER_DEMO_INGEST_WAIT", "0")
        print(
            f"==> m3ter emulator serving on {emulator.url} (export M3TER_ACCESS_KEY_ID, M3TER_API_SECRET and "
            "M3TER_ORG_ID to run against real m3ter)"
        )
    else:
        print(f"==> using real m3ter: organization {conn['extra']['org_id']}")
    env["AIRFLOW_CONN_M3TER_DEFAULT"] = json.dumps(conn)
    try:
        print(f"==> airflow db migrate (throwaway AIRFLOW_HOME={home}, removed on exit)")
        if run([str(bin_dir / "airflow"), "db", "migrate"], env, home / "db-migrate.log") != 0:
            print((home / "db-migrate.log").read_text()[-4000:])
            return 1
        approver = Approver.start_if_needed(dag_id, env, home) if emulator is not None else None
        print(f"==> airflow dags test {dag_id}")
        try:
            code = run([str(bin_dir / "airflow"), "dags", "test", dag_id], env)
        finally:
            if approver is not None:
                approver.stop()
        state, sent = dag_run_summary(env, dag_id)
        print(f"==> DAG run of {dag_id}: {state}")
        print(f"==> measurements sent to m3ter by the run's tasks: {sent:,}")
        if emulator is not None:
            stats = emulator.stats()
            print(
                "==> emulator saw {requests_total} requests, {token_exchanges} token exchange(s), "
                "{measurements_received} measurements received, {measurements_stored} stored".format(**stats)
            )
        outputs = sorted(output.glob("**/*")) if output.exists() else []
        for path in outputs:
            if path.is_file() and path.stat().st_mtime >= started:  # this run's files
                print(f"==> output: {path} ({path.stat().st_size:,} bytes)")
        return 0 if code == 0 and state == "success" else 1
    finally:
        if emulator is not None:
            emulator.stop()


#: reads the latest run's state and the measurements its tasks sent (their return values' counts)
#: through Airflow's own models (the CLI's flags differ between 2.x and 3.x)
_STATE_QUERY = """
import json, sys
from sqlalchemy import select
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
try:
    from airflow.models.xcom import XComModel as XCom  # Airflow 3
except ImportError:
    from airflow.models.xcom import BaseXCom as XCom  # Airflow 2
with create_session() as session:
    query = select(DagRun).where(DagRun.dag_id == sys.argv[1]).order_by(DagRun.id.desc()).limit(1)
    run = session.scalars(query).first()
    print("STATE=" + (str(getattr(run.state, "value", run.state)) if run else "no run"))
    sent = 0
    if run is not None:
        rows = session.scalars(select(XCom).where(
            XCom.dag_id == run.dag_id, XCom.run_id == run.run_id, XCom.key == "return_value"))
        for row in rows:
            value = row.value
            if isinstance(value, (bytes, str)):
                try:
                    value = json.loads(value)
                except ValueError:
                    continue
            if isinstance(value, dict) and isinstance(value.get("measurements"), int):
                sent += value["measurements"]
    print(f"SENT={sent}")
"""


def needs_a_person(dag_id: str) -> bool:
    """Whether the example DAG asks a person (Airflow 3.1+'s human-in-the-loop operators)."""
    import importlib.util

    text = "".join(
        path.read_text() for path in EXAMPLES.glob("*.py") if f'dag_id="{dag_id}"' in path.read_text()
    )
    return (
        "operators.hitl import" in text
        and importlib.util.find_spec("airflow.providers.standard.operators.hitl") is not None
    )


class _Api:
    """A small client of Airflow's REST API (paths from the api-server's root), with a bearer token."""

    def __init__(self, base: str) -> None:
        import requests

        self.base = base
        self.session = requests.Session()

    def login(self) -> None:
        token = self.session.get(self.base + "/auth/token", timeout=30).json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.session.get(self.base + path, timeout=30, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> Any:
        return self.session.patch(self.base + path, timeout=30, **kwargs)


class Approver:
    """An ``airflow api-server`` on the demo's metadata DB, and a thread that answers the DAG's
    approval through its REST API as a person would in the UI: unattended demos need an answer."""

    def __init__(self, dag_id: str, env: dict[str, str], home: pathlib.Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.dag_id = dag_id
        self.api = _Api(f"http://127.0.0.1:{port}")
        env.update(
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
            AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_urlsafe(32),
            AIRFLOW__API__SECRET_KEY=secrets.token_urlsafe(16),
        )
        self.log = home / "api-server.log"
        cmd = [str(pathlib.Path(sys.executable).parent / "airflow"), "api-server", "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]  # fmt: skip
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._answer, daemon=True)

    @classmethod
    def start_if_needed(cls, dag_id: str, env: dict[str, str], home: pathlib.Path) -> Approver | None:
        if not needs_a_person(dag_id):
            return None
        approver = cls(dag_id, env, home)
        print(
            f'==> {dag_id} waits for a person\'s approval: the demo answers it itself ("Approve"), through '
            f"Airflow's REST API on an api-server it started ({approver.api.base})"
        )
        approver.thread.start()
        return approver

    def _answer(self) -> None:
        import requests

        logged_in = False
        while not self.done.wait(1.0):
            try:
                if not logged_in:
                    self.api.login()
                    logged_in = True
                for task_id in answer_pending_approvals(self.api, self.dag_id):
                    print(
                        f'==> the demo answered {task_id!r} with "Approve" through Airflow\'s REST API: '
                        f"PATCH /api/v2/dags/{self.dag_id}/dagRuns/<run>/taskInstances/{task_id}/-1/"
                        "hitlDetails"
                    )
            except (requests.RequestException, ValueError, KeyError):
                continue  # the api-server is still starting
            if self.process.poll() is not None:
                print(f"==> the api-server stopped: the approval cannot be answered (log: {self.log})")
                return

    def stop(self) -> None:
        self.done.set()
        self.thread.join(10)
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def answer_pending_approvals(client: Any, dag_id: str, option: str = "Approve") -> list[str]:
    """Answer every human-in-the-loop request of ``dag_id`` still waiting, through Airflow's REST API.

    ``client`` is a requests-like session on the api-server (``get``/``patch`` taking paths from the
    root: the demo's own, or FastAPI's TestClient in the tests). Returns the answered task ids.
    """
    listing = client.get(
        f"/api/v2/dags/{dag_id}/dagRuns/~/hitlDetails", params={"response_received": "false"}
    )
    listing.raise_for_status()
    answered = []
    for detail in listing.json()["hitl_details"]:
        ti = detail["task_instance"]
        if ti.get("state") not in ("awaiting_input", "deferred"):
            continue  # not waiting yet (or any more)
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/"
            f"{ti['map_index']}/hitlDetails"
        )
        client.patch(path, json={"chosen_options": [option], "params_input": {}}).raise_for_status()
        answered.append(ti["task_id"])
    return answered


def dag_run_summary(env: dict[str, str], dag_id: str) -> tuple[str, int]:
    """The state of the latest run of ``dag_id`` and how many measurements it sent, from the metadata DB."""
    out = subprocess.run(
        [sys.executable, "-c", _STATE_QUERY, dag_id], env=env, capture_output=True, text=True, check=False
    )
    state = re.search(r"^STATE=(.*)$", out.stdout, re.MULTILINE)
    sent = re.search(r"^SENT=(\d+)$", out.stdout, re.MULTILINE)
    return (state.group(1) if state else "unknown"), (int(sent.group(1)) if sent else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
