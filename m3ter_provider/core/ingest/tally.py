"""Per-Meter counts of a submission, taken as its measurements are read (for asset events).

:class:`MeterTally` wraps any measurement input the ingest takes (an iterable of dicts, a path, a
:class:`~m3ter_provider.core.ingest.sources.MeasurementFile`) and counts the validated measurements
per Meter code, with the earliest and latest ``ts``, while the ingest reads them: no second pass
over the input, and memory grows with the number of Meters only.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from m3ter_provider.core.ingest.sources import Chunk, MeasurementFile, chunks_of

if TYPE_CHECKING:
    from collections.abc import Iterator


class MeterTally(MeasurementFile):
    """A measurement input that counts what is read from it, per Meter.

    A ``MeasurementFile`` subclass only so that the ingest reads it through :meth:`chunks`. Each
    read starts the counts afresh, so they describe the last complete read.

    :param source: what the ingest would take directly.
    """

    def __init__(self, source: Any) -> None:  # no super().__init__: this wraps, it opens nothing
        self.source = source
        self.path = getattr(source, "path", source)
        self.file_format = getattr(source, "file_format", None)  # type: ignore[assignment]  # None: not a file
        self.meters: dict[str, dict[str, Any]] = {}

    def __repr__(self) -> str:
        return f"MeterTally({self.source!r})"

    def chunks(self) -> Iterator[Chunk]:
        self.meters = {}
        for structs, label in chunks_of(self.source):
            for struct in structs:
                self._count(struct.meter, struct.ts)
            yield structs, label

    def _count(self, meter: str, ts: dt.datetime) -> None:
        entry = self.meters.get(meter)
        if entry is None:
            self.meters[meter] = {"measurements": 1, "first_ts": ts, "last_ts": ts}
            return
        entry["measurements"] += 1
        if ts < entry["first_ts"]:
            entry["first_ts"] = ts
        if ts > entry["last_ts"]:
            entry["last_ts"] = ts

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{meter code: {"measurements": n, "first_ts": iso, "last_ts": iso}}``, codes sorted."""
        return {
            meter: {
                "measurements": entry["measurements"],
                "first_ts": _iso(entry["first_ts"]),
                "last_ts": _iso(entry["last_ts"]),
            }
            for meter, entry in sorted(self.meters.items())
        }


def _iso(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)
