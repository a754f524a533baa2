"""Encoded request bodies spooled to a temporary file: validated first, sent after, memory flat.

Bodies are packed greedily on their exact bytes: each holds at most ``max_items`` measurements and
fewer than ``max_bytes`` bytes (m3ter's limits: 1,000 and under 512,000).
"""

from __future__ import annotations

import bisect
import itertools
import re
import tempfile
import threading
from array import array
from typing import TYPE_CHECKING

from m3ter_provider.core.ingest.schema import MAX_MEASUREMENTS_PER_REQUEST, MAX_REQUEST_BYTES
from m3ter_provider.errors import M3terValidationError

if TYPE_CHECKING:
    from collections.abc import Callable

PREFIX = b'{"measurements":['
SUFFIX = b"]}"
#: a uid as the encoder writes it (uids are plain text; a quote inside one would be escaped)
_UID = re.compile(rb'"uid":"((?:[^"\\]|\\.)*)"')
OVERHEAD = len(PREFIX) + len(SUFFIX)


class Spool:
    """Request bodies in a temporary file (deleted on :meth:`close`), with an index in memory.

    :param max_items: measurements per body at most.
    :param max_bytes: every body is shorter than this.
    """

    def __init__(
        self, *, max_items: int = MAX_MEASUREMENTS_PER_REQUEST, max_bytes: int = MAX_REQUEST_BYTES
    ) -> None:
        if not 1 <= max_items <= MAX_MEASUREMENTS_PER_REQUEST:
            raise M3terValidationError(f"max_items must be between 1 and {MAX_MEASUREMENTS_PER_REQUEST}.")
        if not OVERHEAD < max_bytes <= MAX_REQUEST_BYTES:
            raise M3terValidationError(f"max_bytes must be between {OVERHEAD + 1} and {MAX_REQUEST_BYTES}.")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.file = tempfile.TemporaryFile(prefix="m3ter-measurements-")  # noqa: SIM115 - closed by close()
        self._lock = threading.Lock()
        self._offsets = array("Q")
        self._sizes = array("Q")
        self._counts = array("L")
        self._end = 0
        self._pending: list[bytes] = []
        self.measurements = 0

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def __len__(self) -> int:
        return len(self._counts)

    @property
    def total_bytes(self) -> int:
        """Bytes of every body written so far, together."""
        return self._end

    def add(self, pieces: list[bytes], label: Callable[[int], str]) -> None:
        """Add encoded measurements; write every body that cannot take another one.

        :param label: names the row at an index of ``pieces`` (for a row too large to send).
        """
        if not pieces:
            return
        longest = max(map(len, pieces))
        if OVERHEAD + longest >= self.max_bytes:
            index = next(i for i, piece in enumerate(pieces) if len(piece) == longest)
            raise M3terValidationError(
                f"{label(index)} is {longest:,} bytes of JSON: too large to send even alone (m3ter takes "
                f"requests under {self.max_bytes:,} bytes). Trim its maps."
            )
        self.measurements += len(pieces)
        self._pending += pieces
        self._pack(final=False)

    def finish(self) -> None:
        """Write the last, partly filled body."""
        self._pack(final=True)
        self.file.flush()

    def _pack(self, *, final: bool) -> None:
        pending = self._pending
        total = len(pending)
        # key(j) = bytes of the first j pieces + j commas: items start..j-1 make a body of
        # OVERHEAD - 1 + key(j) - key(start) bytes
        key = list(map(int.__add__, itertools.accumulate(map(len, pending), initial=0), range(total + 1)))
        start = 0
        while start < total:
            limit = self.max_bytes - OVERHEAD + 1 + key[start]
            fits = bisect.bisect_left(key, limit, lo=start + 1) - 1
            end = min(fits, start + self.max_items)
            if end == total and end - start < self.max_items and not final:
                break
            self._write(pending[start:end])
            start = end
        del pending[:start]

    def _write(self, pieces: list[bytes]) -> None:
        body = PREFIX + b",".join(pieces) + SUFFIX
        self.file.write(body)
        self._offsets.append(self._end)
        self._sizes.append(len(body))
        self._counts.append(len(pieces))
        self._end += len(body)

    def count(self, index: int) -> int:
        """Measurements in body ``index``."""
        return self._counts[index]

    def body(self, index: int) -> bytes:
        """Body ``index``, read back from the file (thread-safe)."""
        with self._lock:
            self.file.seek(self._offsets[index])
            return self.file.read(self._sizes[index])

    def uids_among(self, candidates: set[str]) -> set[str]:
        """Those of ``candidates`` that are uids of measurements in this spool: one streamed pass
        over the file, so a submission's uids never have to be held in memory."""
        import msgspec

        # as the encoder wrote them: JSON-escaped, without the quotes
        wanted = {msgspec.json.encode(uid)[1:-1]: uid for uid in candidates if isinstance(uid, str)}
        found: set[bytes] = set()
        for index in range(len(self)):
            if len(found) == len(wanted):
                break
            found.update(wanted.keys() & _UID.findall(self.body(index)))
        return {wanted[uid] for uid in found}
