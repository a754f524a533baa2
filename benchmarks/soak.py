"""Fault soak: ingest through the hook while m3ter misbehaves, kill the task, retry: none lost or doubled.

The emulator (in this process) answers a share of the token and ingest calls (20% by default) with
429, 500, 502, 503, a dropped connection, or an answer slower than the client's timeout (m3ter
stored that batch, the client does not know it), and expires every token twice during the soak.
The ingest runs in a child process, as an Airflow task would: ``M3terHook().submit_measurements``
with a fixed uid namespace. The child is SIGKILLed part-way, then run again with the same input and
namespace (Airflow's retry). Afterwards the emulator must hold exactly N distinct measurements.

    python benchmarks/soak.py [--measurements 100000] [--fault-rate 0.2] [--kill-at 0.4] [--seed 1]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

TOKEN = "/oauth/token"  # noqa: S105 - a route, not a secret
MEASUREMENTS = "/organizations/{orgId}/measurements"
#: the client's read timeout in the soak; "slow" faults answer later than this
TIMEOUT = 3
FAULTS = (
    {"status": 429, "retry_after": "1"},
    {"status": 500},
    {"status": 502},
    {"status": 503},
    {"drop": True},
)


def soak_rows(count: int) -> list[dict]:
    """The same input on every run (no uids: the hook derives them from the namespace)."""
    return [
        {
            "account": f"acct-{i % 500:03d}",
            "meter": "soak",
            "ts": f"2026-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z",
            "measure": {"units": i},
            "metadata": {"row": str(i), "pad": "y" * 800},
        }
        for i in range(count)
    ]


def install_random_faults(emulator: Any, rate: float, seed: int) -> collections.Counter:
    """Make the emulator answer ``rate`` of token and ingest calls with a random fault; count them."""
    from m3ter_provider.testing.control import FaultBook, make_fault

    rng = random.Random(seed)
    counts: collections.Counter = collections.Counter()

    class RandomFaults(FaultBook):
        def take(self, method: str, template: str) -> Any:
            planned = super().take(method, template)
            if planned is not None or template not in (TOKEN, MEASUREMENTS) or rng.random() >= rate:
                return planned
            if rng.random() < 1 / 6:
                counts["slow (answered after the client's timeout)"] += 1
                return make_fault(template, delay=TIMEOUT + 1.0)
            kind = rng.choice(FAULTS)
            counts["dropped" if kind.get("drop") else str(kind["status"])] += 1
            return make_fault(template, **kind)

    emulator._app.faults = RandomFaults()  # the emulator's planned-fault book, randomised
    return counts


def run_child(env: dict[str, str], count: int, namespace: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", str(count), "--namespace", namespace],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def child(count: int, namespace: str) -> int:
    from m3ter_provider.hooks.m3ter import M3terHook

    result = M3terHook().submit_measurements(soak_rows(count), uid_namespace=namespace, concurrency=2)
    print(json.dumps(result))
    return 0


def soak(count: int, *, fault_rate: float = 0.2, kill_at: float = 0.4, seed: int = 1) -> dict[str, Any]:
    """Run the soak; return what happened (the caller asserts)."""
    from m3ter_provider.testing import M3terEmulator

    with M3terEmulator() as emulator:
        # the Meter exists, as in a real Organization (m3ter refuses measurements of unknown Meters)
        emulator.seed("meters", [{"code": "soak", "name": "Soak", "dataFields": [], "derivedFields": []}])
        faults = install_random_faults(emulator, fault_rate, seed)
        conn = json.loads(emulator.airflow_conn_json())
        conn["extra"].update({"timeout": TIMEOUT, "max_retries": 10})
        home = tempfile.mkdtemp(prefix="m3ter-soak-airflow-")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "M3TER_"))}
        env.update(
            AIRFLOW_HOME=home,
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW_CONN_M3TER_DEFAULT=json.dumps(conn),
        )
        namespace = f"soak-{seed}"
        started = time.monotonic()
        expiries: list[int] = []

        def stored() -> int:
            return emulator.stats()["measurements_stored"]

        def watch(process: subprocess.Popen, expire_at: float, kill: float | None) -> bool:
            """Expire tokens once ``expire_at`` of the rows are stored, SIGKILL at ``kill``: killed?"""
            expired = False
            while process.poll() is None:
                done = stored() / count
                if not expired and done >= expire_at:
                    expiries.append(emulator.expire_tokens())
                    expired = True
                if kill is not None and done >= kill:
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return True
                time.sleep(0.02)
            return False

        first = run_child(env, count, namespace)
        killed = watch(first, expire_at=kill_at / 2, kill=kill_at)
        stored_at_kill = stored()
        first_out = first.communicate()
        retry = run_child(env, count, namespace)
        threading.Thread(target=watch, args=(retry, (1 + kill_at) / 2, None), daemon=True).start()
        out, err = retry.communicate(timeout=3600)
        elapsed = time.monotonic() - started
        stats = emulator.stats()
        uids = [m.get("uid") for m in emulator.measurements()]
        return {
            "measurements": count,
            "killed_part_way": killed,
            "stored_when_killed": stored_at_kill,
            "first_run_exit": first.returncode,
            "first_run_stderr_tail": "" if killed else first_out[1][-2000:],
            "retry_exit": retry.returncode,
            "retry_result": json.loads(out.strip().splitlines()[-1])
            if retry.returncode == 0
            else err[-3000:],
            "stored": stats["measurements_stored"],
            "distinct_uids": len(set(uids)),
            "measurement_requests": stats["measurement_requests"],
            "ingest_answers": stats["statuses"].get("POST " + MEASUREMENTS, {}),
            "token_exchanges": stats["token_exchanges"],
            "token_expiries": len(expiries),
            "faults_injected": dict(faults),
            "seconds": round(elapsed, 1),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--measurements", type=int, default=100_000)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument(
        "--kill-at", type=float, default=0.4, help="share of rows stored when the task is killed"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--namespace", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return child(args.child, args.namespace)
    result = soak(args.measurements, fault_rate=args.fault_rate, kill_at=args.kill_at, seed=args.seed)
    print(json.dumps(result, indent=1))
    ok = result["stored"] == result["distinct_uids"] == args.measurements and result["retry_exit"] == 0
    print("==> exactly once" if ok else "==> FAILED: lost or doubled measurements")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
