"""Content-derived measurement uids: the same row gets the same uid on every run, wherever it sits.

A measurement without a ``uid`` gets ``blake2b(canonical content, key=namespace)`` (40 hex
characters): its canonical content is its JSON with sorted keys, date-times in UTC and numbers as
floats, so reordering rows, adding rows or retrying never changes a row's uid. A row that occurs
``k`` times in one input (the same content twice is two real usage events) gets a distinct uid for
each occurrence ``0..k-1``; a re-run that sends the same rows maps them onto the same uids.

Counting occurrences takes about 7 bytes per distinct row: 62-bit digests (14 bits pick one of
16,384 ``bytearray`` buckets, 48 are stored there and searched at C speed) and a small dict only
for contents seen more than once, so 1,000,000 rows cost about 7 MB, not the ~100 MB of a set.
"""

from __future__ import annotations

import binascii
import hashlib
import operator
import secrets
from typing import TYPE_CHECKING, Any

from m3ter_provider.core.ingest import schema
from m3ter_provider.errors import M3terValidationError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

#: changes only with the derivation, so uids stay the same across provider releases
_PERSON = b"m3ter-uid-v1"
_BUCKETS = 1 << 14
_GIVEN_RECORD = 17
hexlify = binascii.hexlify


def random_namespace() -> str:
    """A namespace of its own for a call given none: retries inside the call re-send the same uids."""
    return "random:" + secrets.token_hex(16)


def task_namespace(ti: Any, run_id: str | None = None) -> str:
    """The namespace of a task instance: ``json [dag_id, task_id, run_id, map_index]``, the same on
    every try, so a retried or cleared task re-sends the same uids (``ti`` is any object with those
    attributes: no Airflow import here)."""
    import json

    map_index = getattr(ti, "map_index", -1)
    return json.dumps([ti.dag_id, ti.task_id, run_id or ti.run_id, -1 if map_index is None else map_index])


def namespace_key(namespace: str) -> bytes:
    return hashlib.blake2b(namespace.encode("utf-8"), digest_size=32, person=_PERSON).digest()


class UidAssigner:
    """Gives each measurement struct without a ``uid`` its content-derived one, encoding as it goes.

    :param namespace: fixes the uids of one logical submission (a task instance, a backfill...).
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        #: the keyed hash before any content: each row's hash starts from a copy of it
        self._keyed = hashlib.blake2b(key=namespace_key(namespace), digest_size=20)
        self._buckets = [bytearray() for _ in range(_BUCKETS)]
        #: digest -> occurrences seen after the first, only for contents seen more than once
        self._repeats: dict[bytes, int] = {}
        self._encoder = schema.encoder()
        #: rows encoded so far
        self.rows = 0
        #: caller-given uids seen: 17-byte records (6 bytes of the uid's hash, 6 of its row's content
        #: hash, 5 of the row's number) in 16,384 buckets picked by 14 more bits of the uid's hash
        self._given: list[bytearray] | None = None
        #: rows whose caller-given uid and content repeat an earlier row's (m3ter stores one)
        self.repeated_given = 0

    def _check_given_uids(
        self, lines: list[bytes], given: list[Any], first_row: int, label: Callable[[int], str] | None
    ) -> None:
        """Refuse a caller-given uid seen before in this submission with other content.

        m3ter ingests one measurement per uid: the second of two different rows sharing a uid would be
        dropped silently. The same uid with the same content twice is the same event given twice
        (an overlap of two exports, say): m3ter stores it once, as the caller's uid asks; it is counted
        in ``repeated_given`` and sent. 17 bytes per caller-given uid are kept.
        """
        from msgspec import UNSET

        if self._given is None:
            self._given = [bytearray() for _ in range(_BUCKETS)]
        buckets, blake2b = self._given, hashlib.blake2b
        for index, (line, uid) in enumerate(zip(lines, given, strict=True)):
            if uid is UNSET:
                continue
            digest = blake2b(uid.encode("utf-8"), digest_size=8).digest()
            bucket = buckets[(digest[0] << 6) | (digest[1] >> 2)]
            key = digest[2:8]
            content = blake2b(line, digest_size=6).digest()
            found = bucket.find(key)
            while found > 0 and found % _GIVEN_RECORD:  # a match across two records: look further
                found = bucket.find(key, found + 1)
            if found < 0:
                bucket += key + content + (first_row + index).to_bytes(5, "big")
                continue
            if bucket[found + 6 : found + 12] == content:
                self.repeated_given += 1
                continue
            here = label(index) if label is not None else f"measurement #{first_row + index}"
            first = int.from_bytes(bucket[found + 12 : found + _GIVEN_RECORD], "big")
            raise M3terValidationError(
                f"{here}: uid {uid!r} was already given to the measurement at position {first} of this "
                "input (counting from 0), with other content; m3ter keeps one measurement per uid and "
                "would drop the other silently. Give each measurement its own uid, or leave 'uid' out "
                "and let the provider derive one."
            )

    def encode(self, structs: list[Any], label: Callable[[int], str] | None = None) -> list[bytes]:
        """Each struct's JSON, with its uid (the given one, or the derived one first).

        :param label: names the row at an index of ``structs`` (for errors).
        :raises M3terValidationError: a uid the caller gave is given again, for other content.
        """
        lines = self._encoder.encode_lines(structs).split(b"\n")
        lines.pop()  # after the last newline
        from msgspec import UNSET

        given = list(map(operator.attrgetter("uid"), structs))
        first_row = self.rows
        self.rows += len(structs)
        if given.count(UNSET) == len(given):
            return self._with_uids(lines)
        self._check_given_uids(lines, given, first_row, label)
        derived = iter(
            self._with_uids([line for line, uid in zip(lines, given, strict=True) if uid is UNSET])
        )
        return [line if uid is not UNSET else next(derived) for line, uid in zip(lines, given, strict=True)]

    def _with_uids(self, lines: list[bytes]) -> list[bytes]:
        """Canonical JSON lines (no uid) with their derived uids added; this runs once per row, so
        it is one plain loop: a copy of the keyed hash state (cheaper than keying a new one), the
        bucket search, and one concatenation."""
        buckets, repeat, copy = self._buckets, self._repeat, self._keyed.copy
        out: list[bytes] = []
        append = out.append
        for line in lines:
            state = copy()
            state.update(line)
            digest = state.digest()
            bucket = buckets[(digest[0] << 6) | (digest[1] >> 2)]
            key = digest[2:8]
            found = bucket.find(key)
            while found > 0 and found % 6:  # a match across two entries: look further
                found = bucket.find(key, found + 1)
            if found < 0:
                bucket += key
                append(b'{"uid":"' + hexlify(digest) + b'",' + line[1:])
            else:
                append(b'{"uid":"' + repeat(digest) + b'",' + line[1:])
        return out

    def _repeat(self, digest: bytes) -> bytes:
        count = self._repeats.get(digest, 0) + 1
        self._repeats[digest] = count
        return hashlib.blake2b(digest + count.to_bytes(8, "big"), digest_size=20).hexdigest().encode()


def uid_for(namespace: str, measurement: Mapping[str, Any], occurrence: int = 0) -> str:
    """The uid a measurement without one gets when submitted with ``uid_namespace=namespace``.

    :param occurrence: 0 for the first row with this content in the input, 1 for the second...
    """
    import msgspec

    from m3ter_provider.core.ingest.sources import chunks_of

    structs, _label = next(chunks_of([measurement]))
    assigner = UidAssigner(namespace)
    for _ in range(occurrence + 1):
        line = assigner.encode(structs)[0]
    return str(msgspec.json.decode(line)["uid"])
