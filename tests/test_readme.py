"""Every example in README.md and the docs site works as pasted, checked more closely than by running it.

tests/test_docs.py runs every ``python`` block of the README and of every docs page against a fresh
emulator, and checks every ``bash`` and ``json`` block. The tests here go further for the examples
that configure or report something: they call the hook block's tasks and count what m3ter stored,
run the daily DAG end to end, connect with the connection examples, post the fault examples and
compare the control API table with the emulator's routes. Each README ``python`` block must have a
runner below (a new block without one fails the test). Blocks run elsewhere or not at all:

- the set-up commands (``scripts/demo``, ``scripts/test``): tests/test_demo.py runs the demo, CI the tests;
- ``source .venv/bin/activate``, the install commands and ``python -m build``: CI builds the wheel;
- ``export M3TER_ACCESS_KEY_ID=...``: credentials for real m3ter, which tests never reach;
- ``scripts/test -m ...``, ``python benchmarks/run.py``: development commands;
- the ``m3ter-emulator`` and ``curl`` lines: the command is tested in tests/test_emulator_cli.py, and
  the fault JSON those ``curl`` lines send is posted below.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
from collections.abc import Iterator

import pytest
import requests

from m3ter_provider.testing import M3terEmulator
from tests.docs_blocks import DOCS, blocks_of

REPO = pathlib.Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
#: the README and every docs page, as written (examples moved from the README to the docs keep their tests)
TEXT = README + "".join(page.read_text(encoding="utf-8") for page in sorted(DOCS.rglob("*.md")))
BLOCKS = re.findall(r"^```(\w*)\n(.*?)^```", TEXT, re.MULTILINE | re.DOTALL)
README_PYTHON_BLOCKS = [block.code for block in blocks_of(REPO / "README.md") if block.language == "python"]


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCKS if lang == language]


def block_with(language: str, marker: str) -> str:
    found = [code for code in blocks(language) if marker in code]
    assert len(found) == 1, f"expected one {language} block with {marker!r} in the docs, found {len(found)}"
    return found[0]


#: the python blocks and how each is exercised (a marker each block contains)
PYTHON_RUNNERS = {
    "def sync_accounts": "test_hook_block_runs_against_the_emulator",
    "M3terDataExportOperator(": "test_operators_block_is_the_daily_example_dag_and_runs",
    "with M3terEmulator(": "test_emulator_block_runs",
}


def test_every_python_block_has_a_runner() -> None:
    assert README_PYTHON_BLOCKS, "README.md has no python blocks?"
    for code in README_PYTHON_BLOCKS:
        runners = [test for marker, test in PYTHON_RUNNERS.items() if marker in code]
        assert len(runners) == 1, f"no test runs this README block (add one to PYTHON_RUNNERS):\n{code}"
    for marker in PYTHON_RUNNERS:
        assert block_with("python", marker)


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> Iterator[M3terEmulator]:
    with M3terEmulator(job_duration=0.2) as emu:
        # the README's blocks report usage of a Meter the Organization has, as real ones do
        # (m3ter refuses measurements of unknown Meters after answering 200)
        emu.seed(
            "meters", [{"code": "api_calls", "name": "API calls", "dataFields": [], "derivedFields": []}]
        )
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", emu.airflow_conn_json())
        monkeypatch.setenv("M3TER_DEMO_OUTPUT", str(tmp_path))
        yield emu


def _exec(code: str) -> dict:
    namespace: dict = {"__name__": "readme_block"}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own examples
    return namespace


def test_hook_block_runs_against_the_emulator(emulator: M3terEmulator) -> None:
    namespace = _exec(block_with("python", "def sync_accounts"))
    currency = namespace["sync_accounts"].function()
    assert isinstance(currency, str) and currency
    assert [a["code"] for a in emulator.entities("accounts")] == ["acme"]
    rows = [{"account": "acme", "meter": "api_calls", "ts": "2026-01-01T00:00:00Z", "measure": {"n": 1}}]
    from tests.operators.helpers import in_task

    with in_task("push_usage", try_number=1):
        summary = namespace["push_usage"].function(rows)
    assert summary["measurements"] == 1 and emulator.stats()["measurements_stored"] == 1
    with in_task("push_usage", try_number=2):
        namespace["push_usage"].function(rows)  # a retry: same uids, counted once
    assert emulator.stats()["measurements_stored"] == 1


@pytest.mark.e2e
def test_operators_block_is_the_daily_example_dag_and_runs(
    emulator: M3terEmulator, airflow_db: str, tmp_path: pathlib.Path
) -> None:
    """The README's operators block is example_m3ter_daily_usage word for word; it runs to success."""
    from tests.dags.test_example_dags import run_example

    code = block_with("python", "M3terDataExportOperator(")
    example = (REPO / "example_dags" / "example_m3ter_daily_usage.py").read_text()
    between = example.split("# README: operators", 1)[1].split("\n", 1)[1].split("# README: end", 1)[0]
    assert code == between, "README.md's operators block and example_m3ter_daily_usage.py differ"
    assert "}}Z" not in code, "'{{ ... | ts }}Z' renders '+00:00Z', which m3ter refuses"

    _, xcoms = run_example("example_m3ter_daily_usage")
    assert xcoms[("push_usage", "return_value")]["measurements"] == 1
    export = xcoms[("export_usage", "return_value")]
    assert export["status"] == "SUCCEEDED"
    assert pathlib.Path(export["destination"]).parent == tmp_path
    (stored,) = emulator.measurements()
    assert stored["account"] == "acme" and stored["meter"] == "api_calls"
    with open(export["destination"], encoding="utf-8") as handle:
        assert "acme" in handle.read(), "the export of the run's day holds the measurement it pushed"
    assert xcoms[("bills", "return_value")] == []


