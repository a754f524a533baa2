"""A shorter fault soak: faults, token expiry, SIGKILL part-way and a retry store every measurement once."""

from __future__ import annotations

import pytest

from tests.e2e import load_benchmark

pytestmark = pytest.mark.e2e


def test_faults_expiry_and_a_killed_task_lose_and_double_nothing():
    soak = load_benchmark("soak")
    result = soak.soak(6_000, fault_rate=0.2, kill_at=0.4, seed=7)
    assert result["killed_part_way"], result  # the first run was cut off, not finished
    assert 0 < result["stored_when_killed"] < 6_000
    assert result["retry_exit"] == 0, result["retry_result"]
    assert result["stored"] == result["distinct_uids"] == 6_000  # none lost, none twice
    assert result["token_expiries"] == 2
    assert sum(result["faults_injected"].values()) > 0
    assert result["ingest_answers"].get("200", 0) >= result["retry_result"]["requests"]
