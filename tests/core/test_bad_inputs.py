"""Inputs that used to escape raw or pass silently: each now gets a named error from our family
before anything is sent (or, for a non-Latin-1 secret, works as m3ter documents)."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from m3ter_provider.core import jobs
from m3ter_provider.core.config import M3terSettings
from m3ter_provider.core.ingest import MeasurementFile, spool_measurements
from m3ter_provider.core.limits import check_poll_interval, check_timeout
from m3ter_provider.errors import M3terConfigError, M3terError, M3terValidationError


def sent(spool):
    return [row for i in range(len(spool)) for row in json.loads(spool.body(i))["measurements"]]


# ---------------------------------------------------------------- CSV records
@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\x1c", "\x1d", "\x1e"])
def test_a_quoted_csv_cell_holding_a_unicode_line_break_stays_one_row(tmp_path, char):
    path = tmp_path / "usage.csv"
    note = f"first{char}second"
    path.write_text(
        "account,meter,ts,measure.calls,other.note\n"
        f'acme,api_calls,2026-01-31T12:00:00Z,3,"{note}"\n'
        'acme,api_calls,2026-01-31T13:00:00Z,4,"multi\nline"\r\n',
        encoding="utf-8",
        newline="",
    )
    with spool_measurements(MeasurementFile(path), uid_namespace="ns") as spool:
        rows = sent(spool)
    assert [r["other"]["note"] for r in rows] == [note, "multi\nline"]
    assert [r["measure"]["calls"] for r in rows] == [3.0, 4.0]


def test_csv_line_numbers_still_name_the_bad_row(tmp_path):
    path = tmp_path / "usage.csv"
    path.write_text(
        'account,meter,ts,other.note\nacme,api_calls,2026-01-31T12:00:00Z,"a\u2028b"\nacme,api_calls,,x\n',
        encoding="utf-8",
    )
    with pytest.raises(M3terValidationError, match=r"usage.csv line 3: 'ts' is required"):
        spool_measurements(MeasurementFile(path), uid_namespace="ns")


# ---------------------------------------------------------------- datetime limits
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("ts", "0001-01-01T00:00:00+01:00"),
        ("ts", "0001-01-01T00:30:00+00:45"),
        ("ts", "9999-12-31T23:30:00-01:00"),
        ("ets", "9999-12-31T23:59:59-00:01"),
        ("ets", "0001-01-01T00:00:00+23:59"),
    ],
)
def test_a_date_time_outside_utcs_range_is_a_named_error(tmp_path, field, value):
    good = {"account": "a", "meter": "m", "ts": "2026-01-31T12:00:00Z"}
    row = {**good, field: value}
    with pytest.raises(M3terValidationError, match=rf"measurement #1: '{field}' .* is out of range"):
        spool_measurements([good, row], uid_namespace="ns")  # the second row: #1
    path = tmp_path / "usage.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(M3terValidationError, match=rf"usage.jsonl line 1: '{field}'"):
        spool_measurements(MeasurementFile(path), uid_namespace="ns")


def test_an_aware_datetime_object_at_the_limit_is_a_named_error():
    at_limit = dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with pytest.raises(M3terValidationError, match=r"measurement #0: 'ts' '0001-01-01T00:00:00\+02:00'"):
        spool_measurements([{"account": "a", "meter": "m", "ts": at_limit}], uid_namespace="ns")


def test_the_limits_themselves_in_utc_are_accepted():
    rows = [
        {"account": "a", "meter": "m", "ts": "0001-01-01T01:00:00+01:00"},
        {"account": "a", "meter": "m", "ts": "9999-12-31T22:00:00-01:00"},
    ]
    with spool_measurements(rows, uid_namespace="ns") as spool:
        assert [r["ts"] for r in sent(spool)] == ["0001-01-01T00:00:00Z", "9999-12-31T23:00:00Z"]


# ---------------------------------------------------------------- poll intervals and timeouts
BAD_INTERVALS = [0, 0.0, -1, -0.5, math.nan, math.inf, "10", "nan", True, None, [10], 0.001]


@pytest.mark.parametrize("value", BAD_INTERVALS)
def test_a_bad_poll_interval_is_refused(value):
    with pytest.raises(
        M3terConfigError, match=r"poll_interval .*: give the seconds to wait between two polls"
    ):
        check_poll_interval(value)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, -math.inf, "60", False, dt.timedelta(0)])
def test_a_bad_timeout_is_refused(value):
    with pytest.raises(M3terConfigError, match=r"timeout .*: give the most seconds to wait"):
        check_timeout(value)


def test_good_intervals_and_timeouts_pass():
    assert check_poll_interval(10) == 10.0
    assert check_poll_interval(dt.timedelta(seconds=30)) == 30.0
    assert check_timeout(None) is None
    assert check_timeout(dt.timedelta(minutes=2)) == 120.0


class _NoNetwork:
    """A client that fails the test if wait_for_job sends anything."""

    def request(self, *args, **kwargs):
        raise AssertionError("a request was sent")

    def sleep(self, seconds):
        raise AssertionError("slept")


@pytest.mark.parametrize(
    ("poll_interval", "timeout"), [(0, None), (-1, None), (math.nan, None), ("5", None), (1, math.nan)]
)
def test_wait_for_job_refuses_bad_intervals_before_polling(poll_interval, timeout):
    with pytest.raises(M3terConfigError, match=r"^(poll_interval|timeout) "):
        jobs.wait_for_job(_NoNetwork(), "billjob", "job-1", poll_interval=poll_interval, timeout=timeout)


def test_hook_wait_for_job_with_poll_interval_0_sends_nothing(m3ter_conn):
    from m3ter_provider.hooks.m3ter import M3terHook

    with pytest.raises(M3terConfigError, match="poll_interval 0"):
        M3terHook().wait_for_job("billjob", "job-1", poll_interval=0)
    assert not any("billjobs" in key for key in m3ter_conn.stats()["requests"])


# ---------------------------------------------------------------- connection URLs and secrets
def settings(**changes):
    fields = {"login": "key", "password": "secret", "host": None, "extra": {"org_id": "o"}}
    fields.update(changes)
    return M3terSettings.from_connection_fields("m3ter_default", **fields)


@pytest.mark.parametrize(
    ("where", "url"),
    [
        ("host", "https://someone:hunter2-secret@api.m3ter.com"),
        ("host", "someone:hunter2-secret@api.m3ter.com"),
        ("host", "https://hunter2-secret@api.m3ter.com:8443/x"),
        ("ingest_url", "https://someone:hunter2-secret@ingest.m3ter.com"),
        ("token_url", "https://someone:hunter2-secret@api.m3ter.com/oauth/token"),
        ("console_url", "http://someone:hunter2-secret@console.m3ter.com"),
    ],
)
def test_a_url_with_user_info_is_refused_without_echoing_it(where, url):
    changes = {"host": url} if where == "host" else {"extra": {"org_id": "o", where: url}}
    with pytest.raises(M3terConfigError) as err:
        settings(**changes)
    message = str(err.value)
    assert "hunter2" not in message and "someone" not in message
    assert f"{'host' if where == 'host' else repr(where)} carries user info" in message
    assert "'m3ter_default'" in message


def test_an_at_sign_in_a_urls_path_is_not_user_info():
    assert settings(host="https://api.m3ter.com/a@b").api_url == "https://api.m3ter.com/a@b"


@pytest.mark.parametrize("secret", ["sécret-Ärger", "秘密-€-ключ", "zero\u200bwidth"])
def test_a_secret_outside_latin_1_is_sent_as_utf8_like_m3ters_own_example(
    m3ter_emulator, monkeypatch, secret
):
    """m3ter's API docs build the Basic header from UTF-8 (RFC 7617's charset): a secret of any
    characters gets a token, instead of requests' UnicodeEncodeError."""
    from m3ter_provider.hooks.m3ter import M3terHook
    from m3ter_provider.testing.server import M3terEmulator

    with M3terEmulator(access_key_id="ключ-id", api_secret=secret) as emulator:
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", emulator.airflow_conn_json())
        assert M3terHook().get("meters")["data"] == []
        assert emulator.stats()["token_exchanges"] == 1


