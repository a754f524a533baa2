"""The example DAGs: they import cleanly, and each runs to success end to end against the emulator."""

from __future__ import annotations

import csv
import json
import os
import pathlib
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

from m3ter_provider.testing import M3terEmulator

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "example_dags"
EXAMPLE_DAG_IDS = {
    "example_m3ter_usage_pipeline",
    "example_m3ter_billing",
    "example_m3ter_hook",
    "example_m3ter_deferrable",
    "example_m3ter_daily_usage",  # the README's operators example, run by tests/test_readme.py
    "example_m3ter_mapped_ingest",
    "example_m3ter_warehouse",
    "example_m3ter_month_end",  # run end to end by tests/dags/test_example_month_end.py
    "example_m3ter_bill_events",  # run by tests/dags/test_example_bill_events.py
}
#: example DAGs with a schedule (the rest are schedule=None)
SCHEDULED = {
    "example_m3ter_daily_usage": "CronDataIntervalTimetable",
    # an AssetWatcher on m3ter's Events (Airflow 2.11 has none: the DAG runs only by hand there)
    "example_m3ter_bill_events": "AssetTriggeredTimetable" if AIRFLOW_V_3_0_PLUS else "NullTimetable",
}


def dag_bag(folder: pathlib.Path) -> Any:
    """Parse ``folder`` with the DagBag of the installed Airflow (it moved in 3.3).

    ``folder`` goes on ``sys.path`` first, as Airflow puts the DAGs folder (a DAG bundle's path) there
    before it parses or runs a DAG: the example DAGs import ``m3ter_example_helpers`` from beside them.
    """
    import importlib.util
    import sys

    if str(folder) not in sys.path:
        sys.path.append(str(folder))

    if importlib.util.find_spec("airflow.dag_processing.dagbag") is not None:  # Airflow 3.3+
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(folder))
    from airflow.models.dagbag import DagBag

    return DagBag(dag_folder=str(folder), include_examples=False)


def test_example_dags_import_without_errors_or_deprecation_warnings():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = dag_bag(EXAMPLES)
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXAMPLE_DAG_IDS
    ours = [
        f"{w.filename}:{w.lineno}: {w.message}"
        for w in caught
        if issubclass(w.category, DeprecationWarning)
        and (str(EXAMPLES) in w.filename or "m3ter_provider" in w.filename)
    ]
    assert ours == []
    assert not any(
        "Deprecat" in text for texts in getattr(bag, "captured_warnings", {}).values() for text in texts
    )
    for dag in bag.dags.values():
        assert set(dag.tags) == {"m3ter", "example"}
        assert dag.catchup is False and dag.start_date is not None
        assert type(dag.timetable).__name__ == SCHEDULED.get(dag.dag_id, "NullTimetable")


