"""M3terConsoleLink: a task's extra link to the m3ter Console.

m3ter documents no deep links into its Console, so the link opens the Console named by the
connection's ``console_url`` (default ``https://console.m3ter.com``): the right Console for the
environment the task used. Where :mod:`m3ter_provider.core.jobs` knows a Console page for a job kind
(``console_path``), the link goes to that page instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from m3ter_provider.core.jobs import get_kind

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, Context, TaskInstanceKey

#: the XCom key holding the link a task computed while it ran
CONSOLE_LINK_XCOM_KEY = "m3ter_console_url"
#: the XCom key holding the id of the job a task started (pushed as soon as it is known)
JOB_ID_XCOM_KEY = "m3ter_job_id"


def console_link(console_url: str, kind: str | None = None, job_id: str | None = None) -> str:
    """The Console URL for a job (its page where ``console_path`` is known, else the Console)."""
    base = console_url.rstrip("/")
    if kind and job_id:
        path = get_kind(kind).console_path
        if path:
            return f"{base}/{path.format(job_id=job_id).lstrip('/')}"
    return base + "/"


def persist_console_link(
    context: Context, console_url: str, kind: str | None = None, job_id: Any = None
) -> str:
    """Store the task's Console link in XCom, where :class:`M3terConsoleLink` reads it."""
    url = console_link(console_url, kind, None if job_id is None else str(job_id))
    context["ti"].xcom_push(key=CONSOLE_LINK_XCOM_KEY, value=url)
    return url


class M3terConsoleLink(BaseOperatorLink):
    """Open the m3ter Console the task talked to (the job's page where one is known)."""

    name = "m3ter Console"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        return XCom.get_value(key=CONSOLE_LINK_XCOM_KEY, ti_key=ti_key) or ""
