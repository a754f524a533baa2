"""Kept so ``from m3ter_provider.ingest import MeasurementFile`` (shown by earlier READMEs) works.

The ingest lives in :mod:`m3ter_provider.core.ingest`; import from there.
"""

from m3ter_provider.core.ingest import *  # noqa: F403
from m3ter_provider.core.ingest import __all__  # noqa: F401