def test_emulator_block_runs() -> None:
    namespace = _exec(block_with("python", "with M3terEmulator("))
    emu = namespace["emu"]
    assert not emu.running  # the block's with-statement stopped it
    assert namespace["M3terEmulator"] is M3terEmulator


def _exported_connection(variable: str) -> str:
    """The value a README bash block exports as ``variable`` (the first one that does)."""
    for code in blocks("bash"):
        joined = code.replace("\\\n", " ")
        for statement in re.findall(rf"export {variable}=('.*?')", joined, re.DOTALL):
            return shlex.split(statement)[0]
    raise AssertionError(f"neither README.md nor the docs export {variable}")


def test_json_connection_example_works_against_the_emulator(
    emulator: M3terEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3ter_provider.hooks.m3ter import M3terHook

    text = _exported_connection("AIRFLOW_CONN_M3TER_DEFAULT")
    conn = json.loads(text)
    assert set(conn) == {"conn_type", "login", "password", "host", "extra"}, "the JSON example lacks a field"
    conn.update(login=emulator.access_key_id, password=emulator.api_secret, host=emulator.url)
    conn["extra"]["org_id"] = emulator.org_id
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))
    ok, message = M3terHook().test_connection()
    assert ok, message


def test_uri_connection_example_for_a_local_emulator_works(
    emulator: M3terEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from m3ter_provider.hooks.m3ter import M3terHook

    uri = _exported_connection("AIRFLOW_CONN_M3TER_LOCAL")
    uri = (
        uri.replace("<key>", emulator.access_key_id)
        .replace("<secret>", emulator.api_secret)
        .replace("<org id>", emulator.org_id)
        .replace("127.0.0.1:8765", f"127.0.0.1:{emulator.port}")
    )
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_LOCAL", uri)
    ok, message = M3terHook(m3ter_conn_id="m3ter_local").test_connection()
    assert ok, message


def test_control_api_table_lists_every_control_route(emulator: M3terEmulator) -> None:
    emulator_page = (DOCS / "emulator.md").read_text(encoding="utf-8")
    documented = set(
        re.findall(r"^\| `((?:GET|POST|PUT|DELETE) /_emulator/[^`]*)` \|", emulator_page, re.MULTILINE)
    )
    served = {route for route in emulator.routes() if "/_emulator/" in route}
    assert documented == served


def test_fault_json_example_is_accepted_and_planned(emulator: M3terEmulator) -> None:
    fault = json.loads(block_with("json", '"route"'))
    answer = requests.post(f"{emulator.url}/_emulator/faults", json=fault, timeout=5)
    assert answer.status_code == 200, answer.text
    assert (
        requests.get(f"{emulator.url}/_emulator/faults", timeout=5).json()["faults"][0]["route"]
        == fault["route"]
    )
    for code in blocks("bash"):
        for body in re.findall(r"-d '(\{.*?\})'", code, re.DOTALL):
            posted = requests.post(f"{emulator.url}/_emulator/faults", data=body, timeout=5)
            assert posted.status_code == 200, posted.text


def test_readme_names_the_ports_and_commands_that_exist() -> None:
    from m3ter_provider.testing.cli import DEFAULT_PORT

    assert f"127.0.0.1:{DEFAULT_PORT}" in README
    assert "127.0.0.1:8080" not in TEXT, "8080 is Airflow's api-server port, not the emulator's"
    assert "source .venv/bin/activate" in README
    assert os.path.exists(REPO / "scripts" / "demo") and os.path.exists(REPO / "scripts" / "test")
    assert "pip install airflow-provider-m3ter " not in TEXT, "the package is not published"
    assert len(README.splitlines()) <= 150, "the README is the first ten minutes: the rest goes to docs/"


def test_the_docs_say_what_the_forms_placeholders_and_the_submit_result_hold():
    assert "shows placeholders only for the standard fields" in (DOCS / "connection.md").read_text()
    overview = (DOCS / "operators" / "index.md").read_text()
    [row] = [
        line for line in overview.splitlines() if line.startswith("| [`M3terSubmitMeasurementsOperator`]")
    ]
    for key in ("measurements", "requests", "bytes", "rejected", "duplicates", "rejections"):
        assert key in row.split("Returns", 1)[1]
