"""``m3ter-emulator``: run the local m3ter emulator until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import errno
import shlex
import signal
import sys
import threading
from collections.abc import Sequence

from .limits import RateLimits
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
    limits = parser.add_argument_group(
        "rate limits", "m3ter's published limits are enforced by default; 0 turns one limit off"
    )
    limits.add_argument("--no-limits", action="store_true", help="enforce no rate limit at all")
    defaults = RateLimits()
    for name, kind, help_text in _LIMIT_FLAGS:
        limits.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            type=kind,
            default=getattr(defaults, name),
            metavar="N",
            help=f"{help_text} (default: %(default)s)",
        )
    limits.add_argument(
        "--retry-after",
        action="store_true",
        help="send a Retry-After header with a rate limit's 429 (m3ter documents none)",
    )
    return parser


_LIMIT_FLAGS = (
    ("config_per_ip", int, "Config API requests per source IP per --ip-window seconds"),
    ("ingest_per_ip", int, "ingest API requests per source IP per --ip-window seconds"),
    ("ip_window", float, "the per-IP rolling window in seconds"),
    ("config_per_second", int, "Config API requests per second for the Organization"),
    ("ingest_per_second", int, "ingest API requests per second for the Organization"),
    ("usage_query_per_second", float, "usage query requests per second"),
    ("usage_query_burst", int, "usage query burst"),
    ("concurrent_bill_jobs", int, "bill jobs running at once before a new one answers 429"),
)


def limits_from_args(args: argparse.Namespace) -> RateLimits:
    """The :class:`RateLimits` the parsed command line asks for."""
    changes = {name: getattr(args, name) or None for name, _, _ in _LIMIT_FLAGS if name != "ip_window"}
    return RateLimits().updated(
        {
            **changes,
            "ip_window": args.ip_window,
            "enabled": not args.no_limits,
            "retry_after": args.retry_after,
        }
    )


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
        limits=limits_from_args(args),
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
    print(f"Rate limits: {_describe(emulator.limits)}", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


def _describe(limits: RateLimits) -> str:
    if not limits.enabled:
        return "off (--no-limits)"
    on = [f"{k}={v}" for k, v in limits.as_dict().items() if k != "enabled" and v not in (None, False)]
    return ", ".join(on)


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