def test_a_wrong_non_latin_1_secret_is_an_auth_error_not_unicode(m3ter_conn, monkeypatch):
    from m3ter_provider.errors import M3terAuthError
    from m3ter_provider.hooks.m3ter import M3terHook

    conn = json.loads(m3ter_conn.airflow_conn_json())
    monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps({**conn, "password": "wrong-€"}))
    with pytest.raises(M3terAuthError) as err:
        M3terHook().get("meters")
    assert "wrong-€" not in str(err.value)


# ---------------------------------------------------------------- query parameters
@pytest.mark.parametrize(
    "params",
    [{"filter": {"code": "x"}}, {"ids": [{"id": 1}]}, {"ids": [["a", "b"]]}],
)
def test_a_nested_query_parameter_is_refused_before_sending(m3ter_conn, params):
    from m3ter_provider.hooks.m3ter import M3terHook

    key = next(iter(params))
    with pytest.raises(
        M3terConfigError, match=rf"query parameter '{key}' is a .*: m3ter's query parameters are flat"
    ):
        M3terHook().get("meters", params=params)
    assert "GET /organizations/{orgId}/meters" not in m3ter_conn.stats()["requests"]


def test_flat_query_parameters_still_work(m3ter_conn):
    from m3ter_provider.hooks.m3ter import M3terHook

    assert M3terHook().get("meters", params={"codes": ["a", "b"], "pageSize": 5, "x": None})["data"] == []


# ---------------------------------------------------------------- the error family
def test_every_error_here_is_in_our_family():
    assert issubclass(M3terConfigError, M3terError) and issubclass(M3terValidationError, M3terError)
