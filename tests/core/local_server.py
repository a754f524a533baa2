"""A tiny scripted HTTP server on 127.0.0.1 for answers the emulator cannot give: redirects, HTML
pages, bodies cut off mid-way, undecodable bodies."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_BODY = b'{"access_token": "local-token", "token_type": "Bearer", "expires_in": 3600}'


@dataclass
class Answer:
    """One scripted answer. ``cut_after`` sends only that many body bytes, then closes."""

    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None


class LocalServer:
    """Answers each path from its queue of :class:`Answer` (the last one repeats); counts requests."""

    def __init__(self) -> None:
        self.answers: dict[str, list[Answer]] = {"/oauth/token": [Answer(body=TOKEN_BODY)]}
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                owner.requests.append((self.command, path))
                queue = owner.answers.get(path) or [Answer(status=404, body=b'{"message": "no route"}')]
                answer = queue.pop(0) if len(queue) > 1 else queue[0]
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if answer.cut_after is None:
                    self.wfile.write(answer.body)
                    return
                self.wfile.write(answer.body[: answer.cut_after])
                self.wfile.flush()
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)

            do_POST = do_PUT = do_DELETE = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})

    def answer(self, path: str, *answers: Answer) -> None:
        self.answers[path] = list(answers)

    def count(self, path: str) -> int:
        return sum(1 for _method, seen in self.requests if seen == path)

    def __enter__(self) -> LocalServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
