"""The m3ter connection form in the real Airflow UI, driven by headless Chromium (``-m browser``).

Starts a real ``airflow api-server`` on 127.0.0.1 (a throwaway AIRFLOW_HOME, the simple auth manager
with everyone an admin, ``[core] test_connection = Enabled``) and the m3ter emulator, then does what a
person does: Add Connection, pick m3ter, read the labels, find Save blocked until the Organization id
is filled, save, and press the row's Test icon. Airflow 3.3.2's UI sends ``port: 0`` with that Test
(fixed upstream by apache/airflow PR #73298), which the API answers "Bad Request"; the test then sends
the request the fixed UI sends (the same body, ``port: null``) so the message shown is the hook's.

Screenshots go to a folder the test prints. Needs Airflow 3.2+ (the ``conn-fields`` form), Playwright's
Python client (the ``browser`` extra) and Debian's ``chromium``; .ci/run installs both and sets
``M3TER_REQUIRE_BROWSER=1`` so that a missing piece fails the step instead of skipping it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import requests
from packaging.version import Version

from m3ter_provider.testing import M3terEmulator

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("M3TER_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("M3TER_REQUIRE_BROWSER") == "1"
CONN_ID = "m3ter_ui"
WRONG_SECRET = "not-the-secret-3141"


def _airflow_version() -> Version:
    import importlib.metadata

    return Version(importlib.metadata.version("apache-airflow"))


def _missing() -> str | None:
    if _airflow_version() < Version("3.2"):
        return "the conn-fields form is Airflow 3.2+; Airflow 2.11 is checked by test_legacy_form_methods"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python client is missing: pip install -e '.[browser]'"
    if not pathlib.Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM}: apt-get install -y chromium"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def screenshots() -> pathlib.Path:
    folder = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-browser-screenshots-"))
    return folder


@pytest.fixture(scope="module")
def emulator() -> Iterator[M3terEmulator]:
    with M3terEmulator() as emu:
        yield emu


@pytest.fixture(scope="module")
def api_server() -> Iterator[str]:
    """A real ``airflow api-server`` on a free loopback port, with this provider installed."""
    missing = _missing()
    if missing:
        if REQUIRED and _airflow_version() >= Version("3.2"):
            pytest.fail(missing)
        pytest.skip(missing)
    home = pathlib.Path(tempfile.mkdtemp(prefix="m3ter-browser-airflow-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "M3TER_"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__AUTH_MANAGER=(
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{port}",
    )
    airflow = str(pathlib.Path(sys.executable).parent / "airflow")
    migrate = subprocess.run(
        [airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
    log = (home / "api-server.log").open("w")
    server = subprocess.Popen(
        [airflow, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            assert server.poll() is None, (home / "api-server.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "api-server did not answer within 300 s"
            time.sleep(1)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def page(api_server: str) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 1100}, base_url=api_server)
        context.set_default_timeout(90_000)  # a busy 2-core machine renders slowly
        page = context.new_page()
        yield page
        context.close()
        browser.close()


def _test_from_the_row(page, shots: pathlib.Path, name: str) -> tuple[dict, str]:
    """Press the row's Test icon; answer what the API said and the message the UI showed.

    Airflow 3.3.2's UI sends ``port: 0`` for a connection without a port, which the API refuses
    ("Bad Request": the port differs from the stored one). The route below sends the request the
    fixed UI sends (apache/airflow PR #73298): the same body with ``port: null``.
    """
    sent: list[dict] = []

    def fix_port(route, request) -> None:
        body = json.loads(request.post_data or "{}")
        sent.append(dict(body))
        if body.get("port") == 0:
            body["port"] = None
        route.continue_(post_data=json.dumps(body))

    page.route("**/api/v2/connections/test", fix_port)
    try:
        with page.expect_response("**/api/v2/connections/test") as answer:
            page.get_by_role("row", name=re.compile(CONN_ID)).get_by_role(
                "button", name="Test Connection"
            ).click()
        response = answer.value
        result = response.json()
        # the toast the UI shows for this answer (an earlier "created" or "test" toast may linger)
        toast = page.locator("[data-scope='toast'][data-part='root']").filter(
            has_text=str(result.get("message", ""))[:40]
        )
        toast.last.wait_for()
        page.wait_for_timeout(700)  # the toast's fade-in, so the screenshot shows it as a person sees it
        page.screenshot(path=shots / f"{name}.png")
        shown = toast.last.inner_text()
    finally:
        page.unroute("**/api/v2/connections/test")
    assert sent and sent[0]["connection_id"] == CONN_ID, sent
    assert sent[0]["password"] != WRONG_SECRET, "the UI sends the masked secret, not the secret"
    assert response.status == 200, result
    return result, shown


def _project_urls() -> dict[str, str]:
    import importlib.metadata

    entries = importlib.metadata.metadata("airflow-provider-m3ter").get_all("Project-URL") or []
    return dict(entry.split(", ", 1) for entry in entries)


def _is_create(response) -> bool:
    return response.url.endswith("/api/v2/connections") and response.request.method == "POST"


def test_add_an_m3ter_connection_in_the_ui_and_test_it(
    page, emulator: M3terEmulator, screenshots: pathlib.Path, capsys
) -> None:
    with capsys.disabled():
        print(f"\n[browser] screenshots: {screenshots}", flush=True)

    # the Providers page: a plain description, and the package linked to the README
    with page.expect_response(lambda r: "/api/v2/providers" in r.url) as listed:
        page.goto("/providers")
    ours = next(p for p in listed.value.json()["providers"] if p["package_name"] == "airflow-provider-m3ter")
    assert ours["description"].startswith("m3ter, the usage-based billing"), ours
    assert ours["documentation_url"] == _project_urls()["Documentation"], ours
    page.get_by_text("airflow-provider-m3ter").wait_for()
    page.screenshot(path=screenshots / "0-providers-page.png", full_page=True)

    page.goto("/connections")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    type_select = dialog.get_by_role("combobox")
    type_select.click()
    type_select.fill("m3ter")
    page.keyboard.press("Enter")
    dialog.get_by_label("Access Key id").wait_for()
    page.screenshot(path=screenshots / "1-add-connection-m3ter.png", full_page=True)

    # the labels a person reads: m3ter's words for the credentials, the same style for the rest
    for label in ("Api URL", "Access Key id", "Api Secret"):
        assert dialog.get_by_label(label, exact=True).count() == 1, label
    assert dialog.get_by_label("Api URL").get_attribute("placeholder").startswith("https://api.m3ter.com")
    org_section = dialog.get_by_role("button", name="m3ter Organization (required)")
    assert org_section.is_visible(), "the Organization id has its own section under the standard fields"

    # Save stays blocked until the Organization id is given
    dialog.get_by_label("Connection ID").fill(CONN_ID)
    dialog.get_by_label("Api URL").fill(emulator.url)
    dialog.get_by_label("Access Key id").fill(emulator.access_key_id)
    dialog.get_by_label("Api Secret").fill(emulator.api_secret)
    save = dialog.get_by_role("button", name="Save")
    assert save.is_disabled(), "Save must be blocked without an Organization id"
    org_section.click()
    org_id = dialog.locator("#element_org_id")
    org_id.wait_for()
    page.screenshot(path=screenshots / "2-organization-id-empty-save-blocked.png", full_page=True)
    assert "Organization id" in dialog.inner_text()
    assert save.is_disabled()
    org_id.fill(emulator.org_id)
    dialog.get_by_role("button", name="Extra Fields", exact=True).click()
    for label in ("Ingest Api URL", "Token URL", "Console URL", "Request timeout (seconds)", "Max retries"):
        assert label in dialog.inner_text(), label
    for help_text in ("Seconds to wait for m3ter", "Retries of a request", "https://ingest.m3ter.com"):
        assert help_text in dialog.inner_text(), help_text
    page.screenshot(path=screenshots / "3-filled-for-the-emulator.png", full_page=True)
    assert save.is_enabled()
    with page.expect_response(_is_create) as made:
        save.click()
    assert made.value.status == 201, made.value.text()
    saved = made.value.json()
    assert json.loads(saved["extra"])["org_id"] == emulator.org_id
    assert saved["host"] == emulator.url
    page.get_by_role("row", name=re.compile(CONN_ID)).wait_for()

    # Test: the hook exchanges the credentials against the emulator and reads the Organization
    exchanges = emulator.stats()["token_exchanges"]
    result, shown = _test_from_the_row(page, screenshots, "4-test-succeeded")
    assert result["status"] is True, result
    assert emulator.org_id in result["message"] and "Connected to m3ter" in result["message"]
    assert "Connected to m3ter" in shown
    assert emulator.stats()["token_exchanges"] == exchanges + 1

    # a wrong Api Secret: the message names the token exchange, and neither the secret nor a random id
    page.get_by_role("row", name=re.compile(CONN_ID)).get_by_role("button", name="Edit Connection").click()
    dialog = page.get_by_role("dialog")
    secret = dialog.get_by_label("Api Secret")
    secret.fill(WRONG_SECRET)
    with page.expect_response(lambda r: f"/api/v2/connections/{CONN_ID}" in r.url) as edited:
        dialog.get_by_role("button", name="Save").click()
    assert edited.value.status == 200, edited.value.text()
    refused = emulator.stats()["token_failures"]
    result, shown = _test_from_the_row(page, screenshots, "5-test-wrong-secret")
    assert result["status"] is False, result
    message = result["message"]
    assert "token exchange" in message.lower(), message
    assert WRONG_SECRET not in message and WRONG_SECRET not in shown
    assert emulator.api_secret not in message
    assert "token exchange" in shown.lower(), shown
    assert emulator.stats()["token_failures"] == refused + 1
    # Airflow tests under a random connection id the user never chose: the message must not show it
    named = set(re.findall(r"connection '([^']*)'", message))
    assert named <= {CONN_ID}, f"the message names a connection id the user never chose: {message}"
