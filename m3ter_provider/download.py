"""Stream a presigned m3ter download URL to a local path or an ``ObjectStoragePath`` (no Airflow import).

The presigned URL carries its own authorisation: the bearer token is never sent to its host.
"""

from __future__ import annotations

import logging
import os
import pathlib
from collections.abc import Callable
from typing import Any

import requests

from m3ter_provider.client import M3terClient, url_path
from m3ter_provider.errors import M3terAPIError, M3terConfigError, M3terTransportError

log = logging.getLogger(__name__)


def download(client: M3terClient, url: str, destination: Any, *, chunk_size: int = 1 << 20) -> dict[str, Any]:
    """Stream a presigned URL to ``destination`` (a local path or an ``ObjectStoragePath``).

    The presigned URL carries its own authorisation: the bearer token is never sent to it,
    and the file is never held in memory whole.

    :return: ``{"destination": str, "bytes": n}``.
    """
    target = _open_for_write(destination)
    plain = requests.Session()
    plain.headers["User-Agent"] = client.user_agent
    written = 0
    try:
        response = client.send_with_retries(
            "GET",
            url,
            lambda: plain.get(url, stream=True, timeout=client.timeout, allow_redirects=True),
            retry_unprocessed_only=False,
        )
        if not response.ok:
            response.close()
            raise M3terAPIError(
                "the download failed",
                method="GET",
                path=url_path(url),
                status=response.status_code,
                hint="Presigned m3ter download URLs expire after 15 minutes: fetch a new one.",
            )
        try:
            with response, target() as handle:
                for chunk in response.iter_content(chunk_size):
                    handle.write(chunk)
                    written += len(chunk)
        except requests.RequestException as exc:
            raise M3terTransportError(
                f"the download broke off after {written:,} bytes ({type(exc).__name__})",
                method="GET",
                path=url_path(url),
                hint="Run the task again: it fetches a fresh download URL.",
            ) from None
    finally:
        plain.close()
    log.info("Downloaded %s bytes to %s.", f"{written:,}", destination)
    return {"destination": str(destination), "bytes": written}


def _open_for_write(destination: Any) -> Callable[[], Any]:
    """A zero-argument opener for a local path or ``ObjectStoragePath`` (local parents created)."""
    if isinstance(destination, (str, os.PathLike)) and not hasattr(destination, "fs"):
        path = pathlib.Path(destination)

        def opener() -> Any:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("wb")

        return opener
    if hasattr(destination, "open"):

        def open_object() -> Any:
            if getattr(destination, "protocol", None) in ("file", "local"):  # a local ObjectStoragePath
                destination.parent.mkdir(parents=True, exist_ok=True)
            return destination.open("wb")

        return open_object
    raise M3terConfigError(f"destination {destination!r}: give a local path or an ObjectStoragePath.")
