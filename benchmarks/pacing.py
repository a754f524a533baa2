"""Ingest pacing: a mapped load against the rate-limited emulator, paced and unpaced, in one run.

``--tasks`` processes (mapped tasks on one worker) each ingest ``--rows / --tasks`` measurements
(1,000 a request) through ``M3terClient.submit_measurements``, ``--concurrency`` batches in flight
each, against the emulator in this process with m3ter's limits on (50 ingest requests/s per
Organization, 5,000 per 5 minutes per IP, 429 without Retry-After). Cases:

- **paced, shared**: the default ``ingest_rate`` (45/s) on one machine, the bucket shared by the
  processes through a token cache directory (``[m3ter] token_cache_dir``);
- **paced, per process**: the same without the directory: each process paces on its own at 45/s,
  so together they overshoot (why the guide says to set the directory, or count processes in
  ``ingest_machines``);
- **unpaced**: ``ingest_rate`` off: only the transport's 429 retries (backoff with jitter).

Reported per case: measurements stored (must equal the rows), ingest requests and how many were
answered 429, the accepted requests per second while sending (from the emulator's counters, sampled
every 0.25 s) as a fraction of the 50/s limit, and wall time.

Run: ``python benchmarks/pacing.py [--rows 1000000] [--tasks 4] [--concurrency 4]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import threading
import time
from typing import Any

INGEST = "POST /organizations/{orgId}/measurements"
LIMIT = 50


def rows(task: int, count: int) -> Any:
    for i in range(count):
        yield {
            "account": f"acct-{i % 100:03d}",
            "meter": "api_calls",
            "ts": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "measure": {"calls": i, "latency_ms": 12.5},
            "who": {"user": f"user-{task}-{i:07d}"},
        }


def task(conn: dict[str, Any], index: int, count: int, concurrency: int, directory: str | None) -> dict:
    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.config import M3terSettings

    settings = M3terSettings.from_connection_fields("m3ter_default", **conn)
    client = M3terClient(settings, pace_directory=directory)
    return client.submit_measurements(
        rows(index, count), uid_namespace=f"bench/slice-{index}", concurrency=concurrency
    )


def run_case(emulator: Any, name: str, args: argparse.Namespace, extra: dict, shared: bool) -> dict:
    emulator.reset()
    meter = {"code": "api_calls", "name": "api_calls", "dataFields": [], "derivedFields": []}
    emulator.seed("meters", [meter])
    conn = {
        "login": emulator.access_key_id,
        "password": emulator.api_secret,
        "host": emulator.url,
        "extra": {"org_id": emulator.org_id, "max_retries": 20, **extra},
    }
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            stats = emulator.stats()
            accepted = stats["requests"].get(INGEST, 0) - stats["rate_limited"].get(INGEST, 0)
            samples.append((time.monotonic(), accepted))
            done.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    per_task = args.rows // args.tasks
    with tempfile.TemporaryDirectory() as directory:
        started = time.monotonic()
        sampler.start()
        context = multiprocessing.get_context("spawn")
        with context.Pool(args.tasks) as pool:
            pace_directory = directory if shared else None
            jobs = [(conn, i, per_task, args.concurrency, pace_directory) for i in range(args.tasks)]
            results = pool.starmap(task, jobs)
        wall = time.monotonic() - started
        done.set()
        sampler.join()
    stats = emulator.stats()
    requests = stats["requests"].get(INGEST, 0)
    refused = stats["rate_limited"].get(INGEST, 0)
    sending = [(t, n) for t, n in samples if 0 < n < samples[-1][1]] or samples
    span = max(sending[-1][0] - sending[0][0], 1e-9)
    rate = (sending[-1][1] - sending[0][1]) / span
    return {
        "case": name,
        "stored": stats["measurements_stored"],
        "sent": sum(r["measurements"] for r in results),
        "requests": requests,
        "refused": refused,
        "share_429": refused / requests if requests else 0.0,
        "rate": rate,
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--tasks", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, ".")
    from m3ter_provider.testing import M3terEmulator

    cases = [
        ("paced, shared (ingest_rate 45, token_cache_dir set)", {}, True),
        ("paced, per process (ingest_rate 45, no token_cache_dir)", {}, False),
        ("unpaced (ingest_rate off)", {"ingest_rate": "off"}, True),
    ]
    print(
        f"{args.rows:,} measurements, {args.tasks} processes x concurrency {args.concurrency}, "
        f"limit {LIMIT}/s\n"
    )
    print("| case | stored | ingest requests | answered 429 | 429 share | accepted req/s (of 50) | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with M3terEmulator() as emulator:
        for name, extra, shared in cases:
            r = run_case(emulator, name, args, extra, shared)
            ok = "" if r["stored"] == args.rows // args.tasks * args.tasks else " (MISMATCH)"
            print(
                f"| {r['case']} | {r['stored']:,}{ok} | {r['requests']:,} | {r['refused']:,} | "
                f"{r['share_429']:.1%} | {r['rate']:.1f} ({r['rate'] / LIMIT:.0%}) | {r['wall']:.1f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
