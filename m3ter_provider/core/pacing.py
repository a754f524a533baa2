"""Client-side pacing under m3ter's rate limits: one token bucket, shared by every caller that paces.

m3ter answers 429 past a limit (see the emulator's ``testing/limits.py`` for the figures); pacing keeps
a caller under its share so the 429s stay rare, and the transport still retries the ones that come.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from m3ter_provider.errors import M3terConfigError

if TYPE_CHECKING:
    from collections.abc import Callable


class Pacer:
    """A token bucket: at most ``burst`` calls at once, then ``rate`` calls a second (``burst=1``
    spaces every call ``1 / rate`` seconds apart). Thread-safe; never sleeps holding its lock.

    :param rate: calls per second, a positive number.
    :param burst: calls allowed at once after a quiet spell (at least 1).
    :param clock: monotonic seconds (injectable for tests).
    """

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
            raise M3terConfigError(f"rate {rate!r}: give a positive number of requests per second.")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise M3terConfigError(f"burst {burst!r}: give a whole number of requests, at least 1.")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self._tokens = float(burst)
        self._last = clock()
        self._lock = threading.Lock()

    def wait(self, sleep: Callable[[float], None]) -> float:
        """Take one token, sleeping (with ``sleep``) until one is there; return the seconds slept."""
        slept = 0.0
        while True:
            with self._lock:
                now = self.clock()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return slept
                delay = (1 - self._tokens) / self.rate
            sleep(delay)
            slept += delay
