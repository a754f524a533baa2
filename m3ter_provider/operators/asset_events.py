"""Asset events from m3ter operators: what a task changed in m3ter, for DAGs scheduled on it.

An operator knows its Organization id only once it reads its connection, when the task runs, but
Airflow wants a task's outlets when the DAG is parsed. So an m3ter operator declares an
``AssetAlias`` as its outlet (``m3ter/<kind>``, e.g. ``m3ter/usage``; one per kind, shared by every
task), and
attaches the concrete ``m3ter://`` assets to it at run time, each with an ``extra`` describing the
change. Airflow records an asset event for each attached asset: a DAG scheduled on
``meter_asset("<org id>", "api_calls")`` (or on the alias) runs after the task.

For an operator author, one line each::

    class M3terStatementJobOperator(M3terAssetEventsMixin, M3terJobOperatorBase):
        asset_event_kind = "statements"  # the alias: m3ter/statements

        def _summary(self, context, job_id, job):
            ...
            self.emit_asset_event(context, statements_asset(self.hook.org_id), {"job_id": job_id})

The mixin adds ``emit_asset_events`` (default True) to the operator: False declares no alias and
emits nothing. On Airflow 2.11 nothing is declared or emitted (asset events are Airflow 3's model).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from m3ter_provider.errors import M3terConfigError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Asset, AssetAlias, Context

log = logging.getLogger(__name__)

#: the largest ``extra`` an event carries (Airflow keeps it in its metadata database)
MAX_EXTRA_BYTES = 16_000
#: the most ids an event's ``extra`` lists (it counts them all)
MAX_EXTRA_IDS = 20


def asset_alias_name(kind: str) -> str:
    """``m3ter/<kind>``: the alias an m3ter operator declares as its outlet."""
    return f"m3ter/{kind}"


def asset_alias(kind: str) -> AssetAlias:
    """The ``AssetAlias`` (``DatasetAlias`` on 2.11) for a kind of m3ter data (``usage``, ``bills``...)."""
    from airflow.providers.common.compat.sdk import AssetAlias

    return AssetAlias(name=asset_alias_name(kind))


def alias_outlets(kind: str) -> list[Any]:
    """The outlets a ``@task`` declares to emit m3ter asset events of ``kind`` with
    :func:`emit_asset_event`: ``[asset_alias(kind)]`` on Airflow 3, ``[]`` on Airflow 2.11 (where an
    event through an alias fails the task inside Airflow, so none is declared or emitted)."""
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    return [asset_alias(kind)] if AIRFLOW_V_3_0_PLUS else []


def _as_list(outlets: Any) -> list[Any]:
    if outlets is None:
        return []
    return list(outlets) if isinstance(outlets, (list, tuple)) else [outlets]


def _json_ready(value: Any) -> Any:
    """``extra`` as JSON (datetimes as ISO strings); refuse what Airflow could not store."""
    text = json.dumps(
        value, default=lambda v: v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else str(v)
    )
    if len(text) > MAX_EXTRA_BYTES:
        raise M3terConfigError(
            f"an asset event's extra holds {len(text):,} bytes (at most {MAX_EXTRA_BYTES:,}): keep counts "
            "and ids there, and write large results to a file."
        )
    return json.loads(text)


def emit_asset_event(context: Context, alias: AssetAlias | str, asset: Asset, extra: dict[str, Any]) -> None:
    """Attach ``asset`` with ``extra`` to the task's alias outlet: Airflow records one asset event.

    :param context: the task's context (its ``outlet_events``).
    :param alias: the alias the task declares among its outlets (or its name).
    :param asset: the m3ter asset changed (see :mod:`m3ter_provider.assets`).
    :param extra: JSON-serialisable facts about the change (counts, ids, period).
    """
    from airflow.providers.common.compat.sdk import AssetAlias

    if isinstance(alias, str):
        alias = AssetAlias(name=alias)
    outlet_events = context.get("outlet_events")
    if outlet_events is None:  # execute() called by hand, outside a task run: nobody to tell
        log.warning("No outlet_events in the task's context: no asset event for %s.", asset.uri)
        return
    outlet_events[alias].add(asset, extra=_json_ready(extra))
    log.info("Asset event for %s (through alias %s).", asset.uri, alias.name)


class M3terAssetEventsMixin:
    """Declare an ``m3ter/<kind>`` alias outlet and emit ``m3ter://`` asset events to it.

    Put it first among the operator's bases and set ``asset_event_kind``; call
    :meth:`emit_asset_event` from ``execute`` (or what it calls) for each asset the task changed.

    :param emit_asset_events: declare the alias and emit events (default True); False: neither.
    """

    #: the kind of m3ter data the operator changes: the alias's last part (``usage``, ``bills``...)
    asset_event_kind: ClassVar[str]

    def __init__(self, *, emit_asset_events: bool = True, **kwargs: Any) -> None:
        # Airflow 3's data model: on 2.11 a dataset event through an alias fails the task inside
        # Airflow ("Can't flush None value found in collection DatasetModel.aliases" under dag.test),
        # so 2.11 declares and emits nothing
        alias = alias_outlets(self.asset_event_kind) if emit_asset_events else []
        self.emit_asset_events = bool(alias)
        if alias:
            kwargs["outlets"] = [*_as_list(kwargs.get("outlets")), *alias]
        super().__init__(**kwargs)

    @property
    def asset_alias_name(self) -> str:
        """The name of the alias this operator declares."""
        return asset_alias_name(self.asset_event_kind)

    def emit_asset_event(self, context: Context, asset: Asset, extra: dict[str, Any]) -> None:
        """One asset event for ``asset`` (nothing when the task opted out with ``emit_asset_events``)."""
        if self.emit_asset_events:
            emit_asset_event(context, self.asset_alias_name, asset, extra)


# ``Operator.partial(...)`` checks its keywords against the ``__init__`` of each class in the MRO that
# BaseOperator's metaclass wrapped (it records their names there); a plain mixin's keyword is declared
# the same way, or ``partial(emit_asset_events=False)`` is refused as unexpected (Airflow 2.11 and 3)
setattr(M3terAssetEventsMixin.__init__, "_BaseOperatorMeta__param_names", frozenset({"emit_asset_events"}))  # noqa: B010


class M3terUsageEventsMixin(M3terAssetEventsMixin):
    """Asset events for operators that send measurements: one per Meter sent, through ``m3ter/usage``.

    Wrap the input with :meth:`tally_meters` before handing it to the ingest (it counts per Meter as
    the ingest reads it: no second pass), then call :meth:`emit_usage_events` with the tally's
    :meth:`~m3ter_provider.core.ingest.tally.MeterTally.summary` once the measurements are in m3ter.
    """

    asset_event_kind = "usage"

    def tally_meters(self, source: Any) -> Any:
        """``source`` wrapped in a :class:`~m3ter_provider.core.ingest.tally.MeterTally` (as it is
        when the task emits no asset events)."""
        if not self.emit_asset_events:
            return source
        from m3ter_provider.core.ingest.tally import MeterTally

        return MeterTally(source)

    def emit_usage_events(
        self, context: Context, meters: dict[str, dict[str, Any]], *, uid_namespace: str, rejected: Any
    ) -> None:
        """One event per Meter, ``m3ter://<org id>/meters/<code>``, ``extra`` ``{"measurements",
        "first_ts", "last_ts", "uid_namespace", "rejected"}``.

        :param meters: ``MeterTally.summary()``: ``{meter code: {"measurements", "first_ts", "last_ts"}}``.
        :param uid_namespace: the namespace the measurements' uids were derived from.
        :param rejected: the task's rejected measurements (None when not checked).
        """
        if not self.emit_asset_events:
            return
        from m3ter_provider.assets import meter_asset

        org_id = self.hook.org_id  # type: ignore[attr-defined]  # every m3ter operator has a hook
        for meter, counts in meters.items():
            extra = {**counts, "uid_namespace": uid_namespace, "rejected": rejected}
            self.emit_asset_event(context, meter_asset(org_id, meter), extra)


def capped_ids(ids: Any, limit: int = MAX_EXTRA_IDS) -> list[str]:
    """The first ``limit`` ids as strings: an event's ``extra`` names a few, and counts the rest."""
    return [str(i) for i in list(ids or [])[:limit]]


__all__ = [
    "M3terAssetEventsMixin",
    "M3terUsageEventsMixin",
    "asset_alias",
    "asset_alias_name",
    "capped_ids",
    "emit_asset_event",
]
