"""Issue 13, the hook/ingest side: every path a user takes bills each event exactly once.

Each reproduction from the issue runs against the emulator over HTTP; the task-level ones run under
``dag.test()`` (the DAG files are tests/dag_files/m3ter_hook_retry.py and m3ter_permanent_error.py).
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil

import pytest

from m3ter_provider.core.ingest import uid_for
from m3ter_provider.core.tokens.cache import TOKEN_CACHE
from m3ter_provider.core.tokens.store import FileTokenStore
from m3ter_provider.errors import (
    M3terAPIError,
    M3terAuthError,
    M3terConfigError,
    M3terError,
    M3terIngestError,
    M3terRateLimitError,
    M3terRequestError,
    M3terTransportError,
    M3terValidationError,
)
from m3ter_provider.hooks import _namespaces
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.operators.m3ter import M3terSubmitMeasurementsOperator
from tests.operators.helpers import in_task, make_context, measurement, set_connection

MEASUREMENTS = "POST /organizations/{orgId}/measurements"


@pytest.fixture(autouse=True)
def _fresh_call_counts():
    _namespaces.forget()
    yield
    _namespaces.forget()


def stored(emu) -> int:
    return emu.stats()["measurements_stored"]


@pytest.fixture
def logs(caplog, capsys):
    """Everything logged so far: the hook logs through Airflow's logger (printed by structlog on 3.x)."""
    caplog.set_level(logging.INFO)
    seen: list[str] = []

    def text() -> str:
        seen.append(capsys.readouterr().out)
        return caplog.text + "".join(seen)

    return text


# ---------------------------------------------------------------- the hook knows its task (dag.test)
def test_hook_from_a_task_retried_after_sending_stores_each_row_once(emu, airflow_db, monkeypatch):
    """The issue's first reproduction: 2,500 rows, the task fails after sending and is retried."""
    from tests.dagrun import load_dag, run_dag

    monkeypatch.setenv("M3TER_TEST_ROWS", "2500")
    run = run_dag(load_dag("m3ter_hook_retry"))
    ti = run.dag_run.get_task_instance("push")
    assert run.state == "success" and ti.try_number == 2
    stats = emu.stats()
    assert stats["measurements_received"] == 5000  # both tries sent everything
    assert stats["measurements_stored"] == 2500  # and m3ter kept each row once
    # the uids are the operator's: [dag_id, task_id, run_id, map_index]
    namespace = json.dumps(["m3ter_hook_retry", "push", run.dag_run.run_id, -1])
    first = emu.measurements()[0]
    row = {k: first[k] for k in ("account", "meter", "ts", "measure")}
    assert first["uid"] == uid_for(namespace, row)


def test_two_calls_with_an_identical_row_store_two_and_a_retry_still_two(emu, airflow_db, monkeypatch):
    from tests.dagrun import load_dag, run_dag

    monkeypatch.setenv("M3TER_TEST_ROWS", "1")
    monkeypatch.setenv("M3TER_TEST_CALLS", "2")
    run = run_dag(load_dag("m3ter_hook_retry"))
    assert run.state == "success" and run.dag_run.get_task_instance("push").try_number == 2
    stats = emu.stats()
    assert stats["measurements_received"] == 4
    assert stats["measurements_stored"] == 2


# ---------------------------------------------------------------- permanent errors (dag.test)
@pytest.mark.parametrize(("failure", "tries"), [("invalid", 1), ("refused", 1), ("unavailable", 3)])
def test_permanent_errors_run_once_transient_ones_spend_the_retries(
    emu, airflow_db, monkeypatch, failure, tries
):
    from tests.dagrun import load_dag, run_dag

    monkeypatch.setenv("M3TER_TEST_FAILURE", failure)
    set_connection(monkeypatch, emu, max_retries=0)
    if failure == "refused":
        conn = json.loads(emu.airflow_conn_json())
        conn["password"] = "not-the-secret"
        monkeypatch.setenv("AIRFLOW_CONN_M3TER_DEFAULT", json.dumps(conn))
    if failure == "unavailable":
        emu.add_fault(MEASUREMENTS, status=503, times=None)
    run = run_dag(load_dag("m3ter_permanent_error"))
    assert run.state == "failed"
    assert run.dag_run.get_task_instance("push").try_number == tries
    posts = emu.stats()["requests"].get(MEASUREMENTS, 0)
    assert posts == {"invalid": 0, "refused": 0, "unavailable": 3}[failure]
    assert stored(emu) == 0


