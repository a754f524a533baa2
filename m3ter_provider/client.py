"""Kept so ``from m3ter_provider.client import M3terClient`` (named by earlier docs) works.

The client lives in :mod:`m3ter_provider.core.client`; import from there.
"""

from m3ter_provider.core.client import M3terClient

__all__ = ["M3terClient"]