@pytest.mark.e2e
def test_example_dags_import_with_deprecation_warnings_as_errors():
    """Stricter, in a fresh interpreter: a DeprecationWarning raised by our modules or a DAG file fails.

    Airflow's own modules are imported first, so warnings Airflow raises about itself at start-up
    (Airflow 2.11 has a few) are not counted; anything the provider or the examples trigger is.
    """
    import subprocess
    import sys

    script = (
        "import importlib.util, pathlib, sys, warnings\n"
        "import httpx, airflow.triggers.base\n"
        "from airflow.providers.common.compat.sdk import (BaseOperator, BaseOperatorLink,\n"
        "    BaseSensorOperator, DAG, ObjectStoragePath, XCom, conf, task)\n"
        "import m3ter_provider._compat\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "warnings.simplefilter('error', PendingDeprecationWarning)\n"
        "import m3ter_provider.operators.m3ter, m3ter_provider.sensors.m3ter, m3ter_provider.triggers.m3ter\n"
        "sys.path.append(sys.argv[1])  # as Airflow puts the DAGs folder\n"
        "for path in sorted(pathlib.Path(sys.argv[1]).glob('*.py')):\n"
        "    spec = importlib.util.spec_from_file_location(path.stem, path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "warnings.resetwarnings()\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(EXAMPLES)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


# ------------------------------------------------------------------ end to end
@pytest.fixture
def emulator(airflow_db, monkeypatch, tmp_path) -> Iterator[M3terEmulator]:
    """An emulator with short jobs; the examples poll it quickly and download under ``tmp_path``."""
    with M3terEmulator(job_duration=0.2) as emu:
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", emu.airflow_conn_json())
        monkeypatch.setenv("M3TER_DEMO_POLL_INTERVAL", "0.1")
        monkeypatch.setenv("M3TER_DEMO_INGEST_WAIT", "0")  # the emulator validates at once
        monkeypatch.setenv("M3TER_DEMO_OUTPUT", str(tmp_path))
        yield emu


def run_example(
    dag_id: str, conf: dict | None = None, logical_date: Any = None, expect: str = "success"
) -> tuple[Any, dict[tuple[str, str], Any]]:
    """``dag.test()`` one example DAG (``conf``: its params); return its DagRun and XComs by task, key.

    :param expect: the state the run must end in.
    :param logical_date: the run's logical date; ``dag.test()`` given one already used replaces that
        run with a fresh one of the same run id, as clearing the run would.
    """
    from airflow.utils.session import create_session

    dags_folder = pathlib.Path(
        os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    )  # tests/conftest.py copies examples there
    dag = dag_bag(dags_folder).get_dag(dag_id)
    kwargs: dict[str, Any] = {"run_conf": conf} if conf else {}
    if logical_date is not None:
        from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

        if AIRFLOW_V_3_0_PLUS:  # Airflow 3 names a manual run after its run_after
            kwargs.update(logical_date=logical_date, run_after=logical_date)
        else:  # pragma: no cover - Airflow 2
            kwargs["execution_date"] = logical_date
            # replacing the run deletes its notes, whose user_id points at FAB's ab_user: Airflow 2.11
            # maps that table only once the FAB models are imported (not always so in a test worker)
            import airflow.providers.fab.auth_manager.models  # noqa: F401
    run = dag.test(**kwargs)
    with create_session() as session:
        xcom_model = _xcom_model()
        rows = session.query(xcom_model).filter_by(dag_id=dag_id, run_id=run.run_id).all()
        xcoms = {(row.task_id, row.key): _xcom_value(row.value) for row in rows}
        states = {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}
    assert run.state == expect, f"{dag_id} ended {run.state}: task states {states}"
    return run, xcoms


def _xcom_model() -> Any:
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    if AIRFLOW_V_3_0_PLUS:
        from airflow.models.xcom import XComModel

        return XComModel
    from airflow.models.xcom import BaseXCom  # pragma: no cover - Airflow 2

    return BaseXCom  # pragma: no cover


def _xcom_value(value: Any) -> Any:
    if isinstance(value, (bytes, str)):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def console_link_of(run: Any, xcoms: dict, task_id: str) -> str:
    """The task's extra link: Airflow 3 stores it in XCom after the task; Airflow 2 computes it on demand."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    from m3ter_provider.links import M3terConsoleLink

    if AIRFLOW_V_3_0_PLUS:
        return xcoms[(task_id, "_link_M3terConsoleLink")]
    ti = run.get_task_instance(task_id)  # pragma: no cover - Airflow 2
    return M3terConsoleLink().get_link(None, ti_key=ti.key)  # pragma: no cover


@pytest.mark.e2e
def test_usage_pipeline_runs_end_to_end(emulator):
    run, xcoms = run_example("example_m3ter_usage_pipeline")
    stats = emulator.stats()
    assert stats["measurements_stored"] == 60
    assert xcoms[("submit_measurements", "return_value")]["measurements"] == 60
    assert xcoms[("submit_measurements", "return_value")]["rejected"] == 0
    export = xcoms[("export_usage", "return_value")]
    assert export["status"] == "SUCCEEDED"
    assert xcoms[("export_usage", "m3ter_job_id")] == export["job_id"]
    with open(export["destination"], newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 60
    assert xcoms[("report", "return_value")]["rows"] == 60
    assert stats["authorization_on_download"] == 0
    assert console_link_of(run, xcoms, "export_usage") == "https://console.m3ter.com/"
    from m3ter_provider.hooks.m3ter import M3terHook

    stored = json.dumps(list(xcoms.values()), default=str)  # no secret or token ever reaches XCom
    assert emulator.api_secret not in stored and M3terHook().get_token() not in stored


@pytest.mark.e2e
def test_usage_pipeline_rerun_counts_measurements_per_run(emulator):
    run_example("example_m3ter_usage_pipeline")
    run_example("example_m3ter_usage_pipeline")  # a second run: new measurements, new uids
    assert emulator.stats()["measurements_stored"] == 120
    assert len(emulator.entities("accounts")) == 1 and len(emulator.entities("meters")) == 1


@pytest.mark.e2e
def test_billing_runs_end_to_end(emulator):
    _, xcoms = run_example("example_m3ter_billing")
    bill_job = xcoms[("run_bill_job", "return_value")]
    assert bill_job["status"] == "COMPLETE" and len(bill_job["bill_ids"]) == 1
    bills = xcoms[("fetch_bills", "return_value")]
    assert [b["id"] for b in bills] == bill_job["bill_ids"]
    assert bills[0]["accountCode"] == "example-billing-globex"
    stored = [b for b in emulator.entities("bills") if b["billJobId"] == bill_job["bill_job_id"]]
    assert len(stored) == 1


@pytest.mark.e2e
def test_hook_dag_runs_end_to_end(emulator):
    emulator.seed("accounts", [{"code": "existing", "name": "Existing", "emailAddress": "e@example.com"}])
    _, xcoms = run_example("example_m3ter_hook")
    assert xcoms[("list_accounts", "return_value")] == ["existing"]
    created = xcoms[("read_account", "return_value")]
    assert created["code"].startswith("example-hook-")
    assert sorted(a["code"] for a in emulator.entities("accounts")) == sorted(["existing", created["code"]])


@pytest.mark.e2e
def test_deferrable_dag_runs_end_to_end_through_the_triggers(emulator, monkeypatch):
    from m3ter_provider.triggers.m3ter import M3terJobTrigger

    fired: list[dict] = []
    original_run = M3terJobTrigger.run

    async def counting_run(self):
        async for event in original_run(self):
            fired.append(event.payload)
            yield event

    monkeypatch.setattr(M3terJobTrigger, "run", counting_run)  # dag.test() runs triggers in this process
    # long enough that neither job is done before its task looks: Airflow 3.1's dag.test() takes 3-4 s
    # to start each task on this machine (3.3 about 1 s), so a job of 2 s was done before its sensor poked
    emulator.job_duration = 8.0
    _, xcoms = run_example("example_m3ter_deferrable")
    assert [event["status"] for event in fired] == ["success", "success"]  # the export and the sensor
    assert {event["job_id"] for event in fired} == {
        xcoms[("export_accounts", "m3ter_job_id")],
        xcoms[("start_meters_export", "m3ter_job_id")],
    }
    report = xcoms[("report", "return_value")]
    assert report == {"accounts": 1, "sensed_status": "SUCCEEDED"}
    export = xcoms[("export_accounts", "return_value")]
    assert export["status"] == "SUCCEEDED" and os.path.exists(export["destination"])
    requests = emulator.stats()["requests"]
    assert requests["POST /organizations/{orgId}/dataexports/adhoc"] == 2  # no export started twice
    assert emulator.stats()["authorization_on_download"] == 0


@pytest.mark.e2e
def test_warehouse_dag_loads_queries_and_reconciles(emulator):
    _, xcoms = run_example("example_m3ter_warehouse")
    load = xcoms[("load_usage", "return_value")]
    assert load["measurements"] == 1000 and load["requests"] == 1
    query = xcoms[("query_usage", "return_value")]
    assert query["rows"] == 1000 and query["format"] == "jsonl"
    report = xcoms[("compare", "return_value")]
    assert report["accounts"] == 4
    assert report["warehouse_total"] == report["m3ter_total"] == sum(1 + i % 17 for i in range(1000))
    assert emulator.stats()["measurements_stored"] == 1000
