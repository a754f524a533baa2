"""Stream a presigned m3ter download URL to a local path or an ``ObjectStoragePath`` (no Airflow import).

The presigned URL carries its own authorisation: the bearer token is never sent to its host, and
its query string (the signature) never reaches a log line or an error.

Downloads are atomic: the file is written under a temporary name beside the destination (same
folder, or same bucket and prefix) and renamed onto it only when complete. A download that breaks
off leaves the previous file untouched and no temporary file behind. Locally the rename is atomic
(``os.replace``); on an object store it is the store's move (a copy, then a delete of the
temporary object): the destination is replaced whole, never by a partial object, though not in a
single atomic step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import uuid
from typing import TYPE_CHECKING, Any, Protocol, Union, cast

import requests

from m3ter_provider.core._text import plural
from m3ter_provider.core.retry import Failure
from m3ter_provider.core.transport import TRANSPORT_EXCEPTIONS, classify, redact_url, url_path
from m3ter_provider.errors import (
    M3terAPIError,
    M3terConfigError,
    M3terDestinationError,
    M3terTransportError,
)

if TYPE_CHECKING:
    from m3ter_provider.core.client import M3terClient

log = logging.getLogger(__name__)


class StoragePath(Protocol):
    """What a download needs of an object-store destination (Airflow's ``ObjectStoragePath``)."""

    @property
    def name(self) -> str:
        """The last path component."""
        ...

    def with_name(self, name: str) -> Any:
        """A sibling path (the temporary object)."""
        ...

    def open(self, mode: str = "r") -> Any:
        """A file object."""
        ...

    def rename(self, target: Any) -> Any:
        """Move onto ``target``."""
        ...


#: where a download may go: a local path, or an object-store path
Destination = Union[str, "os.PathLike[str]", StoragePath]


def download(
    client: M3terClient, url: str, destination: Destination, *, chunk_size: int = 1 << 20
) -> dict[str, Any]:
    """Stream a presigned URL to ``destination`` (a local path or an ``ObjectStoragePath``).

    The presigned URL carries its own authorisation: the bearer token is never sent to it,
    and the file is never held in memory whole. A download that breaks off is started again
    (a GET is safe to repeat) under the client's retry policy.

    :return: ``{"destination": str, "bytes": n}``.
    :raises M3terTransportError: the download kept breaking off (the message gives the bytes the
        last attempt received); the destination is left as it was.
    """
    target = _Target(destination)
    plain = requests.Session()
    plain.headers["User-Agent"] = client.user_agent
    attempt = 0
    try:
        while True:
            try:
                received = _fetch(client, plain, url, target, chunk_size)
                break
            except _BrokenOff as broken:
                target.discard()
                if not client.policy.retry_failure(Failure.NO_ANSWER, attempt, idempotent=True):
                    raise M3terTransportError(
                        f"the download broke off after {broken.received:,}{broken.of} bytes "
                        f"({broken.reason})",
                        method="GET",
                        path=url_path(url),
                        attempts=attempt + 1,
                        hint="The destination was left as it was. Run the task again: it fetches a fresh "
                        "download URL.",
                    ) from None
                delay = client.policy.delay(attempt)
                log.warning(
                    "GET %s: the download broke off after %s bytes (%s); retry %d of %d in %.1f s.",
                    url_path(url),
                    f"{broken.received:,}",
                    broken.reason,
                    attempt + 1,
                    client.policy.max_retries,
                    delay,
                )
                client.sleep(delay)
                attempt += 1
    except OSError as exc:  # writing the destination failed (network errors are M3terErrors by now)
        target.discard()
        raise M3terDestinationError(
            f"Could not write the download to {redact_url(str(destination))} "
            f"({type(exc).__name__}: {exc.strerror or exc}); "
            "the destination was left as it was."
        ) from None
    except BaseException:
        target.discard()
        raise
    finally:
        plain.close()
    log.info("Downloaded %s to %s.", plural(received, "byte"), redact_url(str(destination)))
    # the result goes to XCom: a destination given as a presigned URL keeps its signature out of it
    # what the caller gave (an ObjectStoragePath keeps its conn id, which the next task needs), but
    # never a query string: that could be a signature
    where = str(destination)
    return {"destination": redact_url(where) if "?" in where else where, "bytes": received}


class _BrokenOff(Exception):
    def __init__(self, received: int, expected: str | None, reason: str) -> None:
        super().__init__(reason)
        self.received = received
        self.of = f" of {int(expected):,}" if expected and expected.isdigit() else ""
        self.reason = reason


def _fetch(client: M3terClient, plain: requests.Session, url: str, target: _Target, chunk_size: int) -> int:
    """One attempt: GET (retried as the policy says), stream into the temporary file, rename it onto
    the destination. Return the bytes written; raise :class:`_BrokenOff` if the body broke off."""
    answer = client.transport.call(
        "GET",
        url,
        lambda: plain.get(url, stream=True, timeout=client.timeout, allow_redirects=True),
        idempotent=True,
        json_body=False,
    )
    response = answer.response
    if not 200 <= response.status_code < 300:
        response.close()
        raise M3terAPIError(
            "the download failed",
            method="GET",
            path=url_path(url),
            status=response.status_code,
            attempts=answer.attempts,
            hint="Presigned m3ter download URLs expire after 15 minutes: fetch a new one.",
        )
    received = 0
    with response, target.open_temporary() as handle:
        chunks = response.iter_content(chunk_size)
        while True:
            try:
                chunk = next(chunks, None)
            except TRANSPORT_EXCEPTIONS as exc:
                # urllib3 drops a short last read's bytes: count what came off the wire
                received = max(received, _raw_bytes(response))
                raise _BrokenOff(received, response.headers.get("Content-Length"), classify(exc)[1]) from None
            if chunk is None:
                break
            received += len(chunk)
            handle.write(chunk)
    target.commit()
    return received


def _raw_bytes(response: requests.Response) -> int:
    """Bytes urllib3 read off the connection for ``response`` (0 when it cannot say)."""
    try:
        return int(response.raw.tell())
    except Exception:
        return 0


class _Target:
    """A destination written under a temporary name beside it, then renamed onto it."""

    def __init__(self, destination: Destination) -> None:
        #: an object-store destination is duck-typed (see :class:`StoragePath`)
        self.destination: Any = cast("Any", destination)
        self.local = isinstance(destination, (str, os.PathLike)) and not hasattr(destination, "fs")
        if not self.local and not hasattr(destination, "open"):
            raise M3terConfigError(f"destination {destination!r}: give a local path or an ObjectStoragePath.")
        name = pathlib.PurePath(str(destination)).name if self.local else self.destination.name
        temporary_name = f".{name}.{uuid.uuid4().hex[:12]}.part"
        if self.local:
            self.path = pathlib.Path(str(destination))
            self.temporary: Any = self.path.with_name(temporary_name)
        else:
            self.temporary = self.destination.with_name(temporary_name)
        self.opened = False

    def open_temporary(self) -> Any:
        """Open the temporary file for writing (a local destination's folder is created first)."""
        if self.local:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif getattr(self.destination, "protocol", None) in ("file", "local"):  # a local ObjectStoragePath
            self.destination.parent.mkdir(parents=True, exist_ok=True)
        self.opened = True
        return self.temporary.open("wb")

    def commit(self) -> None:
        """Put the complete file in place of the destination."""
        if self.local:
            os.replace(self.temporary, self.path)
        else:
            self.temporary.rename(self.destination)
        self.opened = False

    def discard(self) -> None:
        """Remove the temporary file, if one was started (the destination is not touched)."""
        if self.opened:
            with contextlib.suppress(Exception):
                self.temporary.unlink()
            self.opened = False
