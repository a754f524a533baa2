"""Split measurements into slices by their content, for parallel (mapped) ingest that bills once.

A row's slice is ``blake2b(canonical row) mod slice_count``, where the canonical row is the same
encoding the uids are derived from (:mod:`.schema`'s deterministic JSON: sorted keys, date-times in
UTC, numbers as floats). So:

- identical rows (a row and its repeats) always land in the same slice, and the occurrence count
  that tells repeats apart (see :mod:`.uids`) sees all of them;
- a row never changes slice when the input is reordered, grows or shrinks: its slice depends on
  its content and ``slice_count`` only.

Ingest every slice with **one namespace shared by all slices** (for example the DAG run's): a
row's uid is then ``(namespace, content, occurrence)`` whichever slice it is in, so a cleared run
whose input was reordered or grew re-sends the same uids for the rows already sent, and even a
changed ``slice_count`` (which moves rows between slices) keeps every uid.

Slices are written as JSON Lines of canonical rows, streaming (memory holds one chunk of 1,000
rows), and every row is validated on the way: bad input fails the split, before any slice is sent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import re
from typing import Any

from m3ter_provider.core.ingest import schema
from m3ter_provider.core.ingest.sources import MeasurementFile, chunks_of
from m3ter_provider.core.limits import MAX_SLICES, check_slice_count

__all__ = ["MAX_SLICES", "Slice", "check_slice_count", "is_slice_file", "slice_of", "split_by_content"]

#: how :func:`split_by_content` names a slice file: ``<name>-00002-of-00008.jsonl``
SLICE_FILE_NAME = re.compile(r"-\d{5}-of-\d{5}\.jsonl$")


def is_slice_file(path: Any) -> bool:
    """Whether ``path`` (a string, a ``pathlib.Path`` or an ``ObjectStoragePath``) is named as
    :func:`split_by_content` names its slice files."""
    return bool(SLICE_FILE_NAME.search(str(path).rstrip("/").rsplit("/", 1)[-1]))


#: changes only with the assignment, so a row keeps its slice across provider releases
_PERSON = b"m3ter-slice-v1"


@dataclasses.dataclass(frozen=True)
class Slice:
    """One slice file: its ``index`` among ``slice_count``, where it is, and how many rows it holds."""

    index: int
    path: str
    rows: int


def slice_of(line: bytes, slice_count: int) -> int:
    """The slice of one canonical measurement line (its JSON as :func:`schema.encoder` writes it)."""
    digest = hashlib.blake2b(line, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "big") % slice_count


def split_by_content(
    source: Any,
    slice_count: int,
    destination_dir: Any,
    *,
    file_format: str | None = None,
    name: str = "part",
) -> list[Slice]:
    """Write the measurements of ``source`` into ``slice_count`` JSON Lines files by content.

    :param source: a JSON Lines or CSV file (a local path as a ``str`` or ``pathlib.Path``, an
        ``ObjectStoragePath``, a :class:`MeasurementFile`) or any iterable of dicts; read lazily.
    :param slice_count: how many slices (1 to :data:`MAX_SLICES`); the uids do not depend on it, but
        a row's slice does.
    :param destination_dir: a folder (a local path or an ``ObjectStoragePath``), created if absent;
        the slice files ``<name>-00000-of-00008.jsonl``... are (over)written there.
    :param file_format: ``"jsonl"`` or ``"csv"`` for a file ``source``; by default from its suffix.
    :param name: the start of each slice file's name.
    :return: the non-empty slices, by index (an empty slice's file is removed).
    :raises M3terValidationError: a bad measurement (naming its row and field); the slice files
        written so far are incomplete and must not be ingested.
    """
    check_slice_count(slice_count)
    source = _measurement_source(source, file_format)
    folder = _folder(destination_dir)
    paths = [folder / f"{name}-{index:05d}-of-{slice_count:05d}.jsonl" for index in range(slice_count)]
    counts = [0] * slice_count
    encoder = schema.encoder()
    writers: list[Any] = []
    try:
        for path in paths:
            writers.append(path.open("wb"))
        outs: list[list[bytes]] = [[] for _ in range(slice_count)]
        blake2b = hashlib.blake2b
        for structs, _label in chunks_of(source):
            lines = encoder.encode_lines(structs).split(b"\n")
            lines.pop()  # after the last newline
            for line in lines:
                digest = blake2b(line, digest_size=8, person=_PERSON).digest()
                outs[int.from_bytes(digest, "big") % slice_count].append(line)
            for index, out in enumerate(outs):
                if out:
                    out.append(b"")
                    writers[index].write(b"\n".join(out))
                    counts[index] += len(out) - 1
                    out.clear()
    finally:
        for writer in writers:
            writer.close()
    for index, path in enumerate(paths):
        if not counts[index]:
            path.unlink()  # an empty slice is not ingested: no file left behind
    return [Slice(index, str(path), counts[index]) for index, path in enumerate(paths) if counts[index]]


def _measurement_source(source: Any, file_format: str | None) -> Any:
    """A file given by path (or with a format) as a :class:`MeasurementFile`; anything else as it is."""
    if file_format is None and not isinstance(source, (str, os.PathLike)):
        return source
    if isinstance(source, str):
        source = pathlib.Path(source)
    return source if isinstance(source, MeasurementFile) else MeasurementFile(source, file_format)


def _folder(destination_dir: Any) -> Any:
    """The destination folder (a local path, or an ``ObjectStoragePath`` as it is), created if absent."""
    folder = destination_dir
    if isinstance(folder, str) or not hasattr(folder, "open"):
        folder = pathlib.Path(os.fspath(folder))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
