"""Run an example DAG end to end with ``airflow dags test`` in a throwaway AIRFLOW_HOME.

Against the local m3ter emulator (started in this process, served over real HTTP) unless
M3TER_ACCESS_KEY_ID, M3TER_API_SECRET and M3TER_ORG_ID are set, in which case the DAG talks to
real m3ter (M3TER_API_URL and M3TER_INGEST_URL optional).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
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


def main(argv: list[str]) -> int:
    dag_id = argv[1] if len(argv) > 1 else DEFAULT_DAG
    home = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-demo-airflow-"))
    bin_dir = pathlib.Path(sys.executable).parent
    env = dict(
        os.environ,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "example_dags"),
        M3TER_DEMO_OUTPUT=str(home / "output"),
    )
    emulator = None
    conn = real_m3ter_connection()
    if conn is None:
        from m3ter_provider.testing import M3terEmulator

        emulator = M3terEmulator(job_duration=2.0).start()
        conn = json.loads(emulator.airflow_conn_json())
        print(
            f"==> m3ter emulator serving on {emulator.url} (export M3TER_ACCESS_KEY_ID, M3TER_API_SECRET and "
            "M3TER_ORG_ID to run against real m3ter)"
        )
    else:
        print(f"==> using real m3ter: organization {conn['extra']['org_id']}")
    env["AIRFLOW_CONN_M3TER_DEFAULT"] = json.dumps(conn)
    try:
        print(f"==> airflow db migrate (AIRFLOW_HOME={home})")
        if run([str(bin_dir / "airflow"), "db", "migrate"], env, home / "db-migrate.log") != 0:
            print((home / "db-migrate.log").read_text()[-4000:])
            return 1
        print(f"==> airflow dags test {dag_id}")
        code = run([str(bin_dir / "airflow"), "dags", "test", dag_id], env)
        state = dag_run_state(env, dag_id)
        print(f"==> DAG run of {dag_id}: {state}")
        if emulator is not None:
            stats = emulator.stats()
            print(
                "==> emulator saw {requests_total} requests, {token_exchanges} token exchange(s), "
                "{measurements_stored} measurements stored".format(**stats)
            )
        outputs = sorted((home / "output").glob("**/*")) if (home / "output").exists() else []
        for path in outputs:
            if path.is_file():
                print(f"==> output: {path} ({path.stat().st_size:,} bytes)")
        return 0 if code == 0 and state == "success" else 1
    finally:
        if emulator is not None:
            emulator.stop()


#: reads the latest run's state through Airflow's own model (the CLI's flags differ between 2.x and 3.x)
_STATE_QUERY = """
import sys
from sqlalchemy import select
from airflow.models.dagrun import DagRun
from airflow.utils.session import create_session
with create_session() as session:
    query = select(DagRun).where(DagRun.dag_id == sys.argv[1]).order_by(DagRun.id.desc()).limit(1)
    run = session.scalars(query).first()
    print("STATE=" + (str(getattr(run.state, "value", run.state)) if run else "no run"))
"""


def dag_run_state(env: dict[str, str], dag_id: str) -> str:
    """The state of the latest run of ``dag_id``, read back from the metadata DB."""
    out = subprocess.run(
        [sys.executable, "-c", _STATE_QUERY, dag_id], env=env, capture_output=True, text=True, check=False
    )
    found = re.search(r"^STATE=(.*)$", out.stdout, re.MULTILINE)
    return found.group(1) if found else "unknown"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
