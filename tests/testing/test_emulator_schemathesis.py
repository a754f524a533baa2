"""Schemathesis, from m3ter's own spec, against a live emulator: a short, bounded campaign.

Positive cases (valid by the spec) and negative ones (invalid by the spec) on a few path families
(accounts, meters, bill jobs, data exports, measurements, events). Every answer must be JSON, a 4xx
must carry ``{"message"}``, nothing may answer 5xx, every response with a documented schema must match
it, and every invalid request must be refused. ``python -m tests.testing.fuzz 50`` runs a longer
campaign and prints its figures.
"""

from __future__ import annotations

from m3ter_provider.testing import M3terEmulator
from tests.testing.fuzz import FAMILIES, run


def test_schemathesis_finds_no_gap_between_the_emulator_and_the_spec() -> None:
    """Limits off inside ``run``: schemathesis sends as fast as it can (the limits have their own tests).

    Bounded by examples (3 per operation and mode) and by time (45 s, shared equally by the families,
    so a loaded machine checks fewer cases, never none): generating cases from m3ter's large schemas
    is CPU-heavy (about 0.1 s of CPU per case).
    """
    with M3terEmulator(job_duration=0.1) as emu:
        figures = run(emu, max_examples=3, time_budget=45.0)
    print(figures.summary())
    assert figures.failures == [], "\n".join(figures.failures[:10])
    assert set(figures.per_family) == set(FAMILIES), figures.per_family  # every family was fuzzed
    assert all(count >= 1 for count in figures.per_family.values()), figures.per_family
    assert figures.negative >= 1 and figures.negative_refused == figures.negative
    assert figures.schema_checked >= 1 and figures.schema_valid == figures.schema_checked
