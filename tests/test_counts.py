"""The counts write path (store/counts.py): the Lua script against a real redis-server."""

import pytest

from store.counts import Counts, apply_args
from store.guards import read_guards
from store.keys import Keys
from store.progress import read_offsets

pytestmark = pytest.mark.integration

KEYS = Keys("recs")
OFFSETS = KEYS.offsets("g", "t")


def as_ints(h: dict) -> dict:
    return {k: int(v) for k, v in h.items()}


def test_a_batch_writes_every_key_of_the_contract_and_bookkeeping(r):
    counts = Counts(r, KEYS)
    views = {"en": {"u1": {10: 2, 11: 1}, "u2": {10: 5}}, "es": {"u1": {7: 1}}}
    assert counts.apply(OFFSETS, [(0, None, 3), (1, None, 9)], views) == {}
    assert as_ints(r.hgetall("recs:en:views:u1")) == {"10": 2, "11": 1}
    assert as_ints(r.hgetall("recs:en:views:u2")) == {"10": 5}
    assert as_ints(r.hgetall("recs:es:views:u1")) == {"7": 1}
    assert as_ints(r.hgetall("recs:en:item_views")) == {"10": 7, "11": 1}
    assert as_ints(r.hgetall("recs:es:item_views")) == {"7": 1}
    assert r.smembers("recs:langs") == {"en", "es"}
    assert r.smembers(KEYS.users("en")) == {"u1", "u2"}
    assert r.get(KEYS.seq("en")) == "1" and r.get(KEYS.seq("es")) == "1"
    assert r.zrange(KEYS.dirty("en"), 0, -1, withscores=True) == [("u1", 1.0), ("u2", 1.0)]
    assert r.zrange(KEYS.touched("es"), 0, -1, withscores=True) == [("u1", 1.0)]
    assert read_offsets(r, KEYS, "g", "t") == {0: 3, 1: 9}

    # The next batch: seq moves once per language, dirty/touched carry the latest seq.
    assert counts.apply(OFFSETS, [(0, 3, 4), (1, 9, None)], {"en": {"u2": {11: 1}}}) == {}
    assert r.get(KEYS.seq("en")) == "2" and r.get(KEYS.seq("es")) == "1"
    assert r.zscore(KEYS.dirty("en"), "u2") == 2.0 and r.zscore(KEYS.dirty("en"), "u1") == 1.0
    assert as_ints(r.hgetall("recs:en:item_views")) == {"10": 7, "11": 2}
    assert read_offsets(r, KEYS, "g", "t") == {0: 4, 1: 9}


def test_the_same_batch_sent_twice_applies_once(r):
    counts = Counts(r, KEYS)
    batch = {"en": {"u": {1: 3}}}
    assert counts.apply(OFFSETS, [(2, None, 50)], batch) == {}
    # A resend (lost reply, zombie member) carries the same expectation: refused.
    assert counts.apply(OFFSETS, [(2, None, 50)], batch) == {"2": "50"}
    assert r.hgetall("recs:en:views:u") == {"1": "3"}
    assert r.hgetall("recs:en:item_views") == {"1": "3"}
    assert r.get(KEYS.seq("en")) == "1"


def test_a_mismatch_on_any_partition_refuses_the_whole_batch(r):
    counts = Counts(r, KEYS)
    assert counts.apply(OFFSETS, [(0, None, 10), (1, None, 20)], {"en": {"a": {1: 1}}}) == {}
    # Partition 1 is behind what Redis holds (check-only guard), partition 3 has no record
    # though we expected one: both are reported, nothing is written.
    failed = counts.apply(OFFSETS, [(0, 10, 15), (1, 5, None), (3, 7, 9)],
                          {"en": {"a": {1: 4}, "b": {2: 1}}})
    assert failed == {"1": "20", "3": None}
    assert r.hgetall("recs:en:views:a") == {"1": "1"}
    assert not r.exists("recs:en:views:b")
    assert read_offsets(r, KEYS, "g", "t") == {0: 10, 1: 20}
    assert r.get(KEYS.seq("en")) == "1"


def test_guards_alone_move_offsets(r):
    # A batch of only invalid events still advances its partitions.
    counts = Counts(r, KEYS)
    assert counts.apply(OFFSETS, [(0, None, 5)], {}) == {}
    assert read_offsets(r, KEYS, "g", "t") == {0: 5}
    assert not r.exists("recs:langs")
    assert counts.apply(OFFSETS, [(0, 5, 6)], {"en": {}}) == {}
    assert not r.exists(KEYS.seq("en"))


def test_big_batches_cross_the_variadic_chunk(r):
    counts = Counts(r, KEYS)
    users = {f"user-{i}": {i % 97 + 1: 1, 1000: 2} for i in range(9001)}
    assert counts.apply(OFFSETS, [(0, None, 9001)], {"pt": users}) == {}
    assert r.scard(KEYS.users("pt")) == 9001
    assert r.zcard(KEYS.dirty("pt")) == 9001 and r.zcard(KEYS.touched("pt")) == 9001
    items = as_ints(r.hgetall(KEYS.item_views("pt")))
    assert items["1000"] == 2 * 9001 and sum(items.values()) == 3 * 9001
    assert r.hgetall(KEYS.views("pt", "user-9000")) == {str(9000 % 97 + 1): "1", "1000": "2"}


def test_user_ids_with_separators_and_unicode_stay_whole(r):
    counts = Counts(r, KEYS)
    odd = "a:b c/ü李"
    assert counts.apply(OFFSETS, [], {"en": {odd: {5: 1}}}) == {}
    assert r.hgetall(KEYS.views("en", odd)) == {"5": "1"}
    assert r.smembers(KEYS.users("en")) == {odd}


def test_another_prefix_and_guard_hash(r):
    keys = Keys("other")
    counts = Counts(r, keys)
    assert counts.apply(keys.backfills, [("en:abc", None, '{"chunk":1}')],
                        {"en": {"u": {1: 1}}}) == {}
    assert read_guards(r, keys.backfills) == {"en:abc": '{"chunk":1}'}
    assert r.hgetall("other:en:views:u") == {"1": "1"} and r.smembers("other:langs") == {"en"}
    assert not r.exists("recs:langs")


def test_flat_args_follow_the_script_header():
    args = apply_args(KEYS, [(1, None, 8)], {"en": {"u": {3: 2}}, "es": {}})
    assert args == [1, 1, "", 8, 1, "en", "recs:en:views:", KEYS.item_views("en"),
                    KEYS.users("en"), KEYS.seq("en"), KEYS.dirty("en"), KEYS.touched("en"),
                    KEYS.quarantine("en"), 1, "u", 1, 3, 2]
    # The script builds views keys as prefix .. user_id: that must be Keys.views.
    assert KEYS.views("en", "") + "x:y" == KEYS.views("en", "x:y")
