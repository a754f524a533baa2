"""M3terJobTrigger: wait for an m3ter job in the triggerer, so no worker slot is held."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from m3ter_provider.client import RETRY_STATUSES, retry_after_seconds
from m3ter_provider.errors import M3terError, M3terTransportError, m3ter_message
from m3ter_provider.hooks.m3ter import M3terHook
from m3ter_provider.jobs import get_kind

if TYPE_CHECKING:
    import httpx  # imported when the trigger runs, not when a DAG file is parsed

#: answers after which a poll is worth repeating: the client's retry statuses, plus 408 and 425
TRANSIENT_STATUSES = RETRY_STATUSES | {408, 425}
#: the longest pause between two polls after transient errors, in seconds
MAX_BACKOFF = 60.0


class _Transient(Exception):
    """A poll that may well succeed if tried again (429, 5xx, no answer)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class M3terJobTrigger(BaseTrigger):
    """Poll an m3ter job with ``httpx`` until it is final, then fire one event.

    The event's payload is ``{"status": "success" | "error", "kind", "job_id", "job_status",
    "message", "job"}``: ``success`` when the job reached a done state, ``error`` when it failed, was
    cancelled, passed ``end_time`` (then ``"timed_out": True``) or could not be read. Errors that
    may pass (HTTP 429 and 5xx, a dropped connection, a timeout) are retried with backoff, up to
    ``max_transient_errors`` in a row; a refused token (401/403) is exchanged for a fresh one once.
    The token comes from the provider's process-wide cache, so triggers share it.

    :param kind: the job kind: ``"dataexport"``, ``"billjob"``, ``"statementjob"`` or ``"fileupload"``.
    :param job_id: the job's id.
    :param m3ter_conn_id: the m3ter connection id.
    :param poll_interval: seconds between two polls.
    :param end_time: a UNIX timestamp after which the trigger stops waiting (``None``: no limit).
    :param max_transient_errors: transient poll errors in a row before the trigger gives up.
    :param cancel_on_kill: cancel the job when a user kills the deferred task (bill and statement
        jobs; Airflow 3.3+ calls ``on_kill`` on triggers).
    """

    def __init__(
        self,
        kind: str,
        job_id: str,
        m3ter_conn_id: str = M3terHook.default_conn_name,
        poll_interval: float = 10.0,
        end_time: float | None = None,
        max_transient_errors: int = 10,
        cancel_on_kill: bool = False,
    ) -> None:
        super().__init__()
        self.kind = get_kind(kind).name
        self.job_id = str(job_id)
        self.m3ter_conn_id = m3ter_conn_id
        self.poll_interval = float(poll_interval)
        self.end_time = None if end_time is None else float(end_time)
        self.max_transient_errors = int(max_transient_errors)
        self.cancel_on_kill = bool(cancel_on_kill)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "kind": self.kind,
                "job_id": self.job_id,
                "m3ter_conn_id": self.m3ter_conn_id,
                "poll_interval": self.poll_interval,
                "end_time": self.end_time,
                "max_transient_errors": self.max_transient_errors,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    def _event(self, status: str, message: str, job: Any = None, **extra: Any) -> TriggerEvent:
        job_kind = get_kind(self.kind)
        return TriggerEvent(
            {
                "status": status,
                "kind": self.kind,
                "job_id": self.job_id,
                "job_status": job_kind.status(job) if isinstance(job, dict) else None,
                "message": message,
                "job": job if isinstance(job, dict) else None,
                **extra,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        job_kind = get_kind(self.kind)
        name = f"m3ter {job_kind.title} {self.job_id}"
        import httpx

        try:
            hook = M3terHook(m3ter_conn_id=self.m3ter_conn_id)
            client = await hook.aget_client()
            url = client.url(job_kind.path(self.job_id))
            timeout = httpx.Timeout(client.settings.timeout, connect=min(10.0, client.settings.timeout))
            headers = {"User-Agent": client.user_agent, "Accept": "application/json"}
            async with httpx.AsyncClient(timeout=timeout, headers=headers, follow_redirects=False) as http:
                errors_in_row = 0
                last_status: str | None = None
                while True:
                    try:
                        job = await self._get(http, hook, url)
                    except _Transient as exc:
                        errors_in_row += 1
                        if errors_in_row > self.max_transient_errors:
                            yield self._event(
                                "error",
                                f"Gave up polling {name} after {errors_in_row} transient errors in a row; "
                                f"the last: {exc}.",
                            )
                            return
                        delay = self._backoff(errors_in_row, exc.retry_after)
                        self.log.warning("Polling %s: %s; polling again in %.1f s.", name, exc, delay)
                        await asyncio.sleep(delay)
                        continue
                    errors_in_row = 0
                    status = job_kind.status(job)
                    if status != last_status:
                        self.log.info("%s is %s.", name, status)
                        last_status = status
                    outcome = job_kind.outcome(job)
                    if outcome == "done":
                        yield self._event("success", f"{name} finished {status}.", job)
                        return
                    if outcome == "failed":
                        yield self._event("error", f"{name} ended {status}.", job)
                        return
                    if self.end_time is not None and time.time() + self.poll_interval > self.end_time:
                        yield self._event(
                            "error",
                            f"{name} was still {status} when the wait timed out.",
                            job,
                            timed_out=True,
                        )
                        return
                    await asyncio.sleep(self.poll_interval)
        except M3terError as exc:
            yield self._event("error", f"Polling {name} failed: {exc}")
        except Exception as exc:
            yield self._event("error", f"Polling {name} failed: {type(exc).__name__}: {exc}")

    async def _get(self, http: httpx.AsyncClient, hook: M3terHook, url: str) -> dict[str, Any]:
        """One authenticated GET; a refused token is exchanged once; transient trouble raises _Transient."""
        import httpx

        refreshed = False
        while True:
            try:
                token = await asyncio.to_thread(hook.get_token)
            except M3terTransportError as exc:  # the exchange's own retries ran out: still transient
                raise _Transient(f"no answer from m3ter's token endpoint ({exc.path})") from None
            try:
                response = await http.get(url, headers={"Authorization": f"Bearer {token}"})
            except httpx.TimeoutException:
                raise _Transient("m3ter did not answer in time") from None
            except httpx.TransportError as exc:
                raise _Transient(f"no answer from m3ter ({type(exc).__name__})") from None
            if response.status_code in (401, 403) and not refreshed:
                # off the event loop: with [m3ter] token_cache_dir this also locks and edits a file
                await asyncio.to_thread(hook.invalidate_token, token)
                refreshed = True
                continue
            if response.status_code in TRANSIENT_STATUSES:
                raise _Transient(
                    f"m3ter answered HTTP {response.status_code}", retry_after_seconds(response.headers)
                )
            body = _json(response)
            if not response.is_success:
                raise M3terError(
                    f"GET {response.url.path}: m3ter answered HTTP {response.status_code}"
                    + (f"; m3ter said: {m3ter_message(body)!r}" if m3ter_message(body) else "")
                    + (
                        f". Check the connection {self.m3ter_conn_id!r} and the job id."
                        if response.status_code in (401, 403, 404)
                        else "."
                    )
                )
            if not isinstance(body, dict):
                raise M3terError(f"GET {response.url.path}: m3ter answered without a job object.")
            return body

    def _backoff(self, errors_in_row: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_BACKOFF)
        ceiling = min(MAX_BACKOFF, max(self.poll_interval, 0.1) * 2 ** (errors_in_row - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def on_kill(self) -> None:
        """Cancel the job when a user kills the deferred task (only with ``cancel_on_kill``)."""
        job_kind = get_kind(self.kind)
        if not self.cancel_on_kill or job_kind.cancel_path is None:
            return
        hook = M3terHook(m3ter_conn_id=self.m3ter_conn_id)
        await hook.aget_client()
        self.log.info("Cancelling m3ter %s %s.", job_kind.title, self.job_id)
        await asyncio.to_thread(hook.cancel_job, job_kind, self.job_id)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
