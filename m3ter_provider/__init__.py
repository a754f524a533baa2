"""Apache Airflow provider for m3ter, the usage-based billing platform."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: the section of the Airflow 3 connection form that holds the Organization id: its own section, so
#: its title says it is required (and turns red while it is empty) without opening anything
ORGANIZATION_SECTION = "m3ter Organization (required)"

#: the connection's extra fields, in the ``conn-fields`` format Airflow 3.2+ reads (a JSON schema per
#: field: a string type without "null" and a minLength make the form mark it required and block Save).
#: Airflow 3's form shows no placeholders for extra fields, so each description carries the example.
_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "org_id": {
        "label": "Organization id",
        "schema": {"type": "string", "minLength": 1, "section": ORGANIZATION_SECTION},
        "description": "Required. The id of the m3ter Organization the Service User belongs to "
        "(every m3ter Api path starts /organizations/<Organization id>/).",
    },
    "ingest_url": {
        "label": "Ingest Api URL",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. Default: the Api URL with 'api.' swapped for 'ingest.', e.g. "
        "https://ingest.m3ter.com; the Api URL itself for a local emulator.",
    },
    "token_url": {
        "label": "Token URL",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. Default: <Api URL>/oauth/token, e.g. https://api.m3ter.com/oauth/token.",
    },
    "console_url": {
        "label": "Console URL",
        "schema": {"type": ["string", "null"]},
        "description": "Optional. Default: https://console.m3ter.com (the task's m3ter Console link).",
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"], "minimum": 1},
        "description": "Optional. Seconds to wait for m3ter to answer each request. Default: 60.",
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "minimum": 0},
        "description": "Optional. Retries of a request that failed for a passing reason (connection "
        "error, timeout, 429, 5xx), with backoff. Default: 5.",
    },
    "ingest_rate": {
        "label": "Ingest requests/s (Organization-wide)",
        "schema": {"type": ["number", "null"], "minimum": 0},
        "description": "Optional. The ingest requests per second this Airflow deployment may use for "
        "the Organization (m3ter allows 50, shared by every caller). Default: 45. 0 turns pacing off.",
    },
    "ingest_machines": {
        "label": "Machines sending ingest",
        "schema": {"type": ["integer", "null"], "minimum": 1},
        "description": "Optional. How many machines send ingest for this Organization at once; each "
        "paces at ingest_rate / ingest_machines. Celery: the worker count; Kubernetes executor: the "
        "ingest pool's slots. Default: 1.",
    },
}

_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "extra"],
    "relabeling": {"login": "Access Key id", "password": "Api Secret", "host": "Api URL"},
    "placeholders": {
        "login": "the Service User's Access Key id",
        "password": "the Service User's Api Secret",
        "host": "https://api.m3ter.com (the default when empty)",
        # shown by the Airflow 2 form only (Airflow 3's shows no placeholders for extra fields)
        "org_id": "your m3ter Organization id",
        "ingest_url": "https://ingest.m3ter.com",
        "token_url": "https://api.m3ter.com/oauth/token",
        "console_url": "https://console.m3ter.com",
        "timeout": "60",
        "max_retries": "5",
        "ingest_rate": "45",
        "ingest_machines": "1",
    },
}

#: the provider's own Airflow config options (``[m3ter]``), listed by ``airflow config list``
_CONFIG: dict[str, Any] = {
    "m3ter": {
        "description": "Options of the m3ter provider (airflow-provider-m3ter).",
        "options": {
            "token_cache_dir": {
                "description": (
                    "A directory where task processes on one worker share m3ter bearer tokens: one "
                    "private file (mode 0600, in a 0700 directory) per credential set, named by a hash, "
                    "holding only the token and its expiry, encrypted with Airflow's Fernet key when "
                    "one is configured (plain text otherwise). The first process exchanges the "
                    "credentials; the others read the file. Empty (the default): every task process "
                    "exchanges its own token."
                ),
                "version_added": "0.1.0",
                "type": "string",
                "example": "/home/airflow/.m3ter-tokens",
                "default": "",
            },
        },
    },
}


#: the ``m3ter://`` asset URI scheme (see :mod:`m3ter_provider.assets`); Airflow 3 reads
#: ``asset-uris``, Airflow 2.11 ``dataset-uris``
_ASSET_URIS: list[dict[str, Any]] = [
    {
        "schemes": ["m3ter"],
        "handler": "m3ter_provider.assets.sanitize_uri",
        "factory": "m3ter_provider.assets.create_asset",
        "to_openlineage_converter": "m3ter_provider.assets.convert_asset_to_openlineage",
    }
]


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's providers manager (``apache_airflow_provider`` entry point).

    The Providers page links the package name to ``[project.urls] Documentation`` in pyproject.toml
    (the README); the description is plain text (Airflow strips reST, which left a broken link).
    """
    return {
        "package-name": "airflow-provider-m3ter",
        "name": "m3ter",
        "description": "m3ter, the usage-based billing and pricing platform: hook, operators, sensor, "
        "trigger and a local m3ter emulator.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "m3ter",
                "external-doc-url": "https://www.m3ter.com/docs/api",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "m3ter",
                "python-modules": [
                    "m3ter_provider.operators.m3ter",
                    "m3ter_provider.operators.warehouse",
                    "m3ter_provider.operators.accounts",
                    "m3ter_provider.operators.bills",
                    "m3ter_provider.operators.statements",
                ],
            }
        ],
        "transfers": [
            {
                "source-integration-name": "Common SQL",
                "target-integration-name": "m3ter",
                "python-module": "m3ter_provider.transfers.sql_to_m3ter",
            }
        ],
        "sensors": [
            {
                "integration-name": "m3ter",
                "python-modules": ["m3ter_provider.sensors.m3ter", "m3ter_provider.sensors.events"],
            }
        ],
        "hooks": [{"integration-name": "m3ter", "python-modules": ["m3ter_provider.hooks.m3ter"]}],
        "triggers": [
            {
                "integration-name": "m3ter",
                "python-modules": ["m3ter_provider.triggers.m3ter", "m3ter_provider.triggers.events"],
            }
        ],
        "extra-links": ["m3ter_provider.links.M3terConsoleLink"],
        "config": _CONFIG,
        "asset-uris": _ASSET_URIS,
        "dataset-uris": _ASSET_URIS,
        "connection-types": [
            {
                "connection-type": "m3ter",
                "hook-class-name": "m3ter_provider.hooks.m3ter.M3terHook",
                "hook-name": "m3ter",
                "conn-fields": _CONN_FIELDS,
                "ui-field-behaviour": _UI_FIELD_BEHAVIOUR,
            }
        ],
    }
