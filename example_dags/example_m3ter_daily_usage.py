"""Daily usage: push the day's measurements, then export that day back from m3ter (the README's example).

Each run covers one day, its data interval. On Airflow 3 a cron string or timedelta schedule has an
empty data interval (start == end), so the DAG names ``CronDataIntervalTimetable``, which gives the
interval a daily export needs on Airflow 2 and 3 alike. m3ter takes ISO-8601 date-times, which is what
``{{ data_interval_start | ts }}`` renders (``2026-01-01T00:00:00+00:00``); do not append a ``Z`` to
it (``+00:00Z`` is refused). Needs the ``m3ter_default`` connection and a Meter ``api_calls`` in the
Organization: m3ter answers 200 for usage of an unknown Meter, then refuses it (pass
``check_ingest_failures="warn"`` or ``"fail"`` to the submit operator to hear about that).
"""

# README: operators (this block is the README's, word for word; tests/test_readme.py checks that)
import datetime as dt
import os
import tempfile

from airflow.providers.common.compat.sdk import DAG, task
from airflow.timetables.interval import CronDataIntervalTimetable

from m3ter_provider.operators.m3ter import (
    M3terDataExportOperator,
    M3terOperator,
    M3terSubmitMeasurementsOperator,
)

OUTPUT_DIR = os.environ.get("M3TER_DEMO_OUTPUT", tempfile.gettempdir())  # where exports are downloaded

with DAG(
    dag_id="example_m3ter_daily_usage",
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),  # each run: the day before it
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    catchup=False,
    tags=["m3ter", "example"],
):

    @task
    def build(data_interval_start=None) -> list[dict]:
        ts = data_interval_start.isoformat()
        return [{"account": "acme", "meter": "api_calls", "ts": ts, "measure": {"calls": 42}}]

    push = M3terSubmitMeasurementsOperator(task_id="push_usage", measurements=build())
    export = M3terDataExportOperator(
        task_id="export_usage",
        source_type="USAGE",
        export_start_date="{{ data_interval_start | ts }}",  # 2026-01-01T00:00:00+00:00
        export_end_date="{{ data_interval_end | ts }}",
        destination=os.path.join(OUTPUT_DIR, "m3ter-usage-{{ ds }}.csv"),
        deferrable=True,
    )
    bills = M3terOperator(
        task_id="bills", endpoint="bills", query_params={"status": "PENDING"}, paginate=True
    )
    push >> export >> bills
# README: end
