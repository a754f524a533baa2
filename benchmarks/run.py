"""Benchmarks: the provider's client against naive baselines, in the same run, on the local emulator.

The emulator runs in its own process (so it does not share the client's GIL) and can add a
fixed latency to every request, modelling the network between a worker and m3ter. Results are
ratios (baseline time / our time) and counts (token exchanges, TCP connections, requests),
never absolute targets. Run: ``python benchmarks/run.py [--quick] [--latency-ms 20]``.

The baselines model a pipeline without this provider (see shared/m3ter-api.md on the official
SDK 0.9.0): a token exchange before every request, a new TCP connection per request, and
measurement chunking by count only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

from m3ter_provider.core.client import M3terClient
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.tokens.cache import TokenCache

ROUTES = (
    "POST /oauth/token",
    "GET /organizations/{orgId}/organizationconfig",
    "POST /organizations/{orgId}/measurements",
)


class EmulatorProcess:
    """``python -m m3ter_provider.testing`` in a child process, driven over its /_emulator routes.

    With ``--no-limits``: the benchmarks measure the client's own speed, which m3ter's rate limits
    (on by default in the emulator) would cap at 50 requests/s.
    """

    def __enter__(self) -> EmulatorProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "m3ter_provider.testing", "--port", "0", "--no-limits"],
            stdout=subprocess.PIPE,
            text=True,
        )
        #: one keep-alive session for control calls, so they add no connections to the counts
        self.control = requests.Session()
        first = self.proc.stdout.readline()
        self.url = first.strip().rsplit(" ", 1)[-1]
        conn = json.loads(self.proc.stdout.readline().split("=", 1)[1].strip().strip("'"))
        self.key, self.secret, self.org = conn["login"], conn["password"], conn["extra"]["org_id"]
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def reset(self, latency: float) -> None:
        self.control.post(f"{self.url}/_emulator/reset", timeout=10).raise_for_status()
        meter = {"code": "api_calls", "name": "API calls", "dataFields": [], "derivedFields": []}
        seed = {"collection": "meters", "items": [meter]}  # m3ter refuses measurements of unknown Meters
        self.control.post(f"{self.url}/_emulator/seed", json=seed, timeout=10).raise_for_status()
        if latency:
            for route in ROUTES:
                fault = {"route": route, "delay": latency, "times": None}
                self.control.post(f"{self.url}/_emulator/faults", json=fault, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return self.control.get(f"{self.url}/_emulator/stats", timeout=10).json()

    def client(self) -> M3terClient:
        settings = M3terSettings.from_connection_fields(
            "bench", login=self.key, password=self.secret, host=self.url, extra={"org_id": self.org}
        )
        return M3terClient(settings, token_cache=TokenCache())

    def naive_token(self) -> str:
        answer = requests.post(
            f"{self.url}/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(self.key, self.secret),
            timeout=30,
        )
        answer.raise_for_status()
        return answer.json()["access_token"]


def measurements(count: int) -> list[dict]:
    """~600 bytes each once encoded."""
    return [
        {
            "uid": f"bench-{i:08d}",
            "account": f"acct-{i % 100:03d}",
            "meter": "api_calls",
            "ts": "2026-01-15T12:00:00Z",
            "measure": {"calls": i, "latency_ms": 12.5},
            "who": {"user": f"user-{i:06d}"},
            "metadata": {"pad": "x" * 430},
        }
        for i in range(count)
    ]


def timed(emu: EmulatorProcess, latency: float, make: Callable[[], Callable[[], object]], repeats: int):
    """Median seconds over ``repeats`` runs, each on a reset emulator; the stats of the last run."""
    times, stats = [], {}
    for _ in range(repeats):
        emu.reset(latency)
        connections_before = emu.stats()["connections_accepted"]
        run = make()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
        stats = emu.stats()
        stats["connections_accepted"] -= connections_before
    return statistics.median(times), stats


def bench_reads(emu: EmulatorProcess, latency: float, calls: int, repeats: int) -> dict:
    def ours():
        client = emu.client()
        return lambda: [client.request("GET", "organizationconfig") for _ in range(calls)]

    def baseline():
        def go():
            for _ in range(calls):
                token = emu.naive_token()
                requests.get(
                    f"{emu.url}/organizations/{emu.org}/organizationconfig",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                ).raise_for_status()

        return go

    t_ours, s_ours = timed(emu, latency, ours, repeats)
    t_base, s_base = timed(emu, latency, baseline, repeats)
    return {
        "case": f"{calls} API reads, +{latency * 1000:.0f} ms/request",
        "speedup": round(t_base / t_ours, 2),
        "ours_s": round(t_ours, 3),
        "baseline_s": round(t_base, 3),
        "token_exchanges": [s_ours["token_exchanges"], s_base["token_exchanges"]],
        "tcp_connections": [s_ours["connections_accepted"], s_base["connections_accepted"]],
    }


def bench_ingest(emu: EmulatorProcess, latency: float, count: int, repeats: int) -> list[dict]:
    rows = measurements(count)

    def ours(concurrency: int):
        def make():
            client = emu.client()
            return lambda: client.submit_measurements(rows, concurrency=concurrency)

        return make

    def baseline():
        # chunking by count must stay at 500 for ~600-byte rows to fit under 512,000 bytes
        def go():
            for start in range(0, len(rows), 500):
                token = emu.naive_token()
                requests.post(
                    f"{emu.url}/organizations/{emu.org}/measurements",
                    json={"measurements": rows[start : start + 500]},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=60,
                ).raise_for_status()

        return go

    t_base, s_base = timed(emu, latency, baseline, repeats)
    assert s_base["measurements_stored"] == count
    results = []
    for concurrency in (1, 4):
        t_ours, s_ours = timed(emu, latency, ours(concurrency), repeats)
        assert s_ours["measurements_stored"] == count
        results.append(
            {
                "case": f"{count:,} measurements, concurrency {concurrency}, +{latency * 1000:.0f} ms/req",
                "speedup": round(t_base / t_ours, 2),
                "ours_s": round(t_ours, 3),
                "baseline_s": round(t_base, 3),
                "requests": [s_ours["measurement_requests"], s_base["measurement_requests"]],
                "token_exchanges": [s_ours["token_exchanges"], s_base["token_exchanges"]],
            }
        )
    return results


def sdk_style_chunking(emu: EmulatorProcess, count: int) -> dict:
    """What chunking by 1,000 alone (the SDK's submit_all) gets from m3ter for ~600-byte rows."""
    emu.reset(0)
    rows = measurements(count)
    token = emu.naive_token()
    refused = 0
    for start in range(0, len(rows), 1000):
        answer = requests.post(
            f"{emu.url}/organizations/{emu.org}/measurements",
            json={"measurements": rows[start : start + 1000]},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        refused += answer.status_code == 403
    return {
        "case": "chunk by 1,000 only (SDK-style)",
        "requests_refused_403": refused,
        "measurements_stored": emu.stats()["measurements_stored"],
        "of": count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one repeat")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added to every emulator request")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    calls, count = (50, 5_000) if args.quick else (200, 20_000)
    latency = args.latency_ms / 1000
    with EmulatorProcess() as emu:
        results = [bench_reads(emu, 0.0, calls, repeats), bench_reads(emu, latency, calls, repeats)]
        results += bench_ingest(emu, 0.0, count, repeats) + bench_ingest(emu, latency, count, repeats)
        results.append(sdk_style_chunking(emu, count))
    for row in results:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
