"""A throwaway PostgreSQL cluster for the SQL transfer tests: Debian's initdb/pg_ctl in a temporary
folder, on a free port, run as an unprivileged user when the tests run as root (postgres refuses
root); stopped and deleted after the test module.

Skipped, with the reason, only when the PostgreSQL binaries are absent; with
``M3TER_REQUIRE_POSTGRES=1`` (``.ci/run`` sets it) their absence fails instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


def _bin_dir() -> str | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    found = shutil.which("initdb")
    return os.path.dirname(found) if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Postgres:
    host: str
    port: int
    user: str
    database: str

    def conn_uri(self) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"

    def connect(self):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=self.database)


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bin_dir = _bin_dir()
    if bin_dir is None:
        if os.environ.get("M3TER_REQUIRE_POSTGRES") == "1":
            pytest.fail("M3TER_REQUIRE_POSTGRES=1 but no PostgreSQL binaries (apt-get install postgresql)")
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    root = tempfile.mkdtemp(prefix="m3ter-pg-")
    data = os.path.join(root, "data")
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "nobody")
        os.chmod(root, 0o700)
        prefix = ["runuser", "-u", "nobody", "--"]
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C"}

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, env=env, cwd=root, timeout=120)

    run(os.path.join(bin_dir, "initdb"), "-D", data, "-U", "m3ter", "--auth=trust", "-E", "UTF8")
    run(
        os.path.join(bin_dir, "pg_ctl"),
        "-D",
        data,
        "-l",
        os.path.join(root, "log"),
        "-w",
        "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
        "start",
    )
    try:
        yield Postgres("127.0.0.1", port, "m3ter", "postgres")
    finally:
        subprocess.run(
            [*prefix, os.path.join(bin_dir, "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"],
            capture_output=True,
            env=env,
            cwd=root,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
