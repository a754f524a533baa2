"""OpenLineage: the submit and export operators report what they read and wrote, with counts.

Run through the OpenLineage provider's own extractor manager (what its listener calls after a task),
on operators that really ran against the emulator; and importing the operators costs nothing when
OpenLineage is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from typing import Any

import pytest

from m3ter_provider.operators.m3ter import M3terDataExportOperator, M3terSubmitMeasurementsOperator
from m3ter_provider.testing import M3terEmulator
from tests.operators.helpers import FakeTaskInstance, make_context, measurement

pytest.importorskip("airflow.providers.openlineage")


class LineageTaskInstance(FakeTaskInstance):
    """A task instance whose return value the lineage reads back from XCom."""

    def xcom_pull(self, task_ids: str, key: str = "return_value", **_: Any) -> Any:
        assert task_ids == self.task_id
        return self.xcom.get(key)


def run_and_extract(op: Any) -> Any:
    """Execute ``op`` as a task would (its return value goes to XCom), then extract its lineage."""
    from airflow.providers.openlineage.extractors.manager import ExtractorManager
    from airflow.utils.state import TaskInstanceState

    ti = LineageTaskInstance(op.task_id)
    context = make_context(op)
    context.update(ti=ti, task_instance=ti)
    ti.xcom_push("return_value", op.execute(context))
    dagrun = types.SimpleNamespace(run_id=ti.run_id)
    return ExtractorManager().extract_metadata(
        dagrun=dagrun, task=op, task_instance_state=TaskInstanceState.SUCCESS, task_instance=ti
    )


def names(datasets: list) -> list[tuple[str, str]]:
    return [(dataset.namespace, dataset.name) for dataset in datasets]


def test_submitted_file_flows_into_the_organizations_measurements(emu: M3terEmulator, tmp_path):
    path = tmp_path / "usage.jsonl"
    path.write_text("\n".join(json.dumps(measurement(i)) for i in range(7)) + "\n")
    op = M3terSubmitMeasurementsOperator(task_id="push", measurements_file=str(path))
    lineage = run_and_extract(op)
    host = emu.url.removeprefix("http://")
    assert names(lineage.inputs) == [("file", str(path))]
    assert names(lineage.outputs) == [(f"m3ter://{host}", f"{emu.org_id}/measurements")]
    assert lineage.inputs[0].inputFacets["inputStatistics"].rowCount == 7
    written = lineage.outputs[0].outputFacets["outputStatistics"]
    assert written.rowCount == 7 == emu.stats()["measurements_stored"]
    assert written.size == emu.stats()["max_request_bytes"] > 0  # the bytes of its one request


def test_measurements_from_xcom_name_the_upstream_task(emu: M3terEmulator):
    from airflow.providers.common.compat.sdk import DAG, task

    with DAG("lineage_dag", schedule=None):

        @task
        def build() -> list[dict]:
            return [measurement(1)]

        op = M3terSubmitMeasurementsOperator(task_id="push", measurements=build())
    op.measurements = [measurement(i) for i in range(3)]  # what rendering the XComArg gives
    lineage = run_and_extract(op)
    assert names(lineage.inputs) == [("airflow-xcom", "lineage_dag.build")]
    assert lineage.inputs[0].inputFacets["inputStatistics"].rowCount == 3
    assert lineage.outputs[0].outputFacets["outputStatistics"].rowCount == 3


def test_an_export_reads_usage_and_writes_the_downloaded_file(emu: M3terEmulator, tmp_path):
    destination = tmp_path / "usage.csv"
    op = M3terDataExportOperator(
        task_id="export",
        source_type="USAGE",
        export_start_date="2026-01-01T00:00:00Z",
        export_end_date="2026-01-02T00:00:00Z",
        destination=str(destination),
        poll_interval=0.05,
        deferrable=False,
    )
    lineage = run_and_extract(op)
    host = emu.url.removeprefix("http://")
    assert names(lineage.inputs) == [(f"m3ter://{host}", f"{emu.org_id}/measurements")]
    assert names(lineage.outputs) == [("file", str(destination))]
    assert lineage.outputs[0].outputFacets["outputStatistics"].size == destination.stat().st_size


def test_an_operational_export_to_m3ter_destinations(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_M3TER_DEFAULT",
        json.dumps({"conn_type": "m3ter", "login": "k", "password": "s", "extra": {"org_id": "org-1"}}),
    )
    op = M3terDataExportOperator(
        task_id="export",
        source_type="OPERATIONAL",
        operational_data_types=["BILLS", "ACCOUNTS"],
        destination_ids="dest-1,dest-2",
        deferrable=False,
    )
    ti = LineageTaskInstance("export")
    ti.xcom["return_value"] = {"job_id": "j", "status": "SUCCEEDED", "destination": None, "bytes": None}
    lineage = op.get_openlineage_facets_on_complete(ti)
    assert names(lineage.inputs) == [
        ("m3ter://api.m3ter.com", "org-1/bills"),
        ("m3ter://api.m3ter.com", "org-1/accounts"),
    ]
    assert names(lineage.outputs) == [
        ("m3ter://api.m3ter.com", "org-1/destinations/dest-1"),
        ("m3ter://api.m3ter.com", "org-1/destinations/dest-2"),
    ]


def test_object_storage_destinations_are_named_by_bucket_and_key():
    from m3ter_provider.operators._lineage import file_dataset

    dataset = file_dataset("s3://billing-bucket/m3ter/usage-2026-01-01.csv")
    assert (dataset.namespace, dataset.name) == ("s3://billing-bucket", "m3ter/usage-2026-01-01.csv")


@pytest.mark.e2e  # two fresh interpreters
def test_importing_the_operators_loads_no_openlineage() -> None:
    """Only what Airflow itself loads (provider metadata): no OpenLineage client, no extractors."""

    def openlineage_modules(imports: str) -> set[str]:
        code = f"import sys; {imports}; print(sorted(m for m in sys.modules if 'openlineage' in m))"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return set(eval(result.stdout.strip().splitlines()[-1]))  # noqa: S307 - a list of names we printed

    airflow_alone = openlineage_modules("from airflow.providers.common.compat.sdk import BaseOperator")
    with_ours = openlineage_modules("import m3ter_provider.operators.m3ter")
    assert with_ours <= airflow_alone, sorted(with_ours - airflow_alone)
    assert not any(name.startswith("openlineage") for name in with_ours)
