"""The HTTP server (keep-alive, TCP_NODELAY, quiet) and ``M3terEmulator``, its public face."""

from __future__ import annotations

import contextlib
import http
import json
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .api_control import seed_entities
from .app import EmulatorApp
from .control import make_fault
from .limits import RateLimits
from .routing import Request, Response, error_response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "m3ter-emulator"
    server: _Server

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_GET

    def __getattr__(self, name: str) -> Any:
        """Any other method (``QUERY``, ``PROPFIND``, a made-up verb) is routed too: a JSON 405 with
        ``Allow`` (or 404) instead of http.server's HTML 501."""
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (malformed request line, header too long) as m3ter's JSON."""
        self.close_connection = True
        try:
            phrase = http.HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        self._write(error_response(code, message or phrase), head=self.command == "HEAD")

    def do_HEAD(self) -> None:
        """HEAD answers what GET would (status, headers, Content-Length) without the body."""
        self._serve(head=True)

    def _serve(self, head: bool = False) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._write(error_response(400, "malformed Content-Length or chunked request body"))
            return
        url = urlsplit(self.path)
        request = Request(
            method="GET" if head else self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            client=client_address(self.client_address[0]),
        )
        response = self.server.app.handle(request)
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._write(response, head=head)

    def _write(self, response: Response, head: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(response.body)

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"m3ter-emulator: {self.address_string()} {format % args}\n")


