"""Two names the provider needs that the last common-compat release for Python 3.10 lacks.

Every other Airflow name comes from :mod:`airflow.providers.common.compat.sdk`. On Python 3.11+
the provider requires common-compat >= 1.23, which has both names, and this module only hands them
on. Python 3.10 can install common-compat up to 1.20, which has neither ``mask_secret`` nor
``ResumableJobMixin``: there they are found where common-compat 1.23 itself finds them (the same
module paths), or, for the mixin on Airflow below 3.3, a stand-in with the stand-in's behaviour.
"""

from __future__ import annotations

import importlib
import os
import threading
from typing import Any

from airflow.providers.common.compat import sdk as _sdk

#: where common-compat 1.23 looks for mask_secret, newest Airflow first
_MASK_SECRET_MODULES = (
    "airflow.sdk.log",
    "airflow.sdk.execution_time.secrets_masker",
    "airflow.utils.log.secrets_masker",
)


def _from_official_layer(name: str) -> Any:
    return getattr(_sdk, name) if name in getattr(_sdk, "__all__", ()) else None


def _first_attribute(name: str, modules: tuple[str, ...]) -> Any:
    for module_name in modules:
        try:
            value = getattr(importlib.import_module(module_name), name, None)
        except ImportError:
            continue
        if value is not None:
            return value
    raise ImportError(f"none of {modules} provides {name}")


class _ResumableJobStandIn:
    """Airflow < 3.3 with common-compat < 1.23: no task state store, so every try submits a new job.

    The same behaviour as common-compat 1.23's stand-in for Airflow below 3.3.
    """

    external_id_key: str = "remote_job_id"

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("durable", None)
        super().__init__(**kwargs)
        self.durable = False

    def execute_resumable(self, context: Any) -> Any:
        external_id = self.submit_job(context)  # type: ignore[attr-defined]
        self.poll_until_complete(external_id, context)  # type: ignore[attr-defined]
        return self.get_job_result(external_id, context)  # type: ignore[attr-defined]


#: Airflow's own mask_secret (the official layer's, else where common-compat 1.23 finds it)
airflow_mask_secret = _from_official_layer("mask_secret") or _first_attribute(
    "mask_secret", _MASK_SECRET_MODULES
)
_mask_lock = threading.Lock()


def mask_secret(secret: Any, name: str | None = None) -> None:
    """Airflow's ``mask_secret``, one thread at a time.

    In a task process Airflow 3 also tells the task's supervisor, over a channel that Airflow 3.0
    and 3.1 do not guard: two threads sending at once can read each other's answers and hang the
    task for good (seen with four ingest threads meeting a new token together). The provider's
    threads (ingest batches in flight, the trigger's worker threads) therefore mask through here.
    """
    with _mask_lock:
        airflow_mask_secret(secret, name)


def _new_mask_lock_in_child() -> None:
    global _mask_lock
    _mask_lock = threading.Lock()  # a fork while another thread masked must not leave it held


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_new_mask_lock_in_child)


ResumableJobMixin = _from_official_layer("ResumableJobMixin")
if ResumableJobMixin is None:
    try:
        ResumableJobMixin = _first_attribute("ResumableJobMixin", ("airflow.sdk",))
    except ImportError:
        ResumableJobMixin = _ResumableJobStandIn

__all__ = ["ResumableJobMixin", "airflow_mask_secret", "mask_secret"]
