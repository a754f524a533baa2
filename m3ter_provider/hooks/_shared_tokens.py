"""Wire ``[m3ter] token_cache_dir`` to the process-wide token cache (the Airflow side of the token store).

Read each time a hook builds its client, so a worker that sets ``AIRFLOW__M3TER__TOKEN_CACHE_DIR``
shares one token per credential set between all its task processes (and its triggerer). Empty,
the default, keeps tokens per process. The file store itself (``m3ter_provider.core.tokens.store``) knows
nothing of Airflow: this module hands it Airflow's Fernet key, when one is configured.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING, Any

from m3ter_provider.core.tokens.cache import TOKEN_CACHE, TokenCache

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

SECTION = "m3ter"
OPTION = "token_cache_dir"


def configured_directory() -> str:
    """``[m3ter] token_cache_dir`` (env ``AIRFLOW__M3TER__TOKEN_CACHE_DIR``), stripped; "" when unset."""
    from airflow.providers.common.compat.sdk import conf

    value = conf.get(SECTION, OPTION, fallback="") or ""
    return os.path.expanduser(value.strip()) if value.strip() else ""


def fernet_pair() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]] | None:
    """Airflow's ``encrypt``/``decrypt`` when a Fernet key is configured, else ``None``."""
    from airflow.models.crypto import get_fernet

    fernet: Any = get_fernet()
    if not getattr(fernet, "is_encrypted", False):
        return None
    return fernet.encrypt, fernet.decrypt


@functools.lru_cache(maxsize=4)
def _store(directory: str) -> Any:
    from m3ter_provider.core.tokens.store import FileTokenStore

    pair = fernet_pair()
    store = FileTokenStore(directory, encrypt=pair[0] if pair else None, decrypt=pair[1] if pair else None)
    log.info(
        "Sharing m3ter tokens between task processes through %s (%s).",
        directory,
        "Fernet-encrypted" if pair else "plain text, mode 0600: no Fernet key is configured",
    )
    return store


def share_tokens_between_processes(cache: TokenCache = TOKEN_CACHE) -> None:
    """Point ``cache`` at the configured shared store, or at none when the option is empty."""
    directory = configured_directory()
    if not directory:
        cache.set_shared_store(None)
        return
    cache.set_shared_store(_store(directory))
