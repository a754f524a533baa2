"""jobs.py: export dates as m3ter's spec wants them, job ids safe in a path, deadlines kept to."""

from __future__ import annotations

import datetime as dt

import pendulum
import pytest

from m3ter_provider.core.jobs import BILL_JOB, DATA_EXPORT, data_export_body, export_date, wait_for_job
from m3ter_provider.errors import M3terConfigError, M3terJobTimeoutError


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("2026-01-01T05:30:00.250+05:30", "2026-01-01T05:30:00.250+05:30"),
        ("2026-01-01", "2026-01-01T00:00:00Z"),  # {{ ds }}
        ("2026-01-01 00:00:00+00:00", "2026-01-01T00:00:00+00:00"),  # str(datetime)
        (dt.date(2026, 1, 1), "2026-01-01T00:00:00Z"),
        (dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc), "2026-01-01T00:00:00+00:00"),
        (pendulum.datetime(2026, 1, 1, tz="Europe/Paris"), "2026-01-01T00:00:00+01:00"),
    ],
)
def test_export_dates_users_write_are_sent_as_rfc3339_with_an_offset(value, sent):
    body = data_export_body("USAGE", start_date=value, end_date="2026-02-01T00:00:00Z")
    assert body["startDate"] == sent
    assert dt.datetime.fromisoformat(body["startDate"].replace("Z", "+00:00")).utcoffset() is not None


@pytest.mark.parametrize(
    "value",
    ["2026-01-01T00:00:00+00:00Z", "yesterday", "2026-01-01T00:00:00", "2026-13-01", "2026-01-01T25:00:00Z",
     dt.datetime(2026, 1, 1), 20260101],
)  # fmt: skip
def test_other_export_dates_are_refused_naming_the_field(value):
    with pytest.raises(
        M3terConfigError, match=r"end_date .*RFC 3339 date-time with an offset|end_date .*timezone"
    ):
        data_export_body("USAGE", start_date="2026-01-01", end_date=value)
    with pytest.raises(M3terConfigError, match="start_date"):
        export_date(value, "start_date")


@pytest.mark.parametrize("job_id", ["", " ", ".", "..", "a/b", "a?b"])
def test_ids_that_would_change_the_path_are_refused(job_id):
    with pytest.raises(M3terConfigError, match="not a valid m3ter id"):
        DATA_EXPORT.path(job_id)
    with pytest.raises(M3terConfigError, match="not a valid m3ter id"):
        BILL_JOB.cancel(job_id)


def test_ids_are_quoted_into_the_path():
    assert DATA_EXPORT.path("abc#frag") == "dataexports/jobs/abc%23frag"
    assert DATA_EXPORT.path("...") == "dataexports/jobs/..."


class FakeClient:
    """Answers every poll RUNNING (or DONE from poll ``done_at``); ``sleep`` advances a fake clock."""

    def __init__(self, done_at: int | None = None) -> None:
        self.now = 1000.0
        self.polls: list[float] = []
        self.sleeps: list[float] = []
        self.done_at = done_at

    def request(self, method, path, **kwargs):
        self.polls.append(self.now)
        done = self.done_at is not None and len(self.polls) >= self.done_at
        return {"id": "j1", "status": "SUCCEEDED" if done else "RUNNING"}

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_wait_lasts_the_whole_timeout_and_polls_once_more_at_the_deadline():
    client = FakeClient()
    with pytest.raises(M3terJobTimeoutError, match="still RUNNING after 100 s"):
        wait_for_job(client, "dataexport", "j1", poll_interval=60, timeout=100, clock=lambda: client.now)
    assert client.polls == [1000.0, 1060.0, 1100.0]
    assert client.sleeps == [60, 40]


def test_a_job_final_at_the_deadline_poll_is_returned():
    client = FakeClient(done_at=3)
    job = wait_for_job(client, "dataexport", "j1", poll_interval=60, timeout=100, clock=lambda: client.now)
    assert job["status"] == "SUCCEEDED" and len(client.polls) == 3


def test_without_timeout_every_sleep_is_the_poll_interval():
    client = FakeClient(done_at=4)
    wait_for_job(client, "dataexport", "j1", poll_interval=7, clock=lambda: client.now)
    assert client.sleeps == [7, 7, 7]
