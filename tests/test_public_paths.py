"""Every import path a README of this project has shown (``git log -p README.md``) still imports.

Users copy these lines; a layout change must keep them working (through re-export shims where a
module moved). The docs' own examples are run by tests/test_docs.py, which imports what they show.
"""

from __future__ import annotations

import importlib

import pytest

#: module -> names the README showed from it (every version of it, 0.1.0 on)
SHOWN = {
    "m3ter_provider.hooks.m3ter": ["M3terHook"],
    "m3ter_provider.operators.m3ter": [
        "M3terOperator",
        "M3terSubmitMeasurementsOperator",
        "M3terDataExportOperator",
        "M3terBillJobOperator",
    ],
    "m3ter_provider.sensors.m3ter": ["M3terJobSensor"],
    "m3ter_provider.triggers.m3ter": ["M3terJobTrigger"],
    "m3ter_provider.errors": [
        "M3terError",
        "M3terAuthError",
        "M3terTransportError",
        "M3terResponseError",
        "M3terIngestError",
    ],
    "m3ter_provider.testing": ["M3terEmulator"],
    "m3ter_provider.testing.pytest_plugin": ["m3ter_emulator", "m3ter_conn"],
    "m3ter_provider.ingest": ["MeasurementFile"],  # before the core/ move
    "m3ter_provider.core.ingest": ["MeasurementFile"],
    "m3ter_provider.retry": ["RetryPolicy"],  # before the core/ move
    "m3ter_provider.core.retry": ["RetryPolicy"],
    "m3ter_provider.client": ["M3terClient"],  # before the core/ move
    "m3ter_provider.core.client": ["M3terClient"],
}


@pytest.mark.parametrize(("module", "name"), [(m, n) for m, names in SHOWN.items() for n in names])
def test_a_path_the_readme_showed_still_imports(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is not None


def test_moved_names_are_the_same_objects_as_in_the_core() -> None:
    from m3ter_provider.client import M3terClient as OldM3terClient
    from m3ter_provider.core.client import M3terClient
    from m3ter_provider.core.ingest import MeasurementFile
    from m3ter_provider.core.retry import RetryPolicy
    from m3ter_provider.ingest import MeasurementFile as OldMeasurementFile
    from m3ter_provider.retry import RetryPolicy as OldRetryPolicy

    assert OldMeasurementFile is MeasurementFile and OldRetryPolicy is RetryPolicy
    assert OldM3terClient is M3terClient
