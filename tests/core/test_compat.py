"""m3ter_provider._compat: the official compat layer's names where it has them, else Airflow's own."""

from __future__ import annotations

from airflow.providers.common.compat import sdk

from m3ter_provider import _compat


def test_names_come_from_the_official_layer_when_it_has_them():
    if "mask_secret" in sdk.__all__:
        assert _compat.airflow_mask_secret is sdk.mask_secret
    if "ResumableJobMixin" in sdk.__all__:
        assert _compat.ResumableJobMixin is sdk.ResumableJobMixin


def test_mask_secret_really_masks():
    from airflow.providers.common.compat.sdk import redact

    _compat.mask_secret("compat-test-secret-value")
    assert "compat-test-secret-value" not in str(redact("x compat-test-secret-value y"))


def test_mask_secret_lets_one_thread_at_a_time_into_airflow(monkeypatch):
    """Airflow 3.0/3.1 tell the supervisor over an unguarded channel: concurrent calls can hang a task."""
    import threading
    import time

    inside, most, calls = [0], [0], []
    guard = threading.Lock()

    def airflow_mask(secret, name=None):
        with guard:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.02)
        calls.append(secret)
        with guard:
            inside[0] -= 1

    monkeypatch.setattr(_compat, "airflow_mask_secret", airflow_mask)
    threads = [threading.Thread(target=_compat.mask_secret, args=(f"s{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [f"s{i}" for i in range(8)]
    assert most[0] == 1


def test_the_stand_in_submits_polls_and_returns_the_result():
    calls = []

    class Base:
        def __init__(self, **kwargs):
            calls.append(("init", kwargs))

    class Job(_compat._ResumableJobStandIn, Base):
        def submit_job(self, context):
            calls.append(("submit", context))
            return "job-1"

        def poll_until_complete(self, job_id, context):
            calls.append(("poll", job_id))

        def get_job_result(self, job_id, context):
            return {"job_id": job_id}

    job = Job(durable=True, task_id="t")
    assert job.durable is False
    assert job.execute_resumable("ctx") == {"job_id": "job-1"}
    assert calls == [("init", {"task_id": "t"}), ("submit", "ctx"), ("poll", "job-1")]
