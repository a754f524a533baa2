"""The emulator serves concurrent requests concurrently and stays exact (uid de-dup, stats)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from m3ter_provider.testing import M3terEmulator
from m3ter_provider.testing import measurements as ingest
from tests.testing.helpers import Api, know_meters


@pytest.fixture(autouse=True)
def _known_meters(emu: M3terEmulator) -> None:
    know_meters(emu, "api_calls")


def _batch(start: int, count: int) -> dict:
    return {
        "measurements": [
            {"uid": f"u{i}", "account": "acme", "meter": "api_calls", "ts": "2024-05-01T10:00:00Z"}
            for i in range(start, start + count)
        ]
    }


def test_two_ingest_batches_are_validated_at_the_same_time(
    emu: M3terEmulator, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both requests must be inside validation at once: under a request-wide lock the barrier breaks."""
    barrier = threading.Barrier(2, timeout=10)
    real_validate = ingest.validate

    def validate_together(items: list) -> None:
        barrier.wait()  # raises BrokenBarrierError (-> 500) if the other request cannot get here
        real_validate(items)

    monkeypatch.setattr(ingest, "validate", validate_together)
    token = api.token

    def post(start: int) -> int:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            return session.post(api.url("measurements"), json=_batch(start, 3), timeout=20).status_code

    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(post, (0, 100)))
    assert statuses == [200, 200]
    assert not barrier.broken
    assert emu.stats()["measurements_stored"] == 6


def test_concurrent_overlapping_batches_store_each_uid_once(emu: M3terEmulator, api: Api) -> None:
    token = api.token

    # 8 senders, each sending uids 0..199 in 4 batches of 50 (every uid sent 8 times)
    def send(_: int) -> list[int]:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            return [
                session.post(api.url("measurements"), json=_batch(start, 50), timeout=20).status_code
                for start in range(0, 200, 50)
            ]

    with ThreadPoolExecutor(8) as pool:
        statuses = [status for result in pool.map(send, range(8)) for status in result]
    assert statuses == [200] * 32
    stats = emu.stats()
    assert stats["measurements_stored"] == 200
    assert stats["measurements_duplicates"] == 200 * 7
    assert stats["measurements_received"] == 1600
    assert stats["measurement_requests"] == 32
    assert stats["requests"]["POST /organizations/{orgId}/measurements"] == 32
    assert stats["statuses"]["POST /organizations/{orgId}/measurements"] == {"200": 32}
    assert sorted(m["uid"] for m in emu.measurements()) == sorted(f"u{i}" for i in range(200))
