"""M3terSplitMeasurementsOperator: a measurements file split by content, for mapped ingest billed once."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from m3ter_provider.core.limits import check_file_format, check_slice_count
from m3ter_provider.errors import M3terConfigError
from m3ter_provider.hooks.permanent import fails_fast

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

#: the XCom key holding each slice's row count (mapping reads return values only)
ROWS_XCOM_KEY = "rows"


class M3terSplitMeasurementsOperator(BaseOperator):
    """Split a JSON Lines or CSV file of measurements into slice files by content; return their paths.

    Each row goes to slice ``hash(canonical row) mod slice_count``
    (:func:`m3ter_provider.core.ingest.slices.split_by_content`): a row and its identical repeats
    share a slice, and a row never changes slice when the input is reordered or grows. Every row is
    validated first: a bad row fails this task and nothing is sent. Map
    ``M3terSubmitMeasurementsOperator`` over the result with **one** ``uid_namespace`` for all slices
    (e.g. ``"{{ dag.dag_id }}/ingest/{{ run_id }}"``): a row's uid then depends on its content, not
    its slice, and a cleared run re-sends the same uids for the rows it already sent.

    Returns the slice paths (non-empty slices only; JSON Lines, as strings) and pushes their row
    counts under the XCom key ``"rows"``, in the same order.

    :param source: the measurements file: a local path, an ``ObjectStoragePath`` or a ``scheme://``
        URL. (templated)
    :param slice_count: slices at most, 1 to 256 (default 8). Uids do not depend on it; it only
        spreads the work. (templated)
    :param destination: the folder for the slice files (default ``<source>.slices/<run id>`` beside
        the input); every worker that ingests a slice must be able to read it. (templated)
    :param file_format: ``"jsonl"`` or ``"csv"``; by default taken from the source's suffix.
    """

    template_fields: Sequence[str] = ("source", "slice_count", "destination")

    def __init__(
        self,
        *,
        source: Any,
        slice_count: int | str = 8,
        destination: Any = None,
        file_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if source is None or source == "":
            raise M3terConfigError("source is required: give the path or URL of a measurements file.")
        if not isinstance(slice_count, str) or "{{" not in slice_count:
            _slice_count(slice_count)  # a literal count is checked when the DAG file is parsed
        self.source = source
        self.slice_count = slice_count
        self.destination = destination
        self.file_format = check_file_format(file_format)

    @fails_fast
    def execute(self, context: Context) -> list[str]:
        from m3ter_provider.core.ingest.slices import split_by_content
        from m3ter_provider.operators.inputs import open_path

        source = open_path(self.source)
        if self.destination:
            folder = open_path(self.destination)
        else:
            run = re.sub(r"[^A-Za-z0-9._-]", "_", str(context["run_id"]))
            folder = source.parent / f"{source.name}.slices" / run
        parts = split_by_content(source, _slice_count(self.slice_count), folder, file_format=self.file_format)
        rows = [part.rows for part in parts]
        self.log.info(
            "Split %s measurements by content into %s slices in %s.", f"{sum(rows):,}", len(parts), folder
        )
        context["ti"].xcom_push(key=ROWS_XCOM_KEY, value=rows)
        return [part.path for part in parts]


def _slice_count(value: Any) -> int:
    """``value`` checked by :func:`check_slice_count`, also from a rendered template (``"8"``)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    return check_slice_count(value)
