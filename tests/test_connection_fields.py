"""The connection's fields have one source of truth: ``_CONN_FIELDS`` in ``m3ter_provider/__init__.py``.

The form schema (``_CONN_FIELDS``, which the Airflow 2 form is built from as well), the form's
placeholders, the extras ``core/config.py`` reads and the table in ``docs/connection.md`` must name the
same fields; the placeholders and the docs must state the defaults the code applies.
"""

from __future__ import annotations

import pathlib
import re

import pytest

from m3ter_provider import _CONN_FIELDS, _UI_FIELD_BEHAVIOUR
from m3ter_provider.core import config
from m3ter_provider.core.config import M3terSettings

REPO = pathlib.Path(__file__).resolve().parent.parent
STANDARD = {"login", "password", "host"}
EXTRAS = set(_CONN_FIELDS)
PLACEHOLDERS = _UI_FIELD_BEHAVIOUR["placeholders"]
DOCS_TABLE = (REPO / "docs" / "connection.md").read_text(encoding="utf-8")


def _settings(**extra: object) -> M3terSettings:
    return M3terSettings.from_connection_fields(
        "m3ter_default", login="key", password="secret", host=None, extra={"org_id": "org", **extra}
    )


def _docs_rows() -> dict[str, str]:
    """``docs/connection.md``'s table: field name (``org_id``, ``login``...) to the row's text."""
    rows = {}
    for line in DOCS_TABLE.splitlines():
        match = re.match(r"^\| (?:extra )?`(\w+)` \| (.*) \|$", line)
        if match:
            rows[match[1]] = match[2]
    return rows


def test_the_placeholders_name_the_standard_fields_and_every_extra():
    assert set(PLACEHOLDERS) == STANDARD | EXTRAS
    assert set(_UI_FIELD_BEHAVIOUR["relabeling"]) == STANDARD


def test_config_reads_exactly_the_extras_of_the_form():
    source = pathlib.Path(config.__file__).read_text(encoding="utf-8")
    read = set(re.findall(r'get_extra\("(\w+)"\)', source))
    assert read == EXTRAS, "core/config.py and _CONN_FIELDS disagree on the connection's extras"


def test_the_docs_table_lists_every_field():
    assert set(_docs_rows()) == STANDARD | EXTRAS


def test_placeholders_show_the_defaults_the_code_applies():
    """Every optional extra's placeholder is its default (on production m3ter), as config derives it."""
    defaults = _settings()
    assert defaults.ingest_url == PLACEHOLDERS["ingest_url"]
    assert defaults.token_url == PLACEHOLDERS["token_url"]
    assert defaults.console_url == PLACEHOLDERS["console_url"]
    assert defaults.timeout == float(PLACEHOLDERS["timeout"])
    assert defaults.max_retries == int(PLACEHOLDERS["max_retries"])
    assert defaults.ingest_rate == float(PLACEHOLDERS["ingest_rate"])
    assert defaults.ingest_machines == int(PLACEHOLDERS["ingest_machines"])
    assert PLACEHOLDERS["host"].startswith(defaults.api_url + " ")


@pytest.mark.parametrize("name", sorted(EXTRAS - {"org_id"}))
def test_each_optional_extra_says_optional_and_its_default_in_form_and_docs(name):
    description = _CONN_FIELDS[name]["description"]
    row = _docs_rows()[name]
    assert description.startswith("Optional."), description
    assert "optional" in row
    assert "null" in _CONN_FIELDS[name]["schema"]["type"]
    default = {
        "ingest_url": "https://ingest.m3ter.com",
        "token_url": "/oauth/token",
        "console_url": config.DEFAULT_CONSOLE_URL,
        "timeout": f"{config.DEFAULT_TIMEOUT:g}",
        "max_retries": str(config.DEFAULT_MAX_RETRIES),
        "ingest_rate": f"{config.DEFAULT_INGEST_RATE:g}",
        "ingest_machines": str(config.DEFAULT_INGEST_MACHINES),
    }[name]
    assert default in description, f"the form's help for {name} does not give its default {default}"
    assert default in row, f"docs/connection.md's row for {name} does not give its default {default}"


def test_the_organization_id_is_required_in_form_config_and_docs():
    schema = _CONN_FIELDS["org_id"]["schema"]
    assert schema["type"] == "string" and schema["minLength"] == 1
    assert "required" in _docs_rows()["org_id"]
    with pytest.raises(config.M3terConfigError, match="org_id"):
        M3terSettings.from_connection_fields("c", login="key", password="secret", host=None, extra={})


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_each_extra_takes_effect_under_its_name_and_the_legacy_prefix(name):
    value = {
        "org_id": "another-org",
        "ingest_url": "https://ingest.example.com",
        "token_url": "https://auth.example.com/oauth/token",
        "console_url": "https://console.example.com",
        "timeout": "7",
        "max_retries": "2",
        "ingest_rate": "12.5",
        "ingest_machines": "3",
    }[name]
    plain = _settings(**{name: value}) if name != "org_id" else _settings(org_id=value)
    legacy = M3terSettings.from_connection_fields(
        "m3ter_default",
        login="key",
        password="secret",
        host=None,
        extra={"org_id": "org", config.EXTRA_PREFIX + name: value}
        if name != "org_id"
        else {config.EXTRA_PREFIX + "org_id": value},
    )
    for settings in (plain, legacy):
        got = getattr(settings, name)
        assert str(got) == value or got == float(value), (name, got)
