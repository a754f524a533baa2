"""get_provider_info() validates against the schema shipped inside the installed Airflow."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import pathlib
import re
import subprocess
import sys

import airflow
import jsonschema
import pytest

from m3ter_provider import get_provider_info
from m3ter_provider.hooks.m3ter import M3terHook


def test_provider_info_validates_against_airflows_schema():
    schema_path = pathlib.Path(airflow.__file__).parent / "provider_info.schema.json"
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_points_at_get_provider_info():
    eps = importlib.metadata.entry_points(group="apache_airflow_provider")
    ours = [ep for ep in eps if ep.value == "m3ter_provider:get_provider_info"]
    assert len(ours) == 1
    assert ours[0].load()()["package-name"] == "airflow-provider-m3ter"


def test_every_class_named_in_provider_info_imports():
    info = get_provider_info()
    names = [c["hook-class-name"] for c in info["connection-types"]]
    names += [link for link in info.get("extra-links", [])]
    for name in names:
        module, _, attr = name.rpartition(".")
        assert getattr(importlib.import_module(module), attr)
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(section, []):
            for module in (
                entry["python-modules"] if "python-modules" in entry else entry.get("python-module", [])
            ):
                importlib.import_module(module)


def test_connection_type_declares_fields_and_behaviour():
    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == M3terHook.conn_type == "m3ter"
    assert conn["hook-name"] == M3terHook.hook_name
    assert set(conn["conn-fields"]) == {
        "org_id",
        "ingest_url",
        "token_url",
        "console_url",
        "timeout",
        "max_retries",
        "ingest_rate",
        "ingest_machines",
    }
    assert conn["ui-field-behaviour"]["relabeling"]["login"] == "Access Key id"
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "Api Secret"


def cli_json(stdout: str) -> list:
    """The JSON list a ``-o json`` command printed, after any warnings Airflow printed first."""
    start = re.search(r"^\[(\{|\])", stdout, re.MULTILINE)
    assert start, stdout[-2000:]
    return json.loads(stdout[start.start() :])


@pytest.mark.e2e
def test_airflow_cli_lists_the_provider_and_its_connection_type():
    airflow_bin = pathlib.Path(sys.executable).parent / "airflow"
    providers = subprocess.run(
        [airflow_bin, "providers", "list", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "airflow-provider-m3ter" in {p["package_name"] for p in cli_json(providers.stdout)}
    hooks = subprocess.run(
        [airflow_bin, "providers", "hooks", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = {row["connection_type"]: row for row in cli_json(hooks.stdout)}
    assert rows["m3ter"]["class"] == "m3ter_provider.hooks.m3ter.M3terHook"
    assert rows["m3ter"]["conn_id_attribute_name"] == "m3ter_conn_id"


def test_legacy_form_methods_for_airflow_before_3_2():
    """Airflow 2.11's form reads these methods: the same labels and help as Airflow 3's conn-fields."""
    pytest.importorskip("wtforms")
    from wtforms import IntegerField, StringField

    widgets = M3terHook.get_connection_form_widgets()
    assert list(widgets) == [
        "org_id",
        "ingest_url",
        "token_url",
        "console_url",
        "timeout",
        "max_retries",
        "ingest_rate",
        "ingest_machines",
    ]
    labels = {name: field.args[0] for name, field in widgets.items()}
    assert labels == {
        "org_id": "Organization id (required)",
        "ingest_url": "Ingest Api URL",
        "token_url": "Token URL",
        "console_url": "Console URL",
        "timeout": "Request timeout (seconds)",
        "max_retries": "Max retries",
        "ingest_rate": "Ingest requests/s (Organization-wide)",
        "ingest_machines": "Machines sending ingest",
    }
    # Airflow 2 registers a hook's widgets only when every one is a String/Password/Integer/Boolean field
    assert {field.field_class for field in widgets.values()} == {StringField, IntegerField}
    assert widgets["timeout"].field_class is IntegerField
    for name, field in widgets.items():
        assert field.kwargs["description"], f"{name} has no help text"
    assert "Default: 60" in widgets["timeout"].kwargs["description"]
    assert "Default: 5" in widgets["max_retries"].kwargs["description"]
    behaviour = M3terHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"login": "Access Key id", "password": "Api Secret", "host": "Api URL"}
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "extra"}
    for name in ("login", "password", "host", "org_id", "ingest_url", "console_url"):
        assert behaviour["placeholders"][name], name


def test_conn_fields_make_the_organization_id_required_in_airflow_3s_form():
    """Airflow 3's form marks a field required (and blocks Save) when its type excludes null."""
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    org = fields["org_id"]
    assert org["schema"]["type"] == "string" and org["schema"]["minLength"] >= 1
    assert org["schema"]["section"], "the Organization id has its own, named section of the form"
    assert next(iter(fields)) == "org_id", "its section comes first, right under the standard fields"
    for name, field in fields.items():
        if name != "org_id":
            assert "null" in field["schema"]["type"], f"{name} must stay optional"
            assert "section" not in field["schema"]
        assert field["description"], f"{name} has no help text"
        # m3ter's words: "Access Key id", "Api Secret"; the rest follows ("Api URL", not "API URL")
        assert "API" not in field["label"] + field["description"], field
    # the 3.x form shows no placeholders for extra fields: the examples are in the help text
    assert "https://ingest.m3ter.com" in fields["ingest_url"]["description"]
    assert "https://console.m3ter.com" in fields["console_url"]["description"]


def test_providers_page_description_and_documentation_link():
    """Airflow strips reST from the description (it broke a link); the Providers page links Documentation."""
    description = get_provider_info()["description"]
    assert not re.search(r"[`<>_]|https?://", description), description
    urls = dict(
        entry.split(", ", 1)
        for entry in importlib.metadata.metadata("airflow-provider-m3ter").get_all("Project-URL") or []
    )
    assert set(urls) >= {"Documentation", "Source", "Changelog"}, urls
    assert urls["Documentation"].startswith("https://"), urls
    assert importlib.metadata.metadata("airflow-provider-m3ter")["License-Expression"] == "Apache-2.0"
