"""A real CeleryExecutor cluster on one machine, for tests/cluster and benchmarks/celery_cluster.py.

Started as subprocesses of the caller, each in its own process group, in one throwaway folder:

- Redis as the Celery broker (Debian's ``redis-server`` on a free port, nothing saved to disk);
- a throwaway PostgreSQL cluster as the metadata database (``initdb``/``pg_ctl``, a free port; run as
  ``nobody`` when the caller is root, as postgres refuses root);
- ``airflow db migrate``, then ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer`` and two
  ``airflow celery worker`` processes (``worker-a``, ``worker-b``), with the m3ter emulator in the
  caller's process.

Each worker is a machine of its own as far as m3ter can tell: its own token cache directory
(``AIRFLOW__M3TER__TOKEN_CACHE_DIR``) and its own loopback source address (127.0.0.2, 127.0.0.3) for
the HTTP connections its tasks open (a ``sitecustomize`` on that worker's PYTHONPATH binds urllib3's
connections to it), so the emulator's per-IP limit and per-client stats apply per worker. Its task
instances report the worker's name as their hostname (``[core] hostname_callable``).

A killed worker's tasks come back through two scheduler settings, lowered here: a task it was
running through the task heartbeat timeout (``[scheduler] task_instance_heartbeat_timeout``,
``HEARTBEAT_TIMEOUT`` seconds here, default 300): failed, then retried under the task's ``retries``;
a task it had taken from the broker but not started (Celery's prefetch: the message dies unacked with
the worker, and Redis would hand it out again only after its 6-hour visibility timeout) through the
queued timeout (``[scheduler] task_queued_timeout``, ``QUEUED_TIMEOUT`` here, default 600): queued
again. The queued timeout also bounds how long a task may wait for a free worker slot, so it is only
this low because the ``m3ter_ingest`` pool (4) is smaller than the workers' slots (2 x 4).

Everything is stopped and removed when the ``celery_cluster()`` context ends, also on an exception
or SIGTERM (turned into KeyboardInterrupt while the context is open). Airflow 3 only.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
#: the workers: name -> the loopback address their m3ter requests come from
WORKERS = {"worker-a": "127.0.0.2", "worker-b": "127.0.0.3"}
WORKER_CONCURRENCY = 4
#: seconds without a task heartbeat before the scheduler fails the task instance (and retries it)
HEARTBEAT_TIMEOUT = 30
#: seconds a task may stay queued (sent to the broker, not started) before the scheduler queues it again
QUEUED_TIMEOUT = 60
TOKEN_ROUTE = "POST /oauth/token"  # noqa: S105 - a route, not a secret
INGEST_ROUTE = "POST /organizations/{orgId}/measurements"


def load_script(name: str) -> Any:
    """``benchmarks/<name>.py`` as a module (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"m3ter_bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


executor_tokens = load_script("executor_tokens")


def missing() -> str | None:
    """Why a cluster cannot start here (a missing binary or package, Airflow 2), else None."""
    if executor_tokens.airflow_major() < 3:
        return "the cluster harness runs Airflow 3 (the task SDK's Execution API); this is Airflow 2"
    if shutil.which("redis-server") is None:
        return "no redis-server: apt-get install redis-server"
    if postgres_bin_dir() is None:
        return "no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql"
    for module, extra in (("airflow.providers.celery", "cluster"), ("redis", "cluster")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install -e '.[{extra}]'"
    return None


def postgres_bin_dir() -> str | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def _wait_port(port: int, what: str, process: subprocess.Popen, log: pathlib.Path, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not listening on {port} after {timeout:.0f} s")


def _stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


class Redis:
    """``redis-server`` on a free loopback port, saving nothing, in ``folder``."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.port = executor_tokens.free_port()
        self.log = folder / "redis.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.folder), "--logfile", str(self.log)]
        self.process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL)
        _wait_port(self.port, "redis-server", self.process, self.log, 30)

    def stop(self) -> None:
        if self.process is not None:
            _stop_group(self.process, timeout=15)


class Postgres:
    """A throwaway PostgreSQL cluster (``initdb``, ``pg_ctl``) on a free loopback port, trust auth."""

    def __init__(self, folder: pathlib.Path) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = executor_tokens.free_port()
        self.bin = postgres_bin_dir() or ""
        # postgres refuses to run as root: then as nobody, in a folder nobody owns
        self.prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self.prefix, *args],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C"},
            cwd=self.folder,
            timeout=120,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.prefix:
            shutil.chown(self.folder, "nobody")
        self.folder.chmod(0o700)
        self._run(f"{self.bin}/initdb", "-D", str(self.data), "-U", "airflow", "--auth=trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        self.started = True
        log = str(self.folder / "log")
        self._run(f"{self.bin}/pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")
        self._run(f"{self.bin}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "airflow")

    def stop(self) -> None:
        if self.started:
            with contextlib.suppress(Exception):
                self._run(f"{self.bin}/pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.started = False


# Loaded by every Python process of a worker (its PYTHONPATH): their HTTP connections to loopback
# hosts leave from the worker's own address, as from a machine of its own.
SITECUSTOMIZE = '''"""Cluster harness: HTTP connections to 127.x leave from M3TER_SOURCE_ADDRESS."""
import os

_SOURCE = os.environ.get("M3TER_SOURCE_ADDRESS")


def hostname():
    """[core] hostname_callable: the worker's name, so each task instance says which worker ran it."""
    return os.environ.get("M3TER_WORKER_NAME") or __import__("socket").getfqdn()


if _SOURCE:
    import urllib3.connection

    _init = urllib3.connection.HTTPConnection.__init__

    def _bound_init(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        if self.source_address is None and str(self.host).startswith("127."):
            self.source_address = (_SOURCE, 0)

    urllib3.connection.HTTPConnection.__init__ = _bound_init
'''


@dataclass
class CeleryCluster:
    """A running cluster: ``airflow`` (components, API calls), ``emulator``, the workers' addresses."""

    folder: pathlib.Path
    airflow: Any
    emulator: Any
    redis: Redis
    postgres: Postgres
    workers: dict[str, str] = field(default_factory=lambda: dict(WORKERS))

    def start_worker(self, name: str) -> None:
        """Start ``airflow celery worker`` ``name`` with its own token cache dir and source address."""
        site = self.folder / "worker-site"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        pythonpath = os.pathsep.join([str(site), self.airflow.env["PYTHONPATH"]])
        self.airflow.start(
            name,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--skip-serve-logs",
            PYTHONPATH=pythonpath,
            M3TER_SOURCE_ADDRESS=self.workers[name],
            M3TER_WORKER_NAME=name,
            AIRFLOW__CORE__HOSTNAME_CALLABLE="sitecustomize.hostname",
            AIRFLOW__M3TER__TOKEN_CACHE_DIR=str(self.folder / f"tokens-{name}"),
        )

    def kill(self, name: str) -> None:
        """SIGKILL component ``name`` and every process it started (its process group): a lost machine."""
        process = self.airflow.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def per_worker(self, stats: dict) -> dict[str, dict[str, int]]:
        """Requests (all, ingest), 429s and token exchanges the emulator saw from each worker's address."""
        clients = stats.get("clients", {})
        result = {}
        for name, address in self.workers.items():
            seen = clients.get(address, {"requests": 0, "rate_limited": 0, "routes": {}})
            result[name] = {
                "requests": seen["requests"],
                "ingest_requests": seen["routes"].get(INGEST_ROUTE, 0),
                "rate_limited": seen["rate_limited"],
                "token_exchanges": seen["routes"].get(TOKEN_ROUTE, 0),
            }
        return result


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While open, SIGTERM raises KeyboardInterrupt (so ``finally`` blocks stop the cluster)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")  # pytest ends the session (running teardowns), as on Ctrl-C

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def celery_cluster(
    dags_folder: pathlib.Path,
    *,
    keep: bool = False,
    conn_extra: dict | None = None,
    env: dict[str, str] | None = None,
    **emulator_args: Any,
) -> Iterator[CeleryCluster]:
    """Start the whole cluster on ``dags_folder``; stop and remove everything on the way out.

    :param dags_folder: the DAG files every component (and worker) reads.
    :param keep: leave the folder (Airflow's and the components' logs) for a look.
    :param conn_extra: merged into the ``m3ter_default`` connection's extra.
    :param env: more environment for every component.
    :param emulator_args: passed to ``M3terEmulator`` (e.g. ``limits``, ``job_duration``).
    """
    from m3ter_provider.testing import M3terEmulator

    folder = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-celery-cluster-"))
    folder.chmod(0o711)  # PostgreSQL runs as nobody in a folder of its own inside
    redis = Redis(folder / "redis")
    postgres = Postgres(folder / "postgres")
    with _sigterm_as_exit(), M3terEmulator(**emulator_args) as emulator:
        conn = json.loads(emulator.airflow_conn_json())
        conn["extra"] = {**conn["extra"], **(conn_extra or {})}
        home = folder / "airflow"
        home.mkdir()
        airflow = executor_tokens.Airflow(home, json.dumps(conn))
        cluster = CeleryCluster(folder, airflow, emulator, redis, postgres)
        for key in ("SQL_ALCHEMY_CONNECT_ARGS", "SQL_ALCHEMY_CONNECT_ARGS_ASYNC"):
            airflow.env.pop(f"AIRFLOW__DATABASE__{key}", None)  # executor_tokens' SQLite settings
        airflow.env.update(
            AIRFLOW__CORE__DAGS_FOLDER=str(dags_folder),
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CORE__PARALLELISM="32",
            AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="32",
            AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgres.url,
            AIRFLOW__CELERY__BROKER_URL=redis.url,
            AIRFLOW__CELERY__RESULT_BACKEND="db+" + postgres.url.replace("+psycopg2", ""),
            AIRFLOW__CELERY__WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT),
            AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL="2",
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT=str(QUEUED_TIMEOUT),
            AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL="5",
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="2",
            AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD="30",
            AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
            **(env or {}),
        )
        try:
            redis.start()
            postgres.start()
            airflow.run("db", "migrate")
            airflow.start_api_server()
            airflow.start("dag-processor", "dag-processor")
            airflow.start("scheduler", "scheduler")
            airflow.start("triggerer", "triggerer")
            for name in cluster.workers:
                cluster.start_worker(name)
            airflow.wait_for("the api-server", lambda: airflow.get("/api/v2/version").ok, 300)
            yield cluster
        finally:
            airflow.stop_all()
            redis.stop()
            postgres.stop()
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)
