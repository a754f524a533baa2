"""What the m3ter operators and the sensor share: the task's cached hook, the deferrable default, and
reading an :class:`~m3ter_provider.triggers.m3ter.M3terJobTrigger` event.

A public module beside ``operators/`` and ``sensors/`` so that neither imports the other's private
modules (an import-linter contract in pyproject.toml checks it).
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from airflow.providers.common.compat.sdk import conf

from m3ter_provider.core.jobs import JobKind, get_kind
from m3ter_provider.errors import M3terJobFailedError, M3terJobTimeoutError
from m3ter_provider.hooks.m3ter import M3terHook

log = logging.getLogger(__name__)


def default_deferrable() -> bool:
    """``[operators] default_deferrable`` from Airflow's config (False when unset)."""
    return conf.getboolean("operators", "default_deferrable", fallback=False)


class M3terHookMixin:
    """The operator's :class:`M3terHook` for its ``m3ter_conn_id``, made once per task."""

    m3ter_conn_id: str

    @cached_property
    def hook(self) -> M3terHook:
        return M3terHook(m3ter_conn_id=self.m3ter_conn_id)


def job_from_event(
    event: dict[str, Any] | None, kind: str | JobKind, job_id: str | None = None
) -> tuple[str, dict[str, Any] | None]:
    """Read an :class:`~m3ter_provider.triggers.m3ter.M3terJobTrigger` event: ``(job id, final job)``.

    :raises M3terJobTimeoutError: the trigger's ``end_time`` passed first.
    :raises M3terJobFailedError: the job failed, was cancelled or could not be read.
    """
    job_kind = get_kind(kind)
    event = event or {}
    job_id = str(event.get("job_id") or job_id or "")
    if event.get("status") == "success":
        return job_id, event.get("job")
    message = event.get("message") or f"m3ter {job_kind.title} {job_id}: no event from the trigger."
    error = M3terJobTimeoutError if event.get("timed_out") else M3terJobFailedError
    raise error(message, kind=job_kind.name, job_id=job_id, status=event.get("job_status"))


def task_uid_namespace(context: Any, source_file: Any = None) -> str:
    """The uid namespace of the running task instance (DAG, task, run, map index): the same on every
    try, so a retried or cleared task re-sends the same uids and m3ter ingests each once.

    A mapped task instance reading ``source_file`` keys on its input instead of its map index, which
    changes when a cleared run's mapped list is reordered or grows: a slice file that
    :func:`~m3ter_provider.core.ingest.slices.split_by_content` wrote shares one namespace with every
    slice of the run (identical rows land in one slice, so a row keeps its uid whichever slice it
    moves to), any other file is keyed by its path. A mapped task given rows, not a file, keeps its map
    index (say ``uid_namespace`` when the mapped list can change between tries).
    """
    import json

    from m3ter_provider.core.ingest.slices import is_slice_file
    from m3ter_provider.core.ingest.uids import task_namespace

    ti, run_id = context["ti"], context["run_id"]
    map_index = getattr(ti, "map_index", -1)
    if map_index is None or map_index < 0:
        return task_namespace(ti, run_id)
    if source_file is None:
        log.warning(
            "Mapped task without uid_namespace: measurement uids derive from map index %s. If the "
            "mapped list can be reordered or grow before a clear, give uid_namespace (one per input).",
            map_index,
        )
        return task_namespace(ti, run_id)
    key = "content slices" if is_slice_file(source_file) else f"file {source_file}"
    return json.dumps([ti.dag_id, ti.task_id, run_id, key])


def templated(*values: Any) -> bool:
    """Whether any value (or any item of a list or dict) still holds Jinja or an XComArg.

    Arguments are checked when the DAG is parsed only where they hold no template; the others are
    checked once rendered.
    """
    for value in values:
        if isinstance(value, str):
            if "{{" in value or "{%" in value:
                return True
        elif isinstance(value, dict):
            if templated(*value.keys(), *value.values()):
                return True
        elif isinstance(value, (list, tuple, set)):
            if templated(*value):
                return True
        elif value is not None and not isinstance(value, (int, float, bool)) and hasattr(value, "resolve"):
            return True  # an XComArg (task.output) or another lazily resolved value
    return False
