"""Shared by the operator, sensor and trigger tests: a task context without a metadata DB."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from m3ter_provider.testing import M3terEmulator


class FakeTaskInstance:
    """What the operators use of a task instance: its key, try number and xcom_push."""

    def __init__(
        self,
        task_id: str,
        *,
        dag_id: str = "test_dag",
        run_id: str = "manual__1",
        map_index: int = -1,
        try_number: int = 1,
    ) -> None:
        self.dag_id = dag_id
        self.task_id = task_id
        self.run_id = run_id
        self.map_index = map_index
        self.try_number = try_number
        self.max_tries = 0
        self.stats_tags: dict[str, str] = {}
        self.xcom: dict[str, Any] = {}

    def get_first_reschedule_date(self, context: Any) -> None:
        return None  # a sensor in reschedule mode asks when its first poke was; this is the first

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value)  # XCom needs JSON-serialisable values
        self.xcom[key] = value


class FakeTaskStateStore:
    """Airflow 3.3's task_state_store (one per task instance, survives retries), in memory."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value


def make_context(
    task: Any,
    *,
    run_id: str = "manual__1",
    try_number: int = 1,
    map_index: int = -1,
    task_state_store: FakeTaskStateStore | None = None,
    **extra: Any,
) -> dict[str, Any]:
    ti = FakeTaskInstance(task.task_id, run_id=run_id, map_index=map_index, try_number=try_number)
    context: dict[str, Any] = {"ti": ti, "task_instance": ti, "run_id": run_id, "task": task, **extra}
    if task_state_store is not None:
        context["task_state_store"] = task_state_store
    return context


def set_connection(monkeypatch: pytest.MonkeyPatch, emulator: M3terEmulator, **extra: Any) -> None:
    """Point ``m3ter_default`` at ``emulator``, with extra connection fields (``max_retries``...)."""
    conn = json.loads(emulator.airflow_conn_json())
    conn["extra"].update(extra)
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))


def measurement(i: int, account: str = "acme", meter: str = "api_calls") -> dict[str, Any]:
    return {
        "account": account,
        "meter": meter,
        "ts": f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "measure": {"calls": float(i)},
    }


def _set_current_context() -> Any:
    """Airflow's own ``set_current_context`` (what a task run uses before ``execute``)."""
    try:
        from airflow.sdk.execution_time.context import set_current_context
    except ImportError:  # Airflow 2.x
        from airflow.models.taskinstance import set_current_context
    return set_current_context


@contextlib.contextmanager
def in_task(
    task_id: str,
    *,
    dag_id: str = "test_dag",
    run_id: str = "manual__1",
    map_index: int = -1,
    try_number: int = 1,
) -> Iterator[FakeTaskInstance]:
    """Run the block as inside a running task instance: ``get_current_context()`` finds it."""
    ti = FakeTaskInstance(task_id, dag_id=dag_id, run_id=run_id, map_index=map_index, try_number=try_number)
    with _set_current_context()({"ti": ti, "task_instance": ti, "run_id": run_id}):
        yield ti


def outlet_events() -> Any:
    """Airflow 3's own outlet event accessors, for a context (skips the test on Airflow 2.11, where
    m3ter operators emit no asset events)."""
    context_module = pytest.importorskip("airflow.sdk.execution_time.context")
    return context_module.OutletEventAccessors()


def events_in(accessors: Any, kind: str) -> dict[str, Any]:
    """``{asset uri: extra}`` of the events emitted through the ``m3ter/<kind>`` alias (one per asset)."""
    from m3ter_provider.operators.asset_events import asset_alias

    alias = asset_alias(kind)
    events = accessors[alias].asset_alias_events
    assert all(event.source_alias_name == alias.name for event in events)
    by_uri = {event.dest_asset_key.uri: event.extra for event in events}
    assert len(by_uri) == len(events)  # one event per asset
    return by_uri


def run_with_events(op: Any, **context_extra: Any) -> tuple[Any, dict[str, Any]]:
    """Execute ``op`` with outlet event accessors: (its result, ``{asset uri: extra}``)."""
    accessors = outlet_events()
    result = op.execute(make_context(op, outlet_events=accessors, **context_extra))
    return result, events_in(accessors, op.asset_event_kind)
