"""Run a DAG from the tests' DAGs folder with dag.test() and report its state as a plain string."""

from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Any


def load_dag(dag_id: str) -> Any:
    """Import the DAG ``dag_id`` from the DAGs folder conftest prepared (file named after the DAG)."""
    folder = pathlib.Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    path = folder / f"{dag_id}.py"
    spec = importlib.util.spec_from_file_location(f"dagfile_{dag_id}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for value in vars(module).values():
        if getattr(value, "dag_id", None) == dag_id and hasattr(value, "test"):
            return value
    raise LookupError(f"{path} defines no DAG {dag_id!r}")


class RunResult:
    def __init__(self, dag_run: Any) -> None:
        self.dag_run = dag_run
        state = getattr(dag_run, "state", None)
        self.state = getattr(state, "value", state)


def run_dag(dag: Any, **kwargs: Any) -> RunResult:
    return RunResult(dag.test(**kwargs))