def test_a_permanent_error_is_still_its_own_class_and_an_airflow_fail_exception(emu):
    from airflow.providers.common.compat.sdk import AirflowFailException

    with pytest.raises(M3terValidationError) as err:
        M3terHook().submit_measurements([{"account": "acme", "meter": "api_calls"}])
    assert isinstance(err.value, AirflowFailException)
    assert "'ts' is required" in str(err.value)
    again = pickle.loads(pickle.dumps(err.value))  # noqa: S301 - our own bytes
    assert isinstance(again, M3terValidationError) and isinstance(again, AirflowFailException)
    assert str(again) == str(err.value)


def test_a_transient_error_is_not_an_airflow_fail_exception(emu, monkeypatch):
    from airflow.providers.common.compat.sdk import AirflowFailException

    set_connection(monkeypatch, emu, max_retries=0)
    emu.add_fault(MEASUREMENTS, status=503, times=None)
    with pytest.raises(M3terIngestError) as err:
        M3terHook().submit_measurements([measurement(1)])
    assert not err.value.permanent and not isinstance(err.value, AirflowFailException)


def test_the_operator_fails_a_permanent_error_without_retry(emu):
    from airflow.providers.common.compat.sdk import AirflowFailException

    op = M3terSubmitMeasurementsOperator(task_id="push", measurements=[{"account": "acme"}])
    with pytest.raises(AirflowFailException, match=r"'meter' is required|'ts' is required"):
        op.execute(make_context(op))


@pytest.mark.parametrize(
    ("error", "permanent"),
    [
        (M3terConfigError("x"), True),
        (M3terValidationError("x"), True),
        (M3terAuthError("x", method="POST", path="/oauth/token", status=401), True),
        (M3terAPIError("x", method="GET", path="/p", status=400), True),
        (M3terAPIError("x", method="GET", path="/p", status=404), True),
        (M3terAPIError("x", method="GET", path="/p", status=408), False),
        (M3terAPIError("x", method="GET", path="/p", status=409), False),
        (M3terRateLimitError("x", method="GET", path="/p", status=429), False),
        (M3terAPIError("x", method="GET", path="/p", status=500), False),
        (M3terAPIError("x", method="GET", path="/p", status=503), False),
        (M3terTransportError("x", method="GET", path="/p"), False),
        (M3terRequestError("x", method="GET", path="/p"), False),
        (M3terError("x"), False),
    ],
)
def test_which_errors_are_permanent(error, permanent):
    assert error.permanent is permanent
    counts = dict(accepted_measurements=0, accepted_batches=0, total_measurements=1, total_batches=1)
    wrapped = M3terIngestError(error, uid_namespace="n", **counts)
    assert wrapped.permanent is permanent


# ---------------------------------------------------------------- namespaces in a task, given, random
def test_in_a_task_the_nth_call_maps_onto_the_nth_call_of_the_retry(emu, logs):
    hook = M3terHook()
    for try_number in (1, 2):
        with in_task("push", try_number=try_number):
            first = hook.submit_measurements([measurement(1)])
            second = hook.submit_measurements([measurement(1)])
        base = json.dumps(["test_dag", "push", "manual__1", -1])
        assert (first["uid_namespace"], second["uid_namespace"]) == (base, base + "#1")
    assert emu.stats()["measurements_received"] == 4
    assert stored(emu) == 2
    assert "from the task instance" in logs()


