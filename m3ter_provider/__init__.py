"""Apache Airflow provider for m3ter, the usage-based billing platform."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_CONN_FIELDS: dict[str, dict[str, Any]] = {
    "org_id": {
        "label": "Organization id",
        "schema": {"type": ["string", "null"]},
        "description": "Your m3ter Organization id (required).",
    },
    "ingest_url": {
        "label": "Ingest API URL",
        "schema": {"type": ["string", "null"]},
        "description": "Default: the API URL with 'api.' swapped for 'ingest.' (https://ingest.m3ter.com).",
    },
    "token_url": {
        "label": "Token URL",
        "schema": {"type": ["string", "null"]},
        "description": "Default: <API URL>/oauth/token.",
    },
    "console_url": {
        "label": "Console URL",
        "schema": {"type": ["string", "null"]},
        "description": "Default: https://console.m3ter.com (used for task links).",
    },
    "timeout": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 60},
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "default": 5},
    },
}

_UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port", "extra"],
    "relabeling": {"login": "Access Key id", "password": "Api Secret", "host": "API URL"},
    "placeholders": {
        "login": "Service User Access Key id",
        "password": "Service User Api Secret",
        "host": "https://api.m3ter.com",
        "org_id": "your m3ter Organization id",
        "ingest_url": "https://ingest.m3ter.com",
        "console_url": "https://console.m3ter.com",
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


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow's providers manager (``apache_airflow_provider`` entry point)."""
    return {
        "package-name": "airflow-provider-m3ter",
        "name": "m3ter",
        "description": "`m3ter <https://www.m3ter.com/>`__: usage-based billing and pricing.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "m3ter",
                "external-doc-url": "https://www.m3ter.com/docs/api",
                "tags": ["service"],
            }
        ],
        "operators": [{"integration-name": "m3ter", "python-modules": ["m3ter_provider.operators.m3ter"]}],
        "sensors": [{"integration-name": "m3ter", "python-modules": ["m3ter_provider.sensors.m3ter"]}],
        "hooks": [{"integration-name": "m3ter", "python-modules": ["m3ter_provider.hooks.m3ter"]}],
        "triggers": [{"integration-name": "m3ter", "python-modules": ["m3ter_provider.triggers.m3ter"]}],
        "extra-links": ["m3ter_provider.links.M3terConsoleLink"],
        "config": _CONFIG,
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
