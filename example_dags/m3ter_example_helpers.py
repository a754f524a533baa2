"""What the example DAGs share: where they write files, how often they poll, and find-or-create tasks.

Not a DAG itself. Airflow puts the DAGs folder on ``sys.path``, so the example DAGs import this module
by its name; copy it along with them.

Environment (optional): ``M3TER_DEMO_OUTPUT`` where files are downloaded, ``M3TER_DEMO_POLL_INTERVAL``
seconds between job polls.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from airflow.providers.common.compat.sdk import task

OUTPUT_DIR = os.environ.get("M3TER_DEMO_OUTPUT", os.path.join(tempfile.gettempdir(), "m3ter-examples"))
POLL_INTERVAL = float(os.environ.get("M3TER_DEMO_POLL_INTERVAL", "5"))


def find_or_create(collection: str, code: str, fields: dict[str, Any]) -> str:
    """The id of the entity of ``collection`` with this ``code``, created from ``fields`` if none exists.

    :param collection: the m3ter collection, e.g. ``"accounts"`` or ``"meters"``.
    :param code: the entity's unique code (looked up with ``codes=``).
    :param fields: the body to create it with, besides its code.
    """
    from m3ter_provider.hooks.m3ter import M3terHook

    hook = M3terHook()
    found = hook.get(collection, params={"codes": [code]})["data"]
    if found:
        return found[0]["id"]
    return hook.post(collection, json={"code": code, **fields})["id"]


def ensure_account(code: str, name: str, email: str, found: Any = None) -> Any:
    """A task ``ensure_account``: find the Account by ``code``, or create it; returns its id (XCom).

    :param found: the ids an upstream task already found (an XCom), if any: then only create when
        that list is empty.
    """

    @task(task_id="ensure_account")
    def ensure_account_task(found: list[str] | None = None) -> str:
        """Find the example Account by code, or create it; return its id."""
        if found:
            return found[0]
        return find_or_create("accounts", code, {"name": name, "emailAddress": email})

    return ensure_account_task(found)


def ensure_meter(code: str, name: str, data_fields: list[dict[str, Any]]) -> Any:
    """A task ``ensure_meter``: find the global Meter by ``code``, or create it; returns its id (XCom)."""

    @task(task_id="ensure_meter")
    def ensure_meter_task() -> str:
        """Find the example Meter by code, or create it."""
        return find_or_create("meters", code, {"name": name, "dataFields": data_fields, "derivedFields": []})

    return ensure_meter_task()
