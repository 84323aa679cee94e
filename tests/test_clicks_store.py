"""Impressions and click attribution in Redis (store/impressions.py, store/attribution.py,
store/ctr.py): the two guarded scripts against a real redis-server, in both orders."""

from __future__ import annotations

import itertools

import pytest

from consumers.impression_events import Impression
from store.attribution import AttributionConfig, ClickCounts
from store.ctr import read_ctr, read_user_counts
from store.impressions import Impressions
from store.keys import Keys

pytestmark = pytest.mark.integration

KEYS = Keys("recs")
VIEW_OFFSETS = KEYS.offsets("g", "views")
IMP_OFFSETS = KEYS.offsets("gi", "imps")
T0 = 1764201600000  # 2025-11-27T00:00:00Z
MIN = 60_000


class Pair:
    """Both write paths with their own offsets (partition 0 each), as two consumers."""

    def __init__(self, r, config: AttributionConfig | None = None) -> None:
        self.r = r
        self.views = ClickCounts(r, KEYS, config)
        self.imps = Impressions(r, KEYS, config)
        self.offsets = {"v": None, "i": None}

    def view(self, user: str, rid: int, t: int, imp: str = "", lang: str = "en") -> None:
        held, new = self.offsets["v"], (self.offsets["v"] or 0) + 1
        applied = self.views.write(VIEW_OFFSETS, [(0, held, new)],
                                   ({lang: {user: {rid: 1}}}, {lang: {user: [(rid, t, imp)]}}))
        assert not applied.refused
        self.offsets["v"] = new
        return applied

    def impression(self, imp: Impression):
        held, new = self.offsets["i"], (self.offsets["i"] or 0) + 1
        applied = self.imps.write(IMP_OFFSETS, [(0, held, new)], [imp])
        assert not applied.refused
        self.offsets["i"] = new
        return applied


def imp(id_: str, user: str = "u1", items=(10, 11, 12), ts: int = T0, list_: str = "recs",
        arm: str = "default", experiment: str = "", lang: str = "en") -> Impression:
    return Impression(id_, user, lang, list_, None, "v1", arm, experiment, tuple(items), ts)


def row(r, lang: str = "en"):
    rows = read_ctr(r, KEYS, lang)
    assert len(rows) == 1, rows
    return rows[0]


@pytest.mark.parametrize("view_first", [False, True])
def test_a_view_of_a_shown_resource_in_the_window_is_one_click_in_either_order(r, view_first):
    pair = Pair(r)
    events = [lambda: pair.impression(imp("a")), lambda: pair.view("u1", 11, T0 + 5 * MIN)]
    replies = [event() for event in (reversed(events) if view_first else events)]
    # Whichever script applied the second half counted the click (and says so, for metrics).
    assert replies[1].counted == {("en", "recs"): (1 if view_first else 0, 1)}
    assert replies[0].counted == ({} if view_first else {("en", "recs"): (1, 0)})
    # A second view of the same resource, and a view of a resource not shown: no more clicks.
    pair.view("u1", 11, T0 + 6 * MIN)
    pair.view("u1", 99, T0 + 6 * MIN)
    got = row(r)
    assert (got.day, got.list, got.model, got.arm, got.experiment) == (
        "2025-11-27", "recs", "v1", "default", "")
    assert (got.impressions, got.clicks, got.positions) == (1, 1, {2: 1})
    assert got.users == 1 and got.items == 3


@pytest.mark.parametrize("view_first", [False, True])
def test_every_order_of_a_mixed_history_gives_the_same_counts(r, view_first):
    """Three impressions and five views of two users, interleaved so that some pairs are
    completed by the views script and others by the impressions script."""
    impressions = [imp("a", items=(1, 2, 3)), imp("b", items=(3, 4), ts=T0 + 10 * MIN),
                   imp("c", user="u2", items=(1, 5), ts=T0 + MIN)]
    views = [("u1", 3, T0 + 12 * MIN), ("u1", 1, T0 + 40 * MIN), ("u1", 2, T0 - MIN),
             ("u2", 5, T0 + 2 * MIN), ("u2", 5, T0 + 3 * MIN)]
    results = set()
    for k, order in enumerate(itertools.permutations(range(8))):
        if k % 97:  # a spread of the 40320 orders keeps the test short
            continue
        r.flushdb()
        pair = Pair(r)
        for e in order:
            if e < 3:
                pair.impression(impressions[e])
            else:
                pair.view(*views[e - 3])
        got = row(r)
        results.add((got.impressions, got.clicks, tuple(sorted(got.positions.items()))))
    # a: 3 at +12 min (position 3) -- 1 at +40 min is past the window, 2 before the impression;
    # b: 3 at +2 min (position 1); c: 5 (position 2), clicked once although viewed twice.
    assert results == {(3, 3, ((1, 1), (2, 1), (3, 1)))}


