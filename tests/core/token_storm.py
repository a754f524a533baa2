"""A child process of the token-storm tests (imported by name under the spawn start method)."""

from __future__ import annotations

import hashlib
from typing import Any


def settings_from(conn: dict[str, Any]) -> Any:
    """The connection settings of an emulator's ``airflow_conn_json()``."""
    from m3ter_provider.core.config import M3terSettings

    return M3terSettings.from_connection_fields(
        "m3ter_default",
        login=conn["login"],
        password=conn["password"],
        host=conn["host"],
        extra=conn["extra"],
    )


def call_m3ter(conn: dict[str, Any], directory: str | None, barrier: Any, results: Any) -> None:
    """Wait for the others, make one API call through a fresh client, report the token's digest."""
    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.tokens.cache import TOKEN_CACHE
    from m3ter_provider.core.tokens.store import FileTokenStore

    if directory is not None:
        TOKEN_CACHE.set_shared_store(FileTokenStore(directory))
    client = M3terClient(settings_from(conn))
    barrier.wait(timeout=120)
    try:
        client.request("GET", "organizationconfig")
        results.put(("ok", hashlib.sha256(client.get_token().encode()).hexdigest(), client.token_exchanges))
    except Exception as exc:  # reported to the parent
        results.put(("error", f"{type(exc).__name__}: {exc}", 0))
