"""File upload against REST ingest of the same measurements, and the SQL transfer at 1M rows.

Part 1, in the same run: the same distinct measurements (~200 bytes each) sent by
``hook.submit_measurements`` (REST ingest, 1,000 a request) and by ``hook.upload_measurements``
(m3ter's file upload service: one ``generateUploadUrl``, one PUT, the upload job polled). Each
contender runs in a process of its own against the emulator in another process. Reported: wall
time, client CPU (user + system), client peak RSS, the requests each made, the measurements
stored, and what the emulator processed per second of its own CPU (its ``/proc`` CPU time over
the run). The emulator runs jobs with ``--job-duration 0`` (an upload job is processed on the
next poll): real m3ter's upload processing time is its own, not measured here.

Part 2: ``SqlToM3terMeasurementsOperator``'s path (``QueryResult`` into ``submit_measurements``)
from a SQLite table of 100k and of 1M rows, ``fetch_size`` 10,000: client peak RSS growth.

Run: ``python benchmarks/upload_vs_rest.py [--sizes 10000,100000,500000] [--sql-sizes 100000,1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import requests


def rows(count: int) -> Iterator[dict[str, Any]]:
    """~200 bytes each once encoded, all distinct (as benchmarks/ingest.py)."""
    for i in range(count):
        yield {
            "account": f"acct-{i % 100:03d}",
            "meter": "api_calls",
            "ts": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "measure": {"calls": i, "latency_ms": 12.5},
            "who": {"user": f"user-{i:07d}"},
            "where": {"region": "eu-west-1"},
        }


def memory_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all threads), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- contenders (in a child process)
def child(args: argparse.Namespace) -> None:
    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.config import M3terSettings
    from m3ter_provider.core.ingest.upload import upload
    from m3ter_provider.core.tokens.cache import TokenCache

    settings = M3terSettings.from_connection_fields(
        "bench", login=args.key, password=args.secret, host=args.url, extra={"org_id": args.org}
    )
    client = M3terClient(settings, token_cache=TokenCache())
    if args.child == "sql":
        from m3ter_provider.core.ingest.sql import QueryResult

        connection = sqlite3.connect(args.db)
        sql = "SELECT account, meter, ts, calls AS 'measure.calls', user AS 'who.user' FROM usage"
        source: Any = QueryResult(connection, sql, fetch_size=10_000)
    else:
        source = rows(args.count)
    start_rss = memory_mib("VmRSS")
    started, cpu = time.perf_counter(), time.process_time()
    if args.child == "upload":
        upload(client, source, uid_namespace="bench", poll_interval=0.1)
    else:
        client.submit_measurements(source, uid_namespace="bench", concurrency=4)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        json.dumps(
            {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": memory_mib("VmHWM"), "start_rss_mib": start_rss}
        )
    )


# ---------------------------------------------------------------- the parent
class Emulator:
    def __enter__(self) -> Emulator:
        command = [sys.executable, "-m", "m3ter_provider.testing", "--port", "0", "--job-duration", "0"]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.control = requests.Session()
        self.url = self.proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        conn = json.loads(self.proc.stdout.readline().split("=", 1)[1].strip().strip("'"))
        self.key, self.secret, self.org = conn["login"], conn["password"], conn["extra"]["org_id"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def reset(self) -> None:
        self.control.post(f"{self.url}/_emulator/reset", timeout=600).raise_for_status()
        meter = {"code": "api_calls", "name": "API calls", "dataFields": [], "derivedFields": []}
        seed = {"collection": "meters", "items": [meter]}
        self.control.post(f"{self.url}/_emulator/seed", json=seed, timeout=60).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return self.control.get(f"{self.url}/_emulator/stats", timeout=60).json()

    def run(self, contender: str, count: int = 0, db: str | None = None) -> dict[str, Any]:
        self.reset()
        command = [sys.executable, os.path.abspath(__file__), "--child", contender, "--count", str(count)]
        command += ["--url", self.url, "--key", self.key, "--secret", self.secret, "--org", self.org]
        if db:
            command += ["--db", db]
        before = cpu_seconds(self.proc.pid)
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        emulator_cpu = cpu_seconds(self.proc.pid) - before
        result = json.loads(out.stdout.strip().splitlines()[-1])
        stats = self.stats()
        counted = {route: n for route, n in stats["requests"].items() if not route.startswith("POST /oauth")}
        result.update(
            contender=contender,
            count=count,
            requests=sum(counted.values()),
            stored=stats["measurements_stored"],
            emulator_cpu_s=emulator_cpu,
        )
        return result


def write_table(path: str, count: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE usage (account TEXT, meter TEXT, ts TEXT, calls INTEGER, user TEXT)")
        db.executemany(
            "INSERT INTO usage VALUES (?, ?, ?, ?, ?)",
            (
                (r["account"], r["meter"], r["ts"], r["measure"]["calls"], r["who"]["user"])
                for r in rows(count)
            ),
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,500000")
    parser.add_argument("--sql-sizes", default="100000,1000000")
    parser.add_argument("--child", choices=("rest", "upload", "sql"))
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--db")
    parser.add_argument("--url")
    parser.add_argument("--key")
    parser.add_argument("--secret")
    parser.add_argument("--org")
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    results = []
    sql_results = []
    with Emulator() as emu, tempfile.TemporaryDirectory() as folder:
        for count in (int(s) for s in args.sizes.split(",") if s):
            for contender in ("rest", "upload"):
                result = emu.run(contender, count)
                results.append(result)
                print(json.dumps(result), flush=True)
        for count in (int(s) for s in args.sql_sizes.split(",") if s):
            path = os.path.join(folder, f"usage-{count}.db")
            write_table(path, count)
            result = emu.run("sql", count, path)
            sql_results.append(result)
            print(json.dumps(result), flush=True)
            os.remove(path)
    print()
    print(
        "| measurements | path | wall s | client CPU s | client peak RSS MiB | requests | stored | "
        "emulator measurements per CPU s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        rate = r["stored"] / r["emulator_cpu_s"] if r["emulator_cpu_s"] else float("nan")
        print(
            f"| {r['count']:,} | {'REST ingest' if r['contender'] == 'rest' else 'file upload'} "
            f"| {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:.0f} | {r['requests']:,} "
            f"| {r['stored']:,} | {rate:,.0f} |"
        )
    if sql_results:
        print()
        print("| SQL rows (SQLite) | wall s | client CPU s | peak RSS growth MiB | requests | stored |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in sql_results:
            growth = r["peak_rss_mib"] - r["start_rss_mib"]
            print(
                f"| {r['count']:,} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {growth:.1f} | {r['requests']:,} "
                f"| {r['stored']:,} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
