"""OpenLineage for the measurement and export operators.

The OpenLineage provider (``apache-airflow-providers-openlineage``), when installed and enabled, calls
``get_openlineage_facets_on_complete`` after a task succeeds. Everything OpenLineage is imported
inside that call, so nothing is imported, and nothing costs, when the provider is absent.

Datasets, named as OpenLineage names them:

- m3ter data: namespace ``m3ter://<API host>`` (e.g. ``m3ter://api.m3ter.com``), name
  ``<Organization id>/measurements`` for usage, ``<Organization id>/<data type>`` (``bills``,
  ``accounts``...) for an operational export, ``<Organization id>/destinations/<id>`` for an m3ter
  export destination;
- files: a local path is namespace ``file``, name the absolute path; an ``ObjectStoragePath`` or a
  ``scheme://`` URL is namespace ``scheme://bucket``, name the key;
- measurements handed over in XCom: namespace ``airflow-xcom``, name ``<dag id>.<upstream task id>``.

Counts come from the task's return value (its XCom): measurements sent as row counts on the input
and on m3ter's measurements, bytes as the size of a downloaded export.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

XCOM_NAMESPACE = "airflow-xcom"


def _result_of(task_instance: Any) -> dict[str, Any] | None:
    """The task's return value (its summary), or None when it pushed none or it cannot be read."""
    try:
        map_index = getattr(task_instance, "map_index", -1)
        kwargs = {"map_indexes": map_index} if isinstance(map_index, int) and map_index >= 0 else {}
        value = task_instance.xcom_pull(task_ids=task_instance.task_id, key="return_value", **kwargs)
    except Exception:
        return None
    return value if isinstance(value, dict) else None


def _m3ter_dataset(operator: Any, name: str, facets: dict[str, Any] | None = None) -> Any:
    """A dataset inside the operator's m3ter Organization (``<org id>/<name>``)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    try:
        settings = operator.hook.settings
        namespace = f"m3ter://{urlsplit(settings.api_url).netloc}"
        org_id = settings.org_id
    except Exception:  # the connection cannot be read: still report what was moved
        namespace, org_id = "m3ter", "unknown-organization"
    return Dataset(namespace=namespace, name=f"{org_id}/{name}", facets=facets or {})


def file_dataset(path: Any) -> Any:
    """A local path, a ``scheme://`` URL or an ``ObjectStoragePath`` as an OpenLineage dataset."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    text = str(path)
    if "://" not in text or text.startswith("file://"):
        local = text.removeprefix("file://")
        return Dataset(namespace="file", name=os.path.abspath(local))
    parts = urlsplit(text)
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path.lstrip("/"))


def _with_input_rows(dataset: Any, rows: int | None) -> Any:
    from airflow.providers.common.compat.openlineage.facet import InputDataset

    facets: dict[str, Any] = {}
    if rows is not None:
        try:  # newer OpenLineage clients only
            from openlineage.client.generated.input_statistics_input_dataset import (
                InputStatisticsInputDatasetFacet,
            )
        except ImportError:
            pass
        else:
            facets["inputStatistics"] = InputStatisticsInputDatasetFacet(rowCount=rows)
    return InputDataset(namespace=dataset.namespace, name=dataset.name, inputFacets=facets)


def _with_output_stats(dataset: Any, rows: int | None = None, size: int | None = None) -> Any:
    from airflow.providers.common.compat.openlineage.facet import (
        OutputDataset,
        OutputStatisticsOutputDatasetFacet,
    )

    facets: dict[str, Any] = {}
    if rows is not None or size is not None:
        facets["outputStatistics"] = OutputStatisticsOutputDatasetFacet(rowCount=rows, size=size)
    return OutputDataset(namespace=dataset.namespace, name=dataset.name, outputFacets=facets)


def _count(result: dict[str, Any] | None, key: str) -> int | None:
    value = (result or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class M3terSubmitLineageMixin:
    """Lineage of ``M3terSubmitMeasurementsOperator``: a file or XCom in, m3ter's measurements out."""

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        result = _result_of(task_instance)
        sent = _count(result, "measurements")
        source = getattr(self, "measurements_file", None)
        if source is not None:
            origin = file_dataset(source)
        else:
            upstream = sorted(getattr(self, "upstream_task_ids", ()) or ())
            producer = upstream[0] if len(upstream) == 1 else getattr(self, "task_id", "task")
            origin = Dataset(namespace=XCOM_NAMESPACE, name=f"{getattr(self, 'dag_id', 'dag')}.{producer}")
        measurements = _m3ter_dataset(self, "measurements")
        return OperatorLineage(
            inputs=[_with_input_rows(origin, sent)],
            outputs=[_with_output_stats(measurements, rows=sent, size=_count(result, "bytes"))],
        )


class M3terExportLineageMixin:
    """Lineage of ``M3terDataExportOperator``: the Organization's data in, the file and destinations out."""

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        from airflow.providers.openlineage.extractors import OperatorLineage

        result = _result_of(task_instance)
        if str(getattr(self, "source_type", "")).upper() == "OPERATIONAL":
            kinds = _as_list(getattr(self, "operational_data_types", None))
            inputs = [_m3ter_dataset(self, str(kind).lower()) for kind in kinds]
        else:
            inputs = [_m3ter_dataset(self, "measurements")]
        outputs = []
        destination = (result or {}).get("destination") or getattr(self, "destination", None)
        if destination is not None:
            outputs.append(_with_output_stats(file_dataset(destination), size=_count(result, "bytes")))
        for destination_id in _as_list(getattr(self, "destination_ids", None)):
            outputs.append(_with_output_stats(_m3ter_dataset(self, f"destinations/{destination_id}")))
        inputs = [_with_input_rows(dataset, None) for dataset in inputs]
        return OperatorLineage(inputs=inputs, outputs=outputs)


def _as_list(value: Any) -> list[Any]:
    """A rendered list argument: a list, or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, (list, tuple, set)):
        return list(value)
    return [value]
