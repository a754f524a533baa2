"""A bearer-token store shared by the task processes of one worker: one private file per credential set.

Opt-in (``[m3ter] token_cache_dir``): without it every task process exchanges its own token. With
it, the first process that needs a token exchanges the credentials and saves the token; the others
on the same machine read it. The store keeps, per credential set:

- ``<store key>.token``: the token and its wall-clock expiry, nothing else (no key id, no secret;
  the name is a hash). Encrypted when the caller passes an ``encrypt``/``decrypt`` pair (the hook
  passes Airflow's Fernet key); without one the token is in plain text, readable only by the owner.
- ``<store key>.lock``: an empty file ``fcntl.flock`` locks, so one process exchanges at a time.

Files are mode 0600 in a 0700 directory, written atomically (a temp file, then ``os.replace``).
Framework-free: no Airflow import. POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import stat
import time
from typing import TYPE_CHECKING

from m3ter_provider.core._files import flocked, replace_atomically
from m3ter_provider.errors import M3terConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: store keys are hex digests (``Credentials.store_key``): nothing else can name a file here
_KEY = re.compile(r"^[0-9a-f]{16,128}$")
_FORMAT = 1


class FileTokenStore:
    """Share bearer tokens between processes through private files in ``directory``.

    Implements :class:`m3ter_provider.core.tokens.cache.SharedTokenStore`.

    :param directory: where the files live. Created with mode 0700 if missing. An existing directory
        the current user owns but others can read or enter is narrowed to 0700 (with a warning);
        one owned by another user is refused.
    :param encrypt: turns the file's plain bytes into what is written (e.g. ``Fernet.encrypt``).
    :param decrypt: the reverse (e.g. ``Fernet.decrypt``); a file it cannot read counts as empty.
    :param clock: wall-clock seconds (``time.time``), replaceable in tests.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        encrypt: Callable[[bytes], bytes] | None = None,
        decrypt: Callable[[bytes], bytes] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (encrypt is None) != (decrypt is None):
            raise ValueError("give both encrypt and decrypt, or neither")
        self.directory = os.path.abspath(os.fspath(directory))
        self.encrypted = encrypt is not None
        self._encrypt = encrypt or (lambda raw: raw)
        self._decrypt = decrypt or (lambda raw: raw)
        self.clock = clock
        self._prepare_directory()

    def __repr__(self) -> str:
        return f"FileTokenStore({self.directory!r}, encrypted={self.encrypted})"

    # ---------------------------------------------------------------- the protocol
    def fetch(
        self, key: str, exchange: Callable[[], tuple[str, float]], *, valid_until: float
    ) -> tuple[str, float]:
        """Return ``(token, wall-clock expiry)``: a saved token still valid at ``valid_until``, or else
        the result of ``exchange()``, run under the lock after re-checking the file, and saved.

        A token another process saved while this one waited for the lock is taken as long as it
        has not expired: it is as fresh as an exchange now would give, so 20 processes starting at
        once make one exchange, whatever the tokens' lifetime.
        """
        path = self._path(key, ".token")
        saved, before = self._read(path)
        if saved is not None and saved[1] > valid_until:
            return saved
        with self._locked(key):
            saved, after = self._read(path)
            if saved is not None:
                written_meanwhile = after is not None and after != before
                if saved[1] > valid_until or (written_meanwhile and saved[1] > self.clock()):
                    return saved
            value, expires_at = exchange()
            self._write(path, value, expires_at)
            return value, expires_at

    def discard(self, key: str, value: str) -> None:
        """Delete the saved token if it is ``value`` (m3ter refused it); keep a newer one."""
        path = self._path(key, ".token")
        if not os.path.isdir(self.directory):
            log.info(
                "The shared m3ter token store %s is gone: no refused token left to drop.", self.directory
            )
            return
        with self._locked(key):
            saved, _ = self._read(path)
            if saved is not None and saved[0] == value:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                log.info("Dropped a refused m3ter token from the shared token store %s.", self.directory)

    # ---------------------------------------------------------------- files
    def _prepare_directory(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        info = os.lstat(self.directory)
        if not stat.S_ISDIR(info.st_mode):
            raise M3terConfigError(
                f"[m3ter] token_cache_dir {self.directory!r} is not a directory (a symlink or a file): "
                "point it at a directory only the Airflow user can use."
            )
        if info.st_uid != os.geteuid():
            raise M3terConfigError(
                f"[m3ter] token_cache_dir {self.directory!r} belongs to another user (uid {info.st_uid}): "
                "the token files must be private to the user running Airflow; give a directory it owns."
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            os.chmod(self.directory, 0o700)
            log.warning(
                "[m3ter] token_cache_dir %s had mode %o (others could read or enter it); "
                "narrowed it to 0700.",
                self.directory,
                mode,
            )

    def _path(self, key: str, suffix: str) -> str:
        if not _KEY.match(key):
            raise ValueError("a token store key must be a lower-case hex digest (Credentials.store_key)")
        return os.path.join(self.directory, key + suffix)

    def _locked(self, key: str) -> contextlib.AbstractContextManager[None]:
        return flocked(self._path(key, ".lock"), self._recreate_directory)

    def _recreate_directory(self) -> None:
        log.warning("The shared m3ter token store %s disappeared; making it again.", self.directory)
        self._prepare_directory()

    def _read(self, path: str) -> tuple[tuple[str, float] | None, tuple[int, int] | None]:
        """``((token, expiry) or None, the file's identity or None)``; unreadable content is ``None``.

        A file that vanished reads as none; one replaced by something that is not a regular file
        (a directory, a symlink, a FIFO) is ignored with a warning.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None, None
        except OSError as exc:  # a symlink put in its place (O_NOFOLLOW), no permission...
            log.warning("Ignoring the m3ter token file in %s (%s).", self.directory, exc.strerror or exc)
            return None, None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                log.warning("Ignoring the m3ter token file in %s: not a regular file.", self.directory)
                return None, None
            raw = handle.read()
        identity = (info.st_ino, info.st_mtime_ns)
        try:
            data = json.loads(self._decrypt(raw))
            token, expires_at = data["token"], float(data["expires_at"])
        except Exception:
            # another Fernet key, a plain file now that a key is set, or a damaged file: exchange anew
            log.warning("Ignoring an unreadable m3ter token file in %s.", self.directory)
            return None, identity
        if not isinstance(token, str) or not token:
            return None, identity
        return (token, expires_at), identity

    def _write(self, path: str, value: str, expires_at: float) -> None:
        raw = json.dumps({"format": _FORMAT, "token": value, "expires_at": expires_at}).encode()
        replace_atomically(
            path, self._encrypt(raw), suffix=".token", recreate_directory=self._recreate_directory, fsync=True
        )