def test_outside_a_task_each_call_has_its_own_random_namespace(emu, logs):
    hook = M3terHook()
    first = hook.submit_measurements([measurement(1)])
    second = hook.submit_measurements([measurement(1)])
    assert first["uid_namespace"].startswith("random:") and first["uid_namespace"] != second["uid_namespace"]
    assert stored(emu) == 2  # a script calling twice sends two events, as it asked
    assert "random: outside a task" in logs()


def test_a_given_namespace_is_used_as_given_and_its_reuse_is_warned(emu, logs):
    hook = M3terHook()
    hook.submit_measurements([measurement(1)], uid_namespace="hourly")
    assert "already used" not in logs()
    with in_task("push"):
        hook.submit_measurements([measurement(1)], uid_namespace="hourly")
        assert "already used" not in logs()  # another scope (this task try)
        hook.submit_measurements([measurement(1), measurement(2)], uid_namespace="hourly")
    assert "uid_namespace 'hourly' was already used by an earlier call of this task try" in logs()
    assert "stores such a row once" in logs()
    assert stored(emu) == 2  # the identical row is one event under one namespace: as documented


def test_resuming_a_partial_failure_in_a_task_with_the_reported_namespace_stores_exactly_the_rest(
    emu, monkeypatch
):
    set_connection(monkeypatch, emu, max_retries=0)
    rows = [measurement(i) for i in range(2500)]
    emu.add_fault(MEASUREMENTS, delay=0.01, times=1)  # the first batch lands
    emu.add_fault(MEASUREMENTS, status=500, times=1)  # the second fails
    hook = M3terHook()
    with in_task("push"):
        with pytest.raises(M3terIngestError) as err:
            hook.submit_measurements(rows, concurrency=1)
        assert err.value.accepted_measurements == 1000
        assert err.value.uid_namespace == json.dumps(["test_dag", "push", "manual__1", -1])
        assert repr(err.value.uid_namespace) in str(err.value)
        hook.submit_measurements(rows, uid_namespace=err.value.uid_namespace, concurrency=1)
    assert stored(emu) == 2500


# ---------------------------------------------------------------- caller uids, mutated generators
def test_two_rows_with_one_caller_uid_and_different_content_are_refused_before_sending(emu):
    rows = [measurement(i) for i in range(5)]
    rows[1]["uid"] = "dup"
    rows[3]["uid"] = "dup"
    with pytest.raises(M3terValidationError) as err:
        M3terHook().submit_measurements(rows)
    text = str(err.value)
    assert "measurement #3" in text and "position 1" in text and "'dup'" in text
    assert emu.stats()["requests"].get(MEASUREMENTS, 0) == 0


def test_a_caller_uid_repeated_with_the_same_content_far_apart_is_sent_and_stored_once(emu, logs):
    rows = [measurement(i) for i in range(2500)]
    rows[10] = {**measurement(10), "uid": "same"}
    rows[2400] = {**measurement(10), "uid": "same"}
    summary = M3terHook().submit_measurements(rows)
    assert summary["measurements"] == 2500
    assert stored(emu) == 2499  # m3ter keeps one per uid: the caller said they are one event
    assert "1 measurement repeated the uid and the content" in logs()


def test_a_caller_uid_clash_across_chunks_is_found(emu):
    rows = [measurement(i) for i in range(1500)]
    rows[2]["uid"] = "u"
    rows[1400]["uid"] = "u"
    with pytest.raises(M3terValidationError, match=r"measurement #1400: uid 'u' .* position 2"):
        M3terHook().submit_measurements(rows)


def test_a_generator_re_yielding_one_mutated_dict_bills_each_value(emu):
    def rows():
        row = {"account": "acme", "meter": "api_calls", "ts": "2026-01-01T00:00:00Z"}
        row["measure"] = {"calls": 0.0}
        for value in range(1, 6):
            row["measure"]["calls"] = float(value)  # the nested map too
            row["ts"] = f"2026-01-01T00:00:0{value}Z"
            yield row

    M3terHook().submit_measurements(rows())
    assert sorted(m["measure"]["calls"] for m in emu.measurements()) == [1.0, 2.0, 3.0, 4.0, 5.0]


