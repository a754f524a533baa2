"""``m3ter-emulator``: run the local m3ter emulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import errno
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

from .server import M3terEmulator

#: not 8080, which is Airflow's api-server (and webserver) port
DEFAULT_PORT = 8765


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    parser = argparse.ArgumentParser(
        prog="m3ter-emulator",
        description="Serve a local m3ter emulator (auth, Config API, ingest, jobs) for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="TCP port, 0 for a free one (default: %(default)s)"
    )
    parser.add_argument("--access-key-id", default="emulator-access-key", help="service user Access Key id")
    parser.add_argument("--api-secret", default="emulator-api-secret", help="service user Api Secret")
    parser.add_argument("--org-id", default="emulator-org", help="the organization id to serve")
    parser.add_argument("--token-expires-in", type=int, default=18000, help="token lifetime in seconds")
    parser.add_argument("--job-duration", type=float, default=1.0, help="seconds a job takes to finish")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start the emulator, print its URL and Airflow connection, serve until interrupted."""
    args = build_parser().parse_args(argv)
    emulator = M3terEmulator(
        host=args.host,
        port=args.port,
        access_key_id=args.access_key_id,
        api_secret=args.api_secret,
        org_id=args.org_id,
        token_expires_in=args.token_expires_in,
        job_duration=args.job_duration,
        verbose=args.verbose,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        emulator.start()
    except OSError as error:
        print(f"m3ter-emulator: {_bind_problem(error, args.host, args.port)}", file=sys.stderr, flush=True)
        return 2
    print(f"m3ter emulator serving on {emulator.url}", flush=True)
    print(f"export AIRFLOW_CONN_M3TER_DEFAULT={shlex.quote(emulator.airflow_conn_json())}", flush=True)
    print("(run that export in the shell that runs Airflow: it points m3ter_default here)", flush=True)
    print(f"Control API (faults, stats, reset): {emulator.url}/_emulator/... (see the README)", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


def _bind_problem(error: OSError, host: str, port: int) -> str:
    """Say why the emulator could not listen, and what to do instead of showing a traceback."""
    if error.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use (another emulator, or Airflow's api-server?). "
            "Choose another with --port N, or --port 0 for any free port."
        )
    if error.errno == errno.EACCES:
        return f"not allowed to listen on port {port}: choose a port above 1023 with --port N."
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: it is not an address of this machine (try --host 127.0.0.1)."
    return f"cannot listen on {host}:{port}: {error.strerror or error}."


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