def test_the_window_bounds_a_click_and_an_impression_id_names_its_impression(r):
    pair = Pair(r, AttributionConfig(window=600))
    pair.impression(imp("a", items=(1, 2)))
    pair.impression(imp("b", items=(1, 2), ts=T0 + MIN))
    pair.view("u1", 1, T0 + 10 * MIN + 1)  # past a's window (600 s), inside b's
    pair.view("u1", 2, T0 + 2 * MIN, imp="a")  # only a, though b showed it too
    got = row(r)
    assert (got.impressions, got.clicks, got.positions) == (2, 2, {1: 1, 2: 1})
    # b's pair (b, 2) is still open; a's (a, 1) too: a view without id clicks only b's.
    pair.view("u1", 2, T0 + 3 * MIN)
    assert row(r).clicks == 3


def test_a_duplicate_impression_id_counts_once_and_a_replayed_batch_not_at_all(r):
    pair = Pair(r)
    pair.impression(imp("a"))
    assert pair.impression(imp("a")).duplicates == 1
    stale = pair.imps.write(IMP_OFFSETS, [(0, 0, 1)], [imp("b")])  # offsets moved on: refused
    assert stale.refused == {"0": "2"}
    assert row(r).impressions == 1


def test_the_cap_evicts_the_oldest_impression_and_its_open_pairs(r):
    pair = Pair(r, AttributionConfig(impression_cap=2))
    for k, items in enumerate([(1, 2), (2, 3), (3, 4)]):
        pair.impression(imp(f"i{k}", items=items, ts=T0 + k))
    window = r.hgetall(KEYS.impression_window("en", "u1"))
    assert "i:i0" not in window and "r:1" not in window
    assert window["r:2"] == "i1/1" and window["q"] == "i1 i2"
    pair.view("u1", 1, T0 + MIN)  # shown only by the evicted impression
    pair.view("u1", 3, T0 + MIN)  # shown by i1 and i2: two clicks
    assert row(r).clicks == 2
    assert 0 < r.pttl(KEYS.impression_window("en", "u1")) <= 86400_000


def test_the_view_window_keeps_its_cap_and_recent_times(r):
    pair = Pair(r, AttributionConfig(view_cap=3))
    for k in range(5):
        pair.view("u1", k + 1, T0 + k)
    pair.view("u1", 3, T0 + 9, imp="x")
    window = r.hgetall(KEYS.view_window("en", "u1"))
    assert window == {"q": "4 5 3", "3": f"{T0 + 2} {T0 + 9}/x", "4": str(T0 + 3),
                      "5": str(T0 + 4)}


def test_experiment_arms_get_per_user_counts(r):
    pair = Pair(r)
    pair.impression(imp("a", user="u1", arm="b", experiment="e1"))
    pair.impression(imp("b", user="u1", arm="b", experiment="e1", ts=T0 + 1))
    pair.impression(imp("c", user="u2", arm="b", experiment="e1"))
    pair.view("u1", 10, T0 + MIN)  # clicks a and b
    imps, clicks = read_user_counts(r, KEYS, "en", "e1", "b")
    assert sorted(zip(imps.tolist(), clicks.tolist(), strict=True)) == [(1, 0), (2, 2)]
    assert read_user_counts(r, KEYS, "en", "e1", "a")[0].size == 0
    assert row(r).experiment == "e1" and read_ctr(r, KEYS, "en", days=["2025-11-28"]) == []


def test_poisoned_window_and_counter_keys_never_stop_a_batch(r):
    pair = Pair(r)
    r.set(KEYS.impression_window("en", "u1"), "garbage")
    r.set(KEYS.ctr("en", imp("x").cell), "garbage")
    pair.impression(imp("a"))
    pair.view("u1", 10, T0 + MIN)
    assert r.get(KEYS.ctr("en", imp("x").cell)) == "garbage"
    assert r.hget(KEYS.views("en", "u1"), "10") == "1"
    assert pair.offsets == {"v": 1, "i": 1}
