"""Hook-level lineage: what an :class:`~m3ter_provider.hooks.m3ter.M3terHook` call read and wrote.

Airflow's hook lineage collector gathers the inputs and outputs hooks report while a task runs; the
OpenLineage provider then shows them for any task, an ``@task`` function calling the hook included,
not only for operators with their own lineage methods. The hook reports:

- ``submit_measurements``: a file source (path, ``ObjectStoragePath``, ``MeasurementFile``) as an
  input; each Meter it sent measurements for as an output, ``m3ter://<org id>/meters/<code>``;
- ``download``: the m3ter export as an input (``m3ter://<org id>/exports/<name>``), the file as an
  output;
- ``paginate_to_file``: the listed collection (``m3ter://<org id>/accounts``, ``bills``,
  ``statements``) as an input where it is one of those, the file as an output.

Other hook methods that move files (bulk uploads, usage queries to a file) report the same way in
one call each: :func:`report_file` and :func:`report_m3ter`. Collecting never fails a call: a
collector that cannot take an asset is logged at debug level and skipped. Outside a task (no
lineage reader configured) Airflow hands out a collector that does nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def _collector() -> Any:
    from airflow.providers.common.compat.sdk import get_hook_lineage_collector

    return get_hook_lineage_collector()


def file_uri(path: Any) -> str:
    """A file's URI: ``file:///abs/path`` for a local path, the URL of an ``ObjectStoragePath``."""
    inner = getattr(path, "path", None)
    if inner is not None and type(path).__name__ in ("MeasurementFile", "MeterTally"):
        path = inner
    text = str(path)
    if "://" in text:
        return text
    return "file://" + os.path.abspath(os.fspath(path))


def _report(hook: Any, direction: str, uri: str) -> None:
    try:
        collector = _collector()
        add = collector.add_input_asset if direction == "input" else collector.add_output_asset
        add(context=hook, uri=uri)
    except Exception as exc:  # lineage is a report: never the reason a call fails
        log.debug("Hook lineage for %s not collected: %s", uri, exc)


def report_file(hook: Any, direction: str, path: Any) -> None:
    """Report a file the hook read (``direction="input"``) or wrote (``"output"``)."""
    _report(hook, direction, file_uri(path))


def report_m3ter(hook: Any, direction: str, kind: str, name: str | None = None) -> None:
    """Report m3ter data (``m3ter://<org id>/<kind>[/<name>]``) the hook read or wrote."""
    from m3ter_provider.assets import m3ter_uri

    try:
        uri = m3ter_uri(hook.org_id, kind, name)
    except Exception as exc:
        log.debug("Hook lineage for m3ter %s %s not collected: %s", kind, name, exc)
        return
    _report(hook, direction, uri)


def is_file_source(source: Any) -> bool:
    """Whether a measurement source is a file (rather than rows in memory)."""
    if type(source).__name__ in ("MeasurementFile", "MeterTally"):
        return is_file_source(getattr(source, "source", None)) if hasattr(source, "source") else True
    return isinstance(source, os.PathLike) or (hasattr(source, "open") and not hasattr(source, "__iter__"))