def client_address(host: str) -> str:
    """The client's IP as the limits and stats key it (an IPv4-mapped IPv6 address as plain IPv4)."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: EmulatorApp, verbose: bool) -> None:
        self.app = app
        self.verbose = verbose
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._open_lock:
            self._open.add(sock)
        with self.app.lock:
            self.app.stats.connections_accepted += 1
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet about clients that went away; report anything else."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)) and not self.verbose:
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        """Close every kept-alive client connection (so stop() really stops serving)."""
        with self._open_lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class M3terEmulator:
    """A local m3ter (Config API, ingest, auth, jobs) on a background thread, for tests and demos.

    ``with M3terEmulator() as emu: ...`` serves on ``emu.url`` (127.0.0.1, a free port by default).

    :param host: interface to bind.
    :param port: TCP port; 0 picks a free one.
    :param access_key_id: the service user's Access Key id (Basic auth login of ``/oauth/token``).
    :param api_secret: the service user's Api Secret.
    :param org_id: the only organization id the emulator serves; any other answers 403.
    :param token_expires_in: bearer token lifetime in seconds.
    :param job_duration: seconds a job takes from creation to its final status.
    :param verbose: log one line per request to stderr.
    :param limits: m3ter's rate limits (:class:`RateLimits`), on by default with m3ter's published
        values; False turns them all off, a dict changes some (e.g. ``{"ingest_per_second": 10}``).
    :param retry_after: send a ``Retry-After`` header with a rate limit's 429 (m3ter documents none,
        so by default there is none).
    :param clock: the monotonic clock the limits read (tests inject a frozen one).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        access_key_id: str = "emulator-access-key",
        api_secret: str = "emulator-api-secret",  # noqa: S107 - a local emulator's well-known secret
        org_id: str = "emulator-org",
        token_expires_in: int = 18000,
        job_duration: float = 1.0,
        verbose: bool = False,
        limits: RateLimits | dict | bool = True,
        retry_after: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.port = port
        self.access_key_id = access_key_id
        self.api_secret = api_secret
        self.org_id = org_id
        self.verbose = verbose
        self._app = EmulatorApp(
            org_id=org_id,
            access_key_id=access_key_id,
            api_secret=api_secret,
            token_expires_in=token_expires_in,
            job_duration=job_duration,
            limits=_limits(limits, retry_after),
            clock=clock,
        )
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> M3terEmulator:
        """Bind and serve on a daemon thread; return self."""
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), self._app, self.verbose)
        self.port = server.server_address[1]
        self._app.base_url = self.url
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="m3ter-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> M3terEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """``http://host:port`` (the port is known once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    # -- configuration ----------------------------------------------------------------------
    @property
    def job_duration(self) -> float:
        """Seconds jobs created from now on take to finish."""
        return self._app.jobs.job_duration

    @job_duration.setter
    def job_duration(self, seconds: float) -> None:
        with self._app.lock:
            self._app.jobs.job_duration = float(seconds)

    @property
    def limits(self) -> RateLimits:
        """The rate limits in force (see :class:`RateLimits`)."""
        return self._app.limiter.limits

    def set_limits(self, limits: RateLimits | None = None, **changes: Any) -> RateLimits:
        """Replace the limits, or change some (``set_limits(ingest_per_second=10, retry_after=True)``,
        ``set_limits(enabled=False)``); return the limits now in force. Counts so far are kept."""
        with self._app.lock:
            current = limits if limits is not None else self._app.limiter.limits
            self._app.limiter.limits = current.updated(changes)
            return self._app.limiter.limits

    def routes(self) -> list[str]:
        """Every route served, as "METHOD /template" (the keys of stats and faults)."""
        return [route.key for route in self._app.router.routes]

    def connection_extra(self) -> dict[str, str]:
        """The Airflow connection ``extra`` for this emulator."""
        return {"org_id": self.org_id}

    def airflow_conn_json(self) -> str:
        """A JSON connection usable as ``AIRFLOW_CONN_M3TER_DEFAULT``."""
        return json.dumps(
            {
                "conn_type": "m3ter",
                "login": self.access_key_id,
                "password": self.api_secret,
                "host": self.url,
                "extra": self.connection_extra(),
            }
        )

    # -- observability and faults -----------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Request, token and measurement counters (see ``GET /_emulator/stats``)."""
        return self._app.snapshot_stats()

    def add_fault(
        self,
        route: str,
        status: int | None = None,
        times: int | None = 1,
        retry_after: str | int | None = None,
        delay: float = 0.0,
        drop: bool = False,
        body: Any = None,
    ) -> None:
        """Misbehave on the next ``times`` calls to ``route``.

        :param route: "METHOD /template" (e.g. "POST /organizations/{orgId}/measurements"), or a bare
            "/template" for any method.

        :param status: answer this status with ``{"message"}`` (or ``body``) instead of running the handler.
        :param times: how many matching calls; None means every one until ``clear_faults()``.
        :param retry_after: value of a ``Retry-After`` header sent with ``status``.
        :param delay: sleep this many seconds first (alone: then answer normally).
        :param drop: close the connection without answering.
        """
        fault = make_fault(route, status, times, retry_after, delay, drop, body)
        with self._app.lock:
            self._app.faults.add(fault)

    def clear_faults(self) -> None:
        """Forget every planned fault."""
        with self._app.lock:
            self._app.faults.clear()

    def expire_tokens(self) -> int:
        """Expire every issued token now; return how many."""
        return self._app.expire_tokens()

    def fail_next_job(self, kind: str, times: int = 1) -> None:
        """The next ``times`` jobs of ``kind`` (dataexport, billjob, statementjob, fileupload) fail."""
        with self._app.lock:
            self._app.jobs.plan_failures(kind, times)

    # -- data -------------------------------------------------------------------------------
    def measurements(self) -> list[dict]:
        """Copies of the stored measurements, in arrival order."""
        return self._app.stored_measurements()

    def entities(self, collection: str) -> list[dict]:
        """Copies of a collection's entities (accounts, bills, ...) in creation order."""
        with self._app.lock:
            self._app.jobs.advance()
            return self._app.store.all(collection)

    def seed(self, collection: str, items: list[dict]) -> list[dict]:
        """Create entities directly (no validation); return them with id, version and audit fields."""
        return seed_entities(self._app, collection, items)

    def add_event(
        self, event_name: str, event_data: dict | None = None, account_id: str | None = None
    ) -> dict:
        """Record one m3ter Event (served by ``GET /events``), as ``POST /_emulator/events`` does."""
        with self._app.lock:
            return self._app.events.record_event(event_name, event_data or {}, account_id)

    def reset(self) -> None:
        """Clear data, stats, faults, jobs and tokens."""
        self._app.reset()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"M3terEmulator(url={self.url!r}, org_id={self.org_id!r}, {state})"


def _limits(limits: RateLimits | dict | bool, retry_after: bool) -> RateLimits:
    if isinstance(limits, RateLimits):
        chosen = limits
    elif isinstance(limits, dict):
        chosen = RateLimits().updated(limits)
    elif isinstance(limits, bool):
        chosen = RateLimits(enabled=limits)
    else:
        raise TypeError("limits must be a RateLimits, a dict of changes, or a bool")
    return chosen.updated({"retry_after": True}) if retry_after else chosen
