"""A local m3ter emulator (standard library only) and its pytest fixtures.

``with M3terEmulator() as emu:`` serves m3ter's auth, Config API, ingest and job endpoints on
``emu.url``; ``python -m m3ter_provider.testing`` (or ``m3ter-emulator``) runs it as a command.
"""

from __future__ import annotations

from .limits import RateLimits
from .server import M3terEmulator

__all__ = ["M3terEmulator", "RateLimits"]