# ---------------------------------------------------------------- every failure is an M3terIngestError
def test_a_bug_underneath_is_an_ingest_error_with_what_was_accepted(emu, monkeypatch):
    from m3ter_provider.core.client import M3terClient

    real_send = M3terClient.send
    calls = {"n": 0}

    def send(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyError("a bug")
        return real_send(self, *args, **kwargs)

    monkeypatch.setattr(M3terClient, "send", send)
    rows = [measurement(i) for i in range(3500)]
    with pytest.raises(M3terIngestError) as err:
        M3terHook().submit_measurements(rows, uid_namespace="bug", concurrency=1)
    assert isinstance(err.value.cause, KeyError) and "KeyError" in str(err.value)
    assert err.value.accepted_measurements == 2000 and err.value.uid_namespace == "bug"
    assert not err.value.permanent
    monkeypatch.setattr(M3terClient, "send", real_send)
    M3terHook().submit_measurements(rows, uid_namespace="bug")
    assert stored(emu) == 3500


def test_keyboard_interrupt_is_not_wrapped(emu, monkeypatch):
    from m3ter_provider.core.client import M3terClient

    def send(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(M3terClient, "send", send)
    with pytest.raises(KeyboardInterrupt):
        M3terHook().submit_measurements([measurement(1)], concurrency=1)


# ---------------------------------------------------------------- the worker token cache
@pytest.fixture
def shared_dir(monkeypatch, tmp_path):
    directory = tmp_path / "tokens"
    monkeypatch.setenv("AIRFLOW__M3TER__TOKEN_CACHE_DIR", str(directory))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "")
    yield directory
    TOKEN_CACHE.set_shared_store(None)


def test_token_dir_removed_while_the_token_expires_drops_it_and_carries_on(emu, shared_dir, logs):
    """The issue's reproduction: a tmp cleaner removes the directory, then m3ter refuses the token."""
    hook = M3terHook()
    hook.submit_measurements([measurement(0)], uid_namespace="tokens")
    before = hook.get_token()
    shutil.rmtree(shared_dir)
    emu.expire_tokens()  # m3ter now answers that token with 403
    summary = hook.submit_measurements([measurement(i) for i in range(1, 2001)], uid_namespace="tokens")
    assert summary["measurements"] == 2000
    assert hook.get_token() != before  # the refused token is not in memory any more
    assert stored(emu) == 2001
    assert emu.stats()["token_exchanges"] == 2
    assert shared_dir.is_dir()  # made again for the next process


@pytest.mark.parametrize("replacement", ["directory", "symlink", "garbage"])
def test_a_token_file_replaced_by_something_else_is_ignored(emu, shared_dir, replacement):
    hook = M3terHook()
    hook.get("organizationconfig")
    [token_file] = [p for p in shared_dir.iterdir() if p.suffix == ".token"]
    token_file.unlink()
    if replacement == "directory":
        token_file.mkdir()
    elif replacement == "symlink":
        token_file.symlink_to(shared_dir / "elsewhere")
    else:
        token_file.write_bytes(b"\x00not json")
    TOKEN_CACHE.clear()  # a new task process
    emu.expire_tokens()
    assert M3terHook().submit_measurements([measurement(1)], uid_namespace="x")["measurements"] == 1


def test_the_store_discards_quietly_when_its_directory_is_gone(tmp_path):
    store = FileTokenStore(tmp_path / "tokens")
    shutil.rmtree(tmp_path / "tokens")
    store.discard("ab" * 32, "some-token")  # nothing to drop, no error
    value, _ = store.fetch("ab" * 32, lambda: ("t", 9e9), valid_until=0)
    assert value == "t" and (tmp_path / "tokens").is_dir()
