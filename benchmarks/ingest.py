"""Ingest benchmark: the provider's submit_measurements against a naive client, in the same run.

Each contender runs in a process of its own (so peak RSS and CPU time are its own), against the
emulator in another process. Sizes: 10k, 100k and 1M measurements of ~200 bytes, from a generator
and from a JSON Lines file. Reported per run: wall time, client CPU time (user + system, all
threads), peak RSS, requests and measurements stored.

The naive client is what hand-rolled code does: chunks of 1,000, ``json.dumps``, ``requests``
``Session.post``, one token, no validation, no uids (so no protection against doubles). From a
file it reads each line with ``json.loads``.

Run: ``python benchmarks/ingest.py [--sizes 10000,100000,1000000] [--concurrency 4]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any


def rows(count: int) -> Iterator[dict[str, Any]]:
    """~200 bytes each once encoded, all distinct."""
    for i in range(count):
        yield {
            "account": f"acct-{i % 100:03d}",
            "meter": "api_calls",
            "ts": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:00Z",
            "measure": {"calls": i, "latency_ms": 12.5},
            "who": {"user": f"user-{i:07d}"},
            "where": {"region": "eu-west-1"},
            "metadata": {"request": f"req-{i:09d}"},
        }


def write_json_lines(path: str, count: int) -> None:
    with open(path, "w") as handle:
        for row in rows(count):
            handle.write(json.dumps(row, separators=(",", ":")) + "\n")


# ---------------------------------------------------------------- contenders (in a child process)
def run_hook(args: argparse.Namespace) -> Callable[[], object]:
    import pathlib

    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.config import M3terSettings
    from m3ter_provider.core.tokens.cache import TokenCache

    settings = M3terSettings.from_connection_fields(
        "bench", login=args.key, password=args.secret, host=args.url, extra={"org_id": args.org}
    )
    client = M3terClient(settings, token_cache=TokenCache())
    source = pathlib.Path(args.file) if args.file else rows(args.count)
    return lambda: client.submit_measurements(source, uid_namespace="bench", concurrency=args.concurrency)


def run_naive(args: argparse.Namespace) -> Callable[[], object]:
    import requests

    return lambda: naive(requests.Session(), args)


def naive(session: Any, args: argparse.Namespace) -> None:
    answer = session.post(
        f"{args.url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(args.key, args.secret),
        timeout=30,
    )
    answer.raise_for_status()
    headers = {"Authorization": f"Bearer {answer.json()['access_token']}", "Content-Type": "application/json"}
    url = f"{args.url}/organizations/{args.org}/measurements"
    if args.file:
        handle = open(args.file)  # noqa: SIM115 - closed when the process ends
        source: Iterator[dict[str, Any]] = (json.loads(line) for line in handle if line.strip())
    else:
        source = rows(args.count)
    while chunk := list(itertools.islice(source, 1000)):
        session.post(
            url, data=json.dumps({"measurements": chunk}), headers=headers, timeout=120
        ).raise_for_status()


def memory_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(args: argparse.Namespace) -> None:
    go = (run_hook if args.contender == "hook" else run_naive)(args)  # imports happen here, untimed
    start_rss = memory_mib("VmRSS")
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    started, cpu = time.perf_counter(), time.process_time()
    go()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    result = {"wall_s": wall, "cpu_s": cpu, "peak_rss_mib": memory_mib("VmHWM"), "start_rss_mib": start_rss}
    print(json.dumps(result))


# ---------------------------------------------------------------- the parent
def measure(emu: Any, contender: str, count: int, file: str | None, concurrency: int) -> dict:
    # forgetting a million measurements takes the emulator a while: wait longer than run.py's reset
    emu.control.post(f"{emu.url}/_emulator/reset", timeout=600).raise_for_status()
    meter = {"code": "api_calls", "name": "API calls", "dataFields": [], "derivedFields": []}
    seed = {"collection": "meters", "items": [meter]}  # m3ter refuses measurements of unknown Meters
    emu.control.post(f"{emu.url}/_emulator/seed", json=seed, timeout=60).raise_for_status()
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        contender,
        "--count",
        str(count),
        "--url",
        emu.url,
        "--key",
        emu.key,
        "--secret",
        emu.secret,
        "--org",
        emu.org,
        "--concurrency",
        str(concurrency),
    ]
    if file:
        command += ["--file", file]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    stats = emu.stats()
    result.update(requests=stats["measurement_requests"], stored=stats["measurements_stored"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--child", choices=("hook", "naive"))
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--file")
    parser.add_argument("--url")
    parser.add_argument("--key")
    parser.add_argument("--secret")
    parser.add_argument("--org")
    parser.add_argument("--profile", help="a child's cProfile stats go to this file (slows it down)")
    args = parser.parse_args()
    if args.child:
        args.contender = args.child
        child(args)
        return 0
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run import EmulatorProcess  # the parent only: a contender's process imports what it uses

    sizes = [int(size) for size in args.sizes.split(",")]
    results = []
    with EmulatorProcess() as emu, tempfile.TemporaryDirectory() as folder:
        for count in sizes:
            path = os.path.join(folder, f"usage-{count}.jsonl")
            write_json_lines(path, count)
            for source, file in (("generator", None), ("JSON Lines", path)):
                for contender in ("naive", "hook"):
                    result = measure(emu, contender, count, file, args.concurrency)
                    result.update(contender=contender, source=source, count=count)
                    results.append(result)
                    print(json.dumps(result), flush=True)
            os.remove(path)
    print()
    print("| measurements | source | contender | wall s | client CPU s | peak RSS MiB | requests | stored |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(
            f"| {r['count']:,} | {r['source']} | {r['contender']} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {r['requests']:,} | {r['stored']:,} |"
        )
    print()
    for (count, source), group in itertools.groupby(results, key=lambda r: (r["count"], r["source"])):
        naive, hook = sorted(group, key=lambda r: r["contender"] != "naive")
        print(
            f"{count:,} from {source}: hook/naive CPU {hook['cpu_s'] / naive['cpu_s']:.2f}x, "
            f"wall {hook['wall_s'] / naive['wall_s']:.2f}x"
        )
    for source in ("generator", "JSON Lines"):
        peaks = {
            r["count"]: r["peak_rss_mib"]
            for r in results
            if r["contender"] == "hook" and r["source"] == source
        }
        if len(peaks) > 1:
            print(
                f"hook peak RSS growth {min(peaks):,} -> {max(peaks):,} from {source}: "
                f"{peaks[max(peaks)] - peaks[min(peaks)]:.1f} MiB"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
