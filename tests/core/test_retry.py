"""The one retry policy, on its own (no HTTP), and the framework-free core."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from m3ter_provider.core.retry import Failure, RetryPolicy, retry_after_seconds

NOW = 1_700_000_000.0


@pytest.mark.parametrize("status", [408, 425, 429, 503])
def test_unprocessed_statuses_are_retried_for_every_method(status):
    policy = RetryPolicy(max_retries=3)
    assert policy.retry_status(status, 0, idempotent=False)
    assert policy.retry_status(status, 2, idempotent=True)
    assert not policy.retry_status(status, 3, idempotent=True)  # retries used up


@pytest.mark.parametrize("status", [500, 502, 504])
def test_server_errors_are_retried_only_where_a_repeat_is_safe(status):
    policy = RetryPolicy()
    assert policy.retry_status(status, 0, idempotent=True)
    assert not policy.retry_status(status, 0, idempotent=False)


@pytest.mark.parametrize("status", [200, 301, 400, 401, 403, 404, 409, 422])
def test_other_statuses_are_final(status):
    assert not RetryPolicy().retry_status(status, 0, idempotent=True)


def test_failures_by_kind():
    policy = RetryPolicy(max_retries=1)
    assert policy.retry_failure(Failure.NOT_SENT, 0, idempotent=False)
    assert policy.retry_failure(Failure.NO_ANSWER, 0, idempotent=True)
    assert not policy.retry_failure(Failure.NO_ANSWER, 0, idempotent=False)
    assert not policy.retry_failure(Failure.INVALID, 0, idempotent=True)
    assert not policy.retry_failure(Failure.NOT_SENT, 1, idempotent=True)


def test_idempotency_by_method_unless_told():
    assert (
        RetryPolicy.idempotent("get") and RetryPolicy.idempotent("PUT") and RetryPolicy.idempotent("DELETE")
    )
    assert not RetryPolicy.idempotent("POST")
    assert RetryPolicy.idempotent("POST", True)  # measurement posts: idempotent by uid
    assert not RetryPolicy.idempotent("GET", False)


def test_backoff_is_exponential_with_full_jitter_and_capped():
    ceilings = []
    policy = RetryPolicy(
        backoff_base=0.5, backoff_max=30.0, uniform=lambda low, high: ceilings.append(high) or high
    )
    for attempt in range(8):
        policy.backoff(attempt)
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.backoff(10_000) == 30.0  # no overflow however many attempts
    real = RetryPolicy()
    assert all(0.0 <= real.backoff(3) <= 4.0 for _ in range(100))


def test_delay_prefers_retry_after_capped():
    policy = RetryPolicy(max_retry_after=300.0, uniform=lambda low, high: high)
    assert policy.delay(0, 7.0) == 7.0
    assert policy.delay(0, 10_000.0) == 300.0
    assert policy.delay(2, None) == 2.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("100000", 300.0),  # capped
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-Infinity", None),
        ("-5", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("Tue, 14 Nov 2023 22:13:00 GMT", 0.0),  # NOW: a date in the past or now means now
        ("Tue, 14 Nov 2023 22:14:00 GMT", 40.0),
        ("Tue, 14 Nov 2023 22:14:20 -0000", None),  # no time zone: not an HTTP date
        ("Tue, 99 Nov 2023 99:99:99 GMT", None),
    ],
)
def test_retry_after_is_finite_non_negative_and_capped_or_ignored(header, seconds):
    value = retry_after_seconds(header, now=NOW)
    assert value == seconds
    assert value is None or math.isfinite(value)
    assert retry_after_seconds({"Retry-After": header} if header is not None else {}, now=NOW) == seconds


def test_reauthentication_only_for_a_cached_token_and_only_once():
    assert RetryPolicy.reauthenticate(403, fresh_token=False, refreshed=False)
    assert RetryPolicy.reauthenticate(401, fresh_token=False, refreshed=False)
    assert not RetryPolicy.reauthenticate(403, fresh_token=True, refreshed=False)
    assert not RetryPolicy.reauthenticate(403, fresh_token=False, refreshed=True)
    assert not RetryPolicy.reauthenticate(404, fresh_token=False, refreshed=False)


def test_the_retry_policy_imports_no_http_library():
    code = (
        "import json, sys\n"
        "import m3ter_provider.core.retry\n"
        "heavy = ('requests', 'urllib3', 'httpx', 'airflow')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
