"""Which uid namespace a ``submit_measurements`` call uses, and where it came from (the Airflow side).

- **Given** (``uid_namespace="..."``): used exactly as given, so resuming with what
  :class:`~m3ter_provider.errors.M3terIngestError` reports stores exactly the rest. The same given
  namespace used again in one task try (or, outside a task, in one process) logs a warning:
  identical rows of the two calls get the same uids and m3ter stores them once.
- **From the task instance** (no namespace, inside a running task): ``json [dag_id, task_id,
  run_id, map_index]``, as :class:`~m3ter_provider.operators.measurements.M3terSubmitMeasurementsOperator`
  derives it, so an Airflow retry or a cleared task re-sends the same uids. Calls are counted per
  task try in this process: the first call of a try takes that namespace, the nth (n >= 1) takes it
  with ``#n`` appended. A retry counts again from 0, so its nth call maps onto the nth call of the
  first try, and identical rows in two calls of one try are two events.
- **Random** (no namespace, outside any task: a script, a notebook): one of the call's own.
"""

from __future__ import annotations

import threading
from typing import Any

from m3ter_provider.core.ingest.uids import random_namespace, task_namespace

GIVEN = "given"
FROM_TASK = "from the task instance"
RANDOM = "random: outside a task"

#: calls so far per task try: (dag_id, task_id, run_id, map_index, try_number) -> count
_calls: dict[tuple[Any, ...], int] = {}
#: given namespaces used so far, per task try (None outside a task)
_given: set[tuple[str, tuple[Any, ...] | None]] = set()
_lock = threading.Lock()
#: keep the books small in a long-lived process (a notebook, a worker running many tasks in-process)
_MAX_ENTRIES = 10_000


def running_task_instance() -> tuple[Any, str] | None:
    """``(ti, run_id)`` of the task running in this thread, or None outside a task."""
    from airflow.providers.common.compat.sdk import get_current_context

    try:
        context = get_current_context()
    except Exception:  # RuntimeError (Airflow 3, the standard provider), AirflowException (2.x)
        return None
    ti = context.get("ti") or context.get("task_instance")
    if ti is None:
        return None
    return ti, context.get("run_id") or ti.run_id


def _try_key(ti: Any, run_id: str) -> tuple[Any, ...]:
    return (ti.dag_id, ti.task_id, run_id, getattr(ti, "map_index", -1), getattr(ti, "try_number", None))


def namespace_for_call(uid_namespace: str | None) -> tuple[str, str, str | None]:
    """``(namespace, source, warning)`` for one call; ``warning`` is None unless one is due."""
    running = running_task_instance()
    key = _try_key(*running) if running is not None else None
    with _lock:
        if len(_calls) > _MAX_ENTRIES:
            _calls.clear()
        if len(_given) > _MAX_ENTRIES:
            _given.clear()
        if uid_namespace is not None:
            seen = (uid_namespace, key)
            warning = None
            if seen in _given:
                warning = (
                    f"uid_namespace {uid_namespace!r} was already used by an earlier call "
                    f"{'of this task try' if key is not None else 'in this process'}: identical "
                    "rows of the two calls get the same uids, and m3ter stores such a row once. If the "
                    "two calls hold different events, give each call its own namespace (e.g. "
                    "f'{ns}/file-1'), or give none inside a task: each call of a task then gets its own."
                )
            _given.add(seen)
            return uid_namespace, GIVEN, warning
        if running is None or key is None:
            return random_namespace(), RANDOM, None
        number = _calls.get(key, 0)
        _calls[key] = number + 1
    base = task_namespace(*running)
    return (base if number == 0 else f"{base}#{number}"), FROM_TASK, None


def forget() -> None:
    """Forget every count (tests)."""
    with _lock:
        _calls.clear()
        _given.clear()
