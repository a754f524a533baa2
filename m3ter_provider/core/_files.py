"""Small files several processes on one machine share: an ``flock``-ed lock file and atomic replacement.

Used by the worker token store (``core/tokens/store.py``) and the machine's ingest pacing bucket
(``core/pacing.py``). POSIX only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: a lock file is created 0600 and never followed through a symlink put in its place
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW


@contextlib.contextmanager
def flocked(path: str, recreate_directory: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if absent). A directory removed meanwhile (a
    tmp cleaner) is made again with ``recreate_directory``. The kernel releases the lock of a process
    that dies holding it."""
    import fcntl

    try:
        fd = os.open(path, _LOCK_FLAGS, 0o600)
    except FileNotFoundError:
        recreate_directory()
        fd = os.open(path, _LOCK_FLAGS, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def replace_atomically(
    path: str, raw: bytes, *, suffix: str, recreate_directory: Callable[[], None], fsync: bool = False
) -> None:
    """Write ``raw`` to a temporary file (mode 0600) beside ``path``, then rename it over ``path``:
    a reader sees the old content or the new, never half of it."""
    directory = os.path.dirname(path) or "."
    try:
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    except FileNotFoundError:  # removed since the lock was taken
        recreate_directory()
        fd, temp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
