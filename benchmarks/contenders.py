"""What users would pick instead of the hook, in one run, alternated: medians and spread, on the emulator.

Contenders (each present only when installed; ``pip install 'airflow-provider-m3ter[bench]'``):

- ``hook``: ``M3terHook`` (its process-wide token cache, one keep-alive session).
- ``hook sdk``: ``hook.get_sdk_client()``: the official SDK's typed client on the hook's token.
- ``sdk``: the official SDK's ``m3ter.M3ter`` on its own (0.9.0: a token exchange before every call).
- ``HttpHook``: ``apache-airflow-providers-http``'s ``HttpHook`` with a token fetched by hand once.
- ``requests``: a bare ``requests.Session`` with a token fetched by hand once (the baseline).

Cases: 300 single-resource reads (token exchanges, time per call); listing 20,000 accounts
(requests, items/s, peak memory of the listing); ingest of 20,000 measurements of ~700 bytes
(requests, rejected requests, measurements stored; the SDK chunks by count only, so its bodies pass
m3ter's 512,000-byte limit and m3ter refuses them with 403).

The emulator runs in a child process. Each case runs every contender once per round, in a rotating
order, for ``--rounds`` rounds. ``python benchmarks/contenders.py [--quick] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import EmulatorProcess  # the emulator-in-a-child-process of benchmarks/run.py


def measurement_rows(count: int, tag: str) -> list[dict]:
    """~700 bytes each once encoded; uids unique per ``tag`` so runs do not dedupe each other."""
    return [
        {
            "uid": f"{tag}-{i:08d}",
            "account": f"acct-{i % 100:03d}",
            "meter": "api_calls",
            "ts": "2026-01-15T12:00:00Z",
            "measure": {"calls": i, "latency_ms": 12.5},
            "who": {"user": f"user-{i:06d}"},
            "metadata": {"pad": "x" * 530},
        }
        for i in range(count)
    ]


class Contenders:
    """Builds each contender fresh (a cold token cache) for one run."""

    def __init__(self, emu: EmulatorProcess) -> None:
        self.emu = emu
        conn = {
            "conn_type": "m3ter",
            "login": emu.key,
            "password": emu.secret,
            "host": emu.url,
            "extra": {"org_id": emu.org},
        }
        os.environ["AIRFLOW_CONN_M3TER_BENCH"] = json.dumps(conn)
        os.environ["AIRFLOW_CONN_M3TER_HTTP"] = json.dumps({"conn_type": "http", "host": emu.url})
        self.names = ["hook"]
        import m3ter_provider.hooks.m3ter  # imports happen before the clocks start

        if importlib.util.find_spec("m3ter") is not None:
            import m3ter_provider.core.sdk

            m3ter_provider.core.sdk._client_class()
            self.names += ["hook sdk", "sdk"]
        if importlib.util.find_spec("airflow.providers.http") is not None:
            import airflow.providers.http.hooks.http  # noqa: F401

            self.names.append("HttpHook")
        self.names.append("requests")

    def org_path(self, path: str) -> str:
        return f"/organizations/{self.emu.org}/{path}"

    def hook(self) -> Any:
        from m3ter_provider.core.tokens.cache import TOKEN_CACHE
        from m3ter_provider.hooks.m3ter import M3terHook

        TOKEN_CACHE.clear()
        return M3terHook(m3ter_conn_id="m3ter_bench")

    def sdk(self) -> Any:
        import m3ter

        return m3ter.M3ter(
            api_key=self.emu.key, api_secret=self.emu.secret, org_id=self.emu.org, base_url=self.emu.url
        )

    def bearer_session(self) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {self.emu.naive_token()}"
        return session

    # ---------------------------------------------------------------- cases
    def reader(self, name: str, account_id: str, calls: int) -> Callable[[], None]:
        if name == "hook":
            hook = self.hook()
            return lambda: [hook.get(f"accounts/{account_id}") for _ in range(calls)]
        if name == "hook sdk":
            hook = self.hook()

            def via_hook_token() -> None:
                sdk = hook.get_sdk_client()  # its token exchange falls inside the timed run, like the others'
                for _ in range(calls):
                    sdk.accounts.retrieve(account_id)

            return via_hook_token
        if name == "sdk":
            sdk = self.sdk()
            return lambda: [sdk.accounts.retrieve(account_id) for _ in range(calls)]
        if name == "HttpHook":
            from airflow.providers.http.hooks.http import HttpHook

            def go() -> None:
                http = HttpHook(method="GET", http_conn_id="m3ter_http")
                headers = {"Authorization": f"Bearer {self.emu.naive_token()}"}
                for _ in range(calls):
                    http.run(self.org_path(f"accounts/{account_id}"), headers=headers).json()

            return go
        url = self.emu.url + self.org_path(f"accounts/{account_id}")

        def bare() -> None:
            session = self.bearer_session()
            for _ in range(calls):
                answer = session.get(url, timeout=30)
                answer.raise_for_status()
                answer.json()

        return bare

    def lister(self, name: str) -> Callable[[], int]:
        """Iterate every account, keeping none; return how many were seen."""
        if name == "hook":
            hook = self.hook()
            return lambda: sum(1 for _ in hook.paginate("accounts", page_size=100))
        if name in ("hook sdk", "sdk"):
            hook = self.hook()
            return lambda: sum(
                1
                for _ in (hook.get_sdk_client() if name == "hook sdk" else self.sdk()).accounts.list(
                    page_size=100
                )
            )
        if name == "HttpHook":
            return None  # HttpHook does not page; users write the loop of the bare baseline
        url = self.emu.url + self.org_path("accounts")

        def bare() -> int:
            session, seen, params = self.bearer_session(), 0, {"pageSize": 100}
            while True:
                page = session.get(url, params=params, timeout=30).json()
                seen += len(page["data"])
                if not page.get("nextToken"):
                    return seen
                params["nextToken"] = page["nextToken"]

        return bare

    def ingester(self, name: str, rows: list[dict]) -> Callable[[], int] | None:
        """Send every row; return how many requests were refused."""
        if name == "hook":
            hook = self.hook()
            return lambda: hook.submit_measurements(rows) and 0
        if name == "sdk":
            sdk = self.sdk()

            def go() -> int:
                import m3ter

                refused = 0
                try:
                    for _ in sdk.usage.submit_all(measurements=rows):
                        pass
                except m3ter.APIStatusError:
                    refused += 1  # the generator ends at the first refusal: later chunks are never sent
                return refused

            return go
        return None  # the others have no batching of their own


def run_case(
    emu: EmulatorProcess, contenders: Contenders, rounds: int, make: Callable[[str, int], Callable | None]
) -> dict[str, list[dict[str, Any]]]:
    """Run every contender once per round in a rotating order; per contender, one record per round."""
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders.names}
    for round_no in range(rounds):
        shift = round_no % len(contenders.names)
        for name in contenders.names[shift:] + contenders.names[:shift]:
            run = make(name, round_no)
            if run is None:
                continue
            before = emu.stats()
            gc.collect()
            started = time.perf_counter()
            result = run()
            seconds = time.perf_counter() - started
            after = emu.stats()
            records[name].append(
                {
                    "seconds": seconds,
                    "result": result,
                    "token_exchanges": after["token_exchanges"] - before["token_exchanges"],
                    "requests": after["requests_total"] - before["requests_total"],
                    "measurement_requests": after["measurement_requests"] - before["measurement_requests"],
                    "stored": after["measurements_stored"] - before["measurements_stored"],
                }
            )
    return {name: runs for name, runs in records.items() if runs}


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> dict[str, float]:
    values = [v * scale for v in values]
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def peak_memory(run: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--case", action="append", choices=("reads", "listing", "ingest"), help="run only these (repeatable)"
    )
    args = parser.parse_args(argv)
    reads, accounts, rows = (60, 2_000, 2_000) if args.quick else (300, 20_000, 20_000)
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="m3ter-bench-airflow-"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    results: dict[str, Any] = {}
    with EmulatorProcess() as emu:
        emu.reset(0)
        contenders = Contenders(emu)
        seeded = emu.control.post(
            f"{emu.url}/_emulator/seed",
            json={
                "collection": "accounts",
                "items": [{"name": f"Account {i}", "code": f"acct-{i:05d}"} for i in range(accounts)],
            },
            timeout=300,
        ).json()["data"]
        account_id = seeded[0]["id"]

        cases = set(args.case or ("reads", "listing", "ingest"))
        read_runs = (
            {}
            if "reads" not in cases
            else run_case(
                emu, contenders, args.rounds, lambda name, _: contenders.reader(name, account_id, reads)
            )
        )
        results[f"{reads} single-resource reads"] = {
            name: {
                "ms_per_call": spread([r["seconds"] / reads for r in runs], 1000),
                "token_exchanges": statistics.median(r["token_exchanges"] for r in runs),
                "requests": statistics.median(r["requests"] for r in runs),
            }
            for name, runs in read_runs.items()
        }

        list_runs = (
            {}
            if "listing" not in cases
            else run_case(emu, contenders, args.rounds, lambda name, _: contenders.lister(name))
        )
        results[f"listing {accounts:,} accounts"] = {
            name: {
                "items_per_s": spread([r["result"] / r["seconds"] for r in runs], digits=0),
                "items": runs[0]["result"],
                "requests": statistics.median(r["requests"] for r in runs),
                "peak_memory_kib": peak_memory(contenders.lister(name)) // 1024,
            }
            for name, runs in list_runs.items()
        }

        def ingest(name: str, round_no: int) -> Callable | None:
            return contenders.ingester(name, measurement_rows(rows, f"{name}-{round_no}"))

        ingest_runs = {} if "ingest" not in cases else run_case(emu, contenders, args.rounds, ingest)
        size = len(json.dumps(measurement_rows(1, "x")[0], separators=(",", ":")))
        results[f"ingest of {rows:,} measurements (~{size} bytes each)"] = {
            name: {
                "seconds": spread([r["seconds"] for r in runs]),
                "measurement_requests": statistics.median(r["measurement_requests"] for r in runs),
                "rejected_requests": statistics.median(r["result"] for r in runs),
                "measurements_stored": statistics.median(r["stored"] for r in runs),
                "measurements_not_stored": rows - statistics.median(r["stored"] for r in runs),
                "token_exchanges": statistics.median(r["token_exchanges"] for r in runs),
            }
            for name, runs in ingest_runs.items()
        }
    print(json.dumps(results, indent=1))
    for case, rows_by_name in results.items():
        print(f"\n{case}")
        for name, row in rows_by_name.items():
            print(f"| {name} | " + " | ".join(f"{k}={_short(v)}" for k, v in row.items()) + " |")
    return 0


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return f"{value['median']:g} ({value['min']:g}-{value['max']:g})"
    return f"{value:g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
