"""Mapped ingest: one large JSON Lines file, split by content into slices, ingested by parallel mapped tasks.

``split`` (``M3terSplitMeasurementsOperator``) reads the input (a local path or an ``ObjectStoragePath``
URL such as ``s3://bucket/usage.jsonl``), validates every row, and writes each row to one of ``slices``
slice files beside it (shared storage, so any worker can read them) **by its content**: slice = a
stable hash of the canonical row modulo ``slices``. A row and its identical
repeats always land in the same slice, and a row never changes slice when the input is reordered or
grows. ``ingest_slice`` is ``M3terSubmitMeasurementsOperator`` mapped over the slices, all with one
uid namespace (the DAG run's), so each row's uid comes from (run, content, occurrence among its
repeats) whichever slice holds it. ``reconcile`` adds up what ``split`` counted and what the mapped
tasks say m3ter accepted, fails on any difference, and removes the slice files once the counts agree.

**A cleared run** re-splits its input and re-sends every row with the uids of the first try: rows
already ingested are counted once by m3ter, rows reordered or moved are the same rows, and rows added
to the input since are new uids, ingested once. A bad row fails ``split``: nothing is sent.

**The slice count** (param ``slices``) only spreads the work: uids do not depend on it, so changing
it re-maps rows to other slices without doubling anything. At most 256.

**The pool.** Every ``ingest_slice`` task takes a slot of the Airflow pool ``m3ter_ingest``: pools are
global (all DAGs, all workers), so the pool bounds how hard one Organization is hit, however many
workers run. m3ter allows 50 ingest requests per second per Organization. Requests in flight are
pool slots x ``concurrency`` (batches in flight per task); one 1,000-measurement request (~200-500 KB)
takes ~200 ms or more, so each in-flight batch makes at most ~5 requests/s:
4 slots x 2 in flight x 5 requests/s = 40 requests/s, under 50 with headroom for other callers.
The tasks also pace themselves: each machine sends at most the connection's ``ingest_rate`` (default
45/s) divided by ``ingest_machines``, shared by its task processes through ``[m3ter] token_cache_dir``
(see the operators' guide, ``docs/operators-guide.md``). Over a limit m3ter answers 429; the hook backs
off (Retry-After honoured, jitter) and a retried task re-sends only uids m3ter ingests once. Create the
pool once per deployment::

    airflow pools set m3ter_ingest 4 "m3ter ingest: 50 requests/s per Organization"

(A task in a pool that does not exist never runs under a scheduler; running this file directly
creates it before ``dag.test()``.)

**One asset event per load** (Airflow 3): the mapped tasks emit none; ``reconcile`` emits one for the
Meter (``m3ter://<org>/meters/example_mapped_requests``, through the ``m3ter/usage`` alias) once the
counts agree, so a DAG scheduled on the Meter runs once per complete load, not once per slice. It
also avoids a race in Airflow 3's api-server: mapped tasks that finish together and each attach a
not-yet-registered asset to an alias can both try to create it, and the loser is marked failed
(``UNIQUE constraint failed: asset.name, asset.uri``) although its measurements are in m3ter.

**Demo input.** When the input file is absent, ``generate`` writes ``rows`` measurements to it.
The DAG finds or creates the Meter it reports (m3ter refuses measurements of unknown Meters).

Params: ``input`` (default ``$M3TER_DEMO_OUTPUT/mapped_ingest/measurements.jsonl``), ``rows``
(demo rows to generate, default 100,000), ``slices`` (slice files and mapped tasks at most, default 8).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile

from airflow.providers.common.compat.sdk import DAG, task

from m3ter_provider.assets import meter_asset
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators.asset_events import alias_outlets, emit_asset_event
from m3ter_provider.operators.m3ter import M3terSplitMeasurementsOperator, M3terSubmitMeasurementsOperator

POOL = "m3ter_ingest"
POOL_SLOTS = 4
#: batches in flight per mapped task: POOL_SLOTS x INGEST_CONCURRENCY requests in flight in all
INGEST_CONCURRENCY = 2
METER_CODE = "example_mapped_requests"
ACCOUNTS = 100
OUTPUT_DIR = os.environ.get("M3TER_DEMO_OUTPUT", os.path.join(tempfile.gettempdir(), "m3ter-examples"))
DEFAULT_INPUT = os.path.join(OUTPUT_DIR, "mapped_ingest", "measurements.jsonl")


def storage_path(location: str):
    """A local path, or an ``ObjectStoragePath`` for a URL (``s3://...``, ``file://...``)."""
    if "://" in location:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(location)
    import pathlib

    return pathlib.Path(location)


def write_demo_rows(target, rows: int) -> None:
    """Write ``rows`` distinct demo measurements (~190 bytes each) to ``target``, atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    partial = target.parent / (target.name + ".partial")
    with partial.open("w", encoding="utf-8") as out:
        for i in range(rows):
            ts = (now - dt.timedelta(seconds=i % 86_400)).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.write(
                f'{{"account": "mapped-{i % ACCOUNTS:03d}", "meter": "{METER_CODE}", "ts": "{ts}", '
                f'"measure": {{"requests": {i % 97 + 1}}}, "where": {{"region": "r{i % 7}"}}, '
                f'"metadata": {{"row": "{i}"}}}}\n'
            )
    partial.rename(target)  # a reader never sees a half-written input


with DAG(
    dag_id="example_m3ter_mapped_ingest",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
    doc_md=__doc__,
    params={"input": DEFAULT_INPUT, "rows": 100_000, "slices": 8},
) as dag:

    @task
    def ensure_meter() -> str:
        """Find the Meter by code, or create it (a global Meter counting requests per region)."""
        hook = M3terHook()
        found = hook.get("meters", params={"codes": [METER_CODE]})["data"]
        if found:
            return found[0]["id"]
        fields = [
            {"category": "MEASURE", "code": "requests", "name": "Requests", "unit": "{request}"},
            {"category": "WHERE", "code": "region", "name": "Region"},
        ]
        meter = {"code": METER_CODE, "name": "Requests (mapped example)", "dataFields": fields}
        return hook.post("meters", json={**meter, "derivedFields": []})["id"]

    @task
    def generate(params: dict | None = None) -> str:
        """Write ``rows`` demo measurements to ``input`` unless it exists; return its location."""
        target = storage_path(params["input"])
        if target.exists():
            print(f"Input {target} exists: using it as it is.")
            return str(target)
        write_demo_rows(target, int(params["rows"]))
        print(f"Wrote {params['rows']:,} measurements to {target}.")
        return str(target)

    @task(outlets=alias_outlets("usage"))
    def reconcile(slices: list[str], results: list[dict], ti=None, **context) -> dict:
        """Sent (counted by ``split``) against accepted (what each mapped task says m3ter took);
        once they agree, one asset event for the Meter (Airflow 3)."""
        rows = ti.xcom_pull(task_ids="split", key="rows")
        results = list(results)
        accepted = [result["measurements"] for result in results]
        summary = {
            "slices": len(slices),
            "sent": sum(rows),
            "accepted": sum(accepted),
            "requests": sum(result["requests"] for result in results),
        }
        mismatched = [
            f"slice {index} ({name}): {want} rows, {got} accepted"
            for index, (name, want, got) in enumerate(zip(slices, rows, accepted, strict=False))
            if want != got
        ]
        if len(accepted) != len(rows) or mismatched:
            raise ValueError(
                f"m3ter accepted {summary['accepted']:,} of {summary['sent']:,} measurements "
                f"({len(accepted)} results for {len(rows)} slices): {'; '.join(mismatched[:5])}. "
                "Clear the failed ingest_slice tasks: they re-send the same uids, counted once."
            )
        for name in slices:  # the counts agree: the slice files have done their job
            storage_path(name).unlink()
        if alias_outlets("usage"):
            meter = meter_asset(M3terHook().org_id, METER_CODE)
            emit_asset_event(context, "m3ter/usage", meter, {**summary, "run_id": ti.run_id})
        print(
            "Reconciled: {sent:,} measurements sent, {accepted:,} accepted, in {requests:,} requests "
            "over {slices} slices.".format(**summary)
        )
        return summary

    split = M3terSplitMeasurementsOperator(
        task_id="split", source=generate(), slice_count="{{ params.slices }}"
    )
    sliced = split.output
    ingest = M3terSubmitMeasurementsOperator.partial(
        task_id="ingest_slice",
        pool=POOL,
        concurrency=INGEST_CONCURRENCY,
        retries=2,
        retry_delay=dt.timedelta(seconds=10),
        emit_asset_events=False,  # reconcile emits one event for the whole load (see above)
        # one namespace for every slice: a row's uid follows its content, not the slice it is in
        uid_namespace="{{ dag.dag_id }}/ingest_slice/{{ run_id }}",
    ).expand(measurements_file=sliced)
    ensure_meter() >> ingest
    reconcile(sliced, ingest.output)


if __name__ == "__main__":  # pragma: no cover - a local demo: python example_m3ter_mapped_ingest.py
    from airflow.models.pool import Pool

    if Pool.get_pool(POOL) is None:
        Pool.create_or_update_pool(POOL, POOL_SLOTS, "m3ter ingest: 50 requests/s per Organization", False)
    dag.test()
