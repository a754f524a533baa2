"""The Events reader relies on no listing order: m3ter's spec and docs do not say which it uses."""

from __future__ import annotations

import datetime as dt

import pytest

from m3ter_provider.core.events import Watermark, iso, read_new_events

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)


def event(minute: int, name: str) -> dict:
    return {"id": name, "eventTime": iso(T0 + dt.timedelta(minutes=minute))}


# made in this order; c and d share a time (d made after c)
MADE = [event(0, "a"), event(1, "b"), event(2, "c"), event(2, "d"), event(3, "e"), event(4, "f")]


class Listing:
    """``paginate`` over a fixed list of Events, counting the Events handed out."""

    def __init__(self, events: list[dict]) -> None:
        self.events = events
        self.read = 0

    def paginate(self, path, params=None, page_size=None):
        assert path == "events"
        for item in self.events:
            self.read += 1
            yield item


ORDERS = {"newest first": MADE[::-1], "oldest first": MADE}


@pytest.mark.parametrize("order", ORDERS)
def test_new_events_come_oldest_first_in_either_listing_order(order):
    events, watermark = read_new_events(Listing(ORDERS[order]), None, Watermark.after(MADE[1]["eventTime"]))
    ids = [e["id"] for e in events]
    assert ids in (["c", "d", "e", "f"], ["d", "c", "e", "f"])  # oldest first; c and d share a time
    if order == "newest first":  # the listing shows which of c and d was made first
        assert ids == ["c", "d", "e", "f"]
    assert watermark.time == Watermark.after(MADE[1]["eventTime"]).time


@pytest.mark.parametrize("order", ORDERS)
def test_a_first_poll_starts_from_the_newest_event_in_either_order(order):
    events, watermark = read_new_events(Listing(ORDERS[order]), None, None)
    assert events == []
    assert (iso(watermark.time), watermark.ids) == (MADE[-1]["eventTime"], frozenset({"f"}))


def test_oldest_first_is_read_to_the_end_and_newest_first_stops_at_the_watermark():
    oldest_first = Listing(ORDERS["oldest first"])
    events, _ = read_new_events(oldest_first, None, Watermark.after(MADE[4]["eventTime"]))
    assert [e["id"] for e in events] == ["f"] and oldest_first.read == len(MADE)
    newest_first = Listing(ORDERS["newest first"])
    events, _ = read_new_events(newest_first, None, Watermark.after(MADE[4]["eventTime"]))
    assert [e["id"] for e in events] == ["f"]
    assert newest_first.read == 2  # f (new), then e: older than the watermark after a newer one: stop


def test_a_single_older_event_is_not_taken_for_proof_of_order():
    """Oldest first, the first Event is older than the watermark: a reader that trusted "newest
    first" would stop there and never see the new Events after it."""
    listing = Listing([event(0, "old"), event(9, "new")])
    events, _ = read_new_events(listing, None, Watermark.after(event(5, "x")["eventTime"]))
    assert [e["id"] for e in events] == ["new"]
