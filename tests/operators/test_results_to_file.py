"""Large results go to a file (JSON Lines), XCom carries path and counts; big XComs draw a warning."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from m3ter_provider.core.results import XCOM_WARN_BYTES, write_json_lines
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.operators.m3ter import M3terOperator
from tests.operators.helpers import make_context


def account(code: str) -> dict:
    return {"code": code, "name": code.title(), "emailAddress": f"{code}@example.com"}


def read_lines(path) -> list:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_paginate_to_a_local_file_returns_path_and_counts(emu, tmp_path):
    emu.seed("accounts", [account(f"acct{i:03d}") for i in range(250)])
    target = tmp_path / "out" / "accounts.jsonl"
    op = M3terOperator(task_id="list", endpoint="accounts", paginate=True, output_path=str(target))
    result = op.execute(make_context(op))
    assert result == {"path": str(target), "items": 250, "bytes": target.stat().st_size}
    assert sorted(a["code"] for a in read_lines(target)) == [f"acct{i:03d}" for i in range(250)]
    assert emu.stats()["requests"]["GET /organizations/{orgId}/accounts"] == 3  # pages of 100
    assert len(json.dumps(result)) < 1024
    assert [p.name for p in target.parent.iterdir()] == ["accounts.jsonl"]  # no temporary left


def test_output_path_is_templated_and_takes_object_storage_urls(emu, tmp_path):
    emu.seed("accounts", [account("a1"), account("a2")])
    op = M3terOperator(
        task_id="list",
        endpoint="accounts",
        paginate=True,
        output_path=f"file://{tmp_path}/{{{{ run_id }}}}.jsonl",
    )
    context = make_context(op, run_id="r7")
    op.render_template_fields(context)
    result = op.execute(context)
    assert result["items"] == 2 and result["path"] == f"file://{tmp_path}/r7.jsonl"
    assert len(read_lines(tmp_path / "r7.jsonl")) == 2


def test_a_single_answer_to_a_file_is_one_line(emu, tmp_path):
    created = emu.seed("accounts", [account("solo")])[0]
    target = ObjectStoragePath(f"file://{tmp_path}/one.jsonl")
    op = M3terOperator(task_id="one", endpoint=f"accounts/{created['id']}", output_path=target)
    result = op.execute(make_context(op))
    assert result["items"] == 1 and read_lines(tmp_path / "one.jsonl")[0]["code"] == "solo"


def test_response_filter_with_output_path_is_refused_at_parse_time():
    with pytest.raises(M3terConfigError, match="give one or the other"):
        M3terOperator(
            task_id="x", endpoint="accounts", paginate=True, output_path="a.jsonl", response_filter=len
        )


def test_a_large_xcom_result_draws_a_warning_naming_the_fix(emu, caplog, capsys):
    emu.seed("accounts", [account(f"big{i:04d}" + "x" * 60) for i in range(1200)])
    op = M3terOperator(task_id="list", endpoint="accounts", paginate=True)
    with caplog.at_level(logging.WARNING):
        result = op.execute(make_context(op))
    assert len(json.dumps(result)) > XCOM_WARN_BYTES
    logged = caplog.text + capsys.readouterr().out  # Airflow 3 task loggers write through structlog
    assert "pushed to XCom" in logged and "give output_path" in logged


def test_a_small_xcom_result_draws_none(emu, caplog, capsys):
    emu.seed("accounts", [account("a1")])
    op = M3terOperator(task_id="list", endpoint="accounts", paginate=True)
    with caplog.at_level(logging.WARNING):
        op.execute(make_context(op))
    assert "pushed to XCom" not in caplog.text + capsys.readouterr().out


def test_a_failure_part_way_leaves_the_previous_file(tmp_path):
    target = tmp_path / "keep.jsonl"
    target.write_text('{"old": true}\n')

    def items():
        yield {"a": 1}
        raise RuntimeError("m3ter went away")

    with pytest.raises(RuntimeError):
        write_json_lines(items(), target)
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["keep.jsonl"]


def test_an_item_json_cannot_hold_names_its_position(tmp_path):
    with pytest.raises(TypeError, match="item #1"):
        write_json_lines([{"a": 1}, {"b": object()}], tmp_path / "x.jsonl")


# ------------------------------------------------------------------ 1,000,000 items, flat memory
class _Pages(BaseHTTPRequestHandler):
    """m3ter's list shape for ``total`` accounts, made page by page (nothing held), and a token."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK wait
    total = 0

    def log_message(self, *args) -> None:
        pass

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # the token exchange
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._send(b'{"access_token": "t", "token_type": "Bearer", "expires_in": 3600}')

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        size = int(query["pageSize"][0])
        start = int(query.get("nextToken", ["0"])[0])
        stop = min(start + size, self.total)
        data = [{"id": f"id-{i:07d}", "code": f"acct-{i:07d}", "version": 1} for i in range(start, stop)]
        page = {"data": data, **({"nextToken": str(stop)} if stop < self.total else {})}
        self._send(json.dumps(page).encode())


CHILD = textwrap.dedent(
    """
    import json, sys
    from m3ter_provider.operators.m3ter import M3terOperator
    from tests.operators.helpers import make_context

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    # pages of 1,000 (m3ter serves at most 100 or 200 of its lists, and the client refuses a larger
    # pageSize for a list the spec names): the memory under test is the task's, not paging's, so the
    # local page server serves a list the spec has no maximum for
    op = M3terOperator(
        task_id="all", endpoint="items", paginate=True, page_size=1000, output_path=sys.argv[1]
    )
    context = make_context(op)
    op.hook.client  # the HTTP stack loaded before the baseline
    base = rss("VmRSS")
    result = op.execute(context)
    print(json.dumps({"result": result, "growth": rss("VmHWM") - base}))
    """
)


def _paginate_in_child(total: int, path, env) -> dict:
    _Pages.total = total
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=900, env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_a_million_items_paginated_to_a_file_keep_memory_flat_and_xcom_tiny(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    conn = {"conn_type": "m3ter", "login": "k", "password": "s", "host": url, "extra": {"org_id": "o"}}
    env = {**os.environ, "AIRFLOW_CONN_M3TER_DEFAULT": json.dumps(conn)}
    try:
        small = _paginate_in_child(20_000, tmp_path / "small.jsonl", env)
        big = _paginate_in_child(1_000_000, tmp_path / "big.jsonl", env)
    finally:
        server.shutdown()
        server.server_close()
    assert small["result"]["items"] == 20_000
    assert big["result"]["items"] == 1_000_000
    with open(tmp_path / "big.jsonl", "rb") as handle:
        assert sum(1 for _ in handle) == 1_000_000
    assert big["result"]["bytes"] == (tmp_path / "big.jsonl").stat().st_size
    assert len(json.dumps(big["result"])) < 1024  # what goes to XCom
    # a list of a million dicts would cost hundreds of MB; streamed, the peak barely moves
    extra_items = 1_000_000 - 20_000
    per_item = max(0, big["growth"] - small["growth"]) / extra_items
    print(f"RSS growth: {small['growth'] / 2**20:.1f} MiB (20k), {big['growth'] / 2**20:.1f} MiB (1M)")
    assert per_item < 16, f"{per_item:.1f} bytes of RSS per extra item"
