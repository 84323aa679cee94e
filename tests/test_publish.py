"""Publishing lists, the model switch and removing what a model no longer covers
(store.publish, store.switch, store.uncovered), with random arrays: no ALS here."""

import threading

import numpy as np
import pytest

from core.prefetch import prefetched
from store.handover import requeue_touched
from store.keys import Keys
from store.publish import Lists, Publisher
from store.train_lock import LockLost, TrainLock

pytestmark = pytest.mark.integration

KEYS = Keys()
LANG = "en"


def _lists(ids, n=5, factors=None, seed=0):
    rng = np.random.default_rng(seed)
    members = rng.choice(np.arange(1, 2**32 - 1, 7919, dtype=np.int64), size=(len(ids), n))
    scores = -np.sort(-rng.standard_normal((len(ids), n)).astype(np.float32), axis=1)
    f = None if factors is None else rng.standard_normal((len(ids), factors)).astype(np.float32)
    return Lists(ids=ids, members=members, scores=scores, factors=f)


def _zset(client, key):
    return [(int(m), s) for m, s in client.zrevrange(key, 0, -1, withscores=True)]


def _publish(client, items, users, n=5, factors=4, **kwargs):
    pub = Publisher(client, KEYS, LANG, **kwargs)
    sim = _lists(items, n, seed=1)
    rec = _lists(users, n, factors=factors, seed=2)
    pub.write_similar([sim])
    pub.write_users([rec])
    item_factors = np.arange(len(items) * factors, dtype=np.float32).reshape(len(items), factors)
    pub.switch({"factors": factors, "users": len(users), "items": len(items)},
               np.asarray(items), item_factors, np.full(len(items), 3.0))
    return pub, sim, rec


def test_lists_factors_and_sets_are_written_as_given(redis_client):
    items = [11, 4294967295, 12345]
    users = [f"user-{i}" for i in range(130)]  # several script calls and round trips
    pub, sim, rec = _publish(redis_client, items, users, entries_per_call=12,
                             calls_per_round_trip=3)
    for i, rid in enumerate(items):
        got = _zset(redis_client, KEYS.similar(LANG, rid))
        assert [m for m, _ in got] == sim.members[i].tolist()
        assert np.allclose([s for _, s in got], sim.scores[i])
    for i, user in enumerate(users):
        got = _zset(redis_client, KEYS.recs(LANG, user))
        assert [m for m, _ in got] == rec.members[i].tolist()
        # Scores are float32 on the wire and come back exactly as that float32.
        assert np.array_equal(np.float32([s for _, s in got]), rec.scores[i])
        blob = redis_client.get(KEYS.factors(LANG, user))
        assert len(blob) == 4 * 4
        assert np.array_equal(np.frombuffer(blob, "<f4"), rec.factors[i])
    assert {int(m) for m in redis_client.smembers(KEYS.published_items(LANG))} == set(items)
    assert {m.decode() for m in redis_client.smembers(KEYS.published_users(LANG))} == set(users)

    model = {k.decode(): v.decode() for k, v in redis_client.hgetall(KEYS.model(LANG)).items()}
    assert model["version"] == pub.version and model["factors"] == "4"
    ids = np.frombuffer(redis_client.get(KEYS.item_ids(LANG)), "<u4")
    assert ids.tolist() == items
    factors = np.frombuffer(redis_client.get(KEYS.item_factors(LANG)), "<f4").reshape(3, 4)
    assert factors[2, 3] == 11.0
    assert np.frombuffer(redis_client.get(KEYS.item_totals(LANG)), "<f4").tolist() == [3.0] * 3


def test_empty_slots_are_left_out_and_a_list_is_replaced_whole(redis_client):
    redis_client.zadd(KEYS.similar(LANG, 5), {"999": 1.0, "998": 0.5})
    pub = Publisher(redis_client, KEYS, LANG)
    pub.write_similar([Lists(ids=[5, 6], members=np.array([[7, 0, -1], [0, 0, 0]]),
                             scores=np.array([[0.9, -np.inf, -np.inf], [0, 0, 0]]))])
    assert _zset(redis_client, KEYS.similar(LANG, 5)) == [(7, pytest.approx(0.9))]
    assert not redis_client.exists(KEYS.similar(LANG, 6))


def test_switch_refuses_without_the_lock(redis_client):
    _publish(redis_client, [1, 2], ["a"])
    before = redis_client.hgetall(KEYS.model(LANG))
    lock = TrainLock(redis_client, KEYS.train_lock(LANG))
    assert lock.acquire()
    redis_client.set(KEYS.train_lock(LANG), "someone else")
    pub = Publisher(redis_client, KEYS, LANG, lock=lock)
    with pytest.raises(LockLost):
        pub.switch({"factors": 4}, np.array([1, 2]), np.zeros((2, 4), np.float32))
    assert redis_client.hgetall(KEYS.model(LANG)) == before
    with pytest.raises(LockLost):  # and no more lists either
        pub.write_similar([_lists([1])])


def test_remove_uncovered_spares_users_with_newer_views(redis_client):
    _publish(redis_client, [1, 2, 3], ["a", "b", "c", "new"])
    # "new" got views after seq 10 (the updater gave it a list); "c" is simply gone.
    redis_client.zadd(KEYS.touched(LANG), {"new": 11, "a": 9, "c": 10})
    pub = Publisher(redis_client, KEYS, LANG)
    pub.write_similar([_lists([1, 3])])
    pub.write_users([_lists(["a", "b"], factors=4)])
    pub.switch({"factors": 4}, np.array([1, 3]), np.zeros((2, 4), np.float32))
    assert pub.remove_uncovered(seq=10) == (1, 1)
    assert pub.report.spared_users == 1
    assert not redis_client.exists(KEYS.similar(LANG, 2))
    assert not redis_client.exists(KEYS.recs(LANG, "c"), KEYS.factors(LANG, "c"))
    assert redis_client.exists(KEYS.recs(LANG, "new"), KEYS.factors(LANG, "new")) == 2
    assert {int(m) for m in redis_client.smembers(KEYS.published_items(LANG))} == {1, 3}
    assert {m.decode() for m in redis_client.smembers(KEYS.published_users(LANG))} == {
        "a", "b", "new"}


def test_requeue_touched_hands_newer_users_to_the_updater(redis_client):
    redis_client.zadd(KEYS.touched(LANG), {"old": 3, "edge": 5, "later": 7, "latest": 9,
                                            **{f"u{i}": i % 5 for i in range(9)}})
    redis_client.zadd(KEYS.dirty(LANG), {"later": 6, "waiting": 2, "covered-waiting": 3,
                                         "covered-newer": 8})
    # Pending when the counts were read (seq 5); the updater finished two of them since.
    pending = ["waiting", "finished", "covered-waiting", "covered-finished", "covered-newer"]
    covered = {"covered-waiting", "covered-finished", "covered-newer", "other"}
    # chunk=2: the 11 touched entries up to seq 5 are trimmed over several calls.
    out = requeue_touched(redis_client, KEYS, LANG, seq=5, pending=pending, covered=covered,
                          chunk=2)
    assert (out.newer, out.again, out.dropped) == (2, 2, 1)
    dirty = {m.decode(): s for m, s in redis_client.zrange(KEYS.dirty(LANG), 0, -1,
                                                            withscores=True)}
    assert dirty == {
        "later": 7, "latest": 9,    # views after seq 5: queued at their touched seq
        "finished": 5, "covered-finished": 5,  # finished meanwhile (maybe on the old model)
        "waiting": 2,               # not in the new model: the updater folds it in later
        "covered-newer": 8,         # newer views: stays queued
    }                               # covered-waiting: all its views are in the new model
    assert [m.decode() for m in redis_client.zrange(KEYS.touched(LANG), 0, -1)] == [
        "later", "latest"]


def test_lock_is_exclusive_renewable_and_released_only_by_its_owner(redis_client):
    key = KEYS.train_lock(LANG)
    first = TrainLock(redis_client, key, ttl=5)
    second = TrainLock(redis_client, key, ttl=5)
    assert first.acquire()
    assert not second.acquire()
    assert second.holder() == first.token
    second.release()  # not its lock: nothing happens
    assert redis_client.get(key).decode() == first.token
    redis_client.pexpire(key, 200)
    assert first.renew() and redis_client.pttl(key) > 1000
    first.release()
    assert second.acquire(wait=1)
    assert not first.renew() and not first.held  # released: renewing is refused


def test_a_waiting_trainer_gets_the_lock_once_it_is_released(redis_client):
    key = KEYS.train_lock(LANG)
    holder = TrainLock(redis_client, key)
    assert holder.acquire()
    threading.Timer(0.3, holder.release).start()
    waiter = TrainLock(redis_client, key)
    assert waiter.acquire(wait=5, poll=0.05)


def test_a_lock_that_expired_and_was_retaken_is_noticed(redis_client):
    key = KEYS.train_lock(LANG)
    stalled = TrainLock(redis_client, key, ttl=1)
    assert stalled.acquire()
    redis_client.delete(key)  # as if it expired while the process stalled
    other = TrainLock(redis_client, key)
    assert other.acquire()
    assert not stalled.renew()
    assert stalled.lost
    with pytest.raises(LockLost):
        stalled.check()
    stalled.release()
    assert redis_client.get(key).decode() == other.token


def test_kept_alive_renews_past_the_ttl(redis_client):
    lock = TrainLock(redis_client, KEYS.train_lock(LANG), ttl=1)
    assert lock.acquire()
    with lock.kept_alive():
        threading.Event().wait(1.6)
        assert redis_client.get(KEYS.train_lock(LANG)).decode() == lock.token
    lock.check()
    lock.release()


def test_a_crash_half_way_leaves_every_list_whole_and_the_old_model_live(redis_client):
    users = [f"u{i}" for i in range(300)]
    old, _, _ = _publish(redis_client, [1, 2], users, n=5)

    def crash(kind, done):
        if kind == "recs" and done >= 100:
            raise RuntimeError("injected crash")

    pub = Publisher(redis_client, KEYS, LANG, entries_per_call=50, calls_per_round_trip=2,
                    after_chunk=crash)
    pub.write_similar([_lists([1, 2], seed=7)])
    with pytest.raises(RuntimeError, match="injected"):
        pub.write_users([_lists(users, factors=4, seed=8)])
    assert redis_client.hget(KEYS.model(LANG), "version").decode() == old.version
    lengths = {redis_client.zcard(KEYS.recs(LANG, u)) for u in users}
    assert lengths == {5}
    assert all(len(redis_client.get(KEYS.factors(LANG, u))) == 16 for u in users)

    again, _, rec = _publish(redis_client, [1, 2], users, n=5)
    assert redis_client.hget(KEYS.model(LANG), "version").decode() == again.version
    # u0 was rewritten by the crashed run; the rerun rewrote it again.
    assert [m for m, _ in _zset(redis_client, KEYS.recs(LANG, "u0"))] == rec.members[0].tolist()


def test_prefetch_hands_over_batches_errors_and_stops_with_its_consumer():
    assert list(prefetched(iter(range(10)))) == list(range(10))

    def failing():
        yield 1
        raise ValueError("scoring failed")

    got = []
    with pytest.raises(ValueError, match="scoring failed"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1]

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    feed = prefetched(endless(), depth=2)
    assert next(feed) == 0
    feed.close()  # the consumer gives up: the producer thread must stop, not hang
    assert len(produced) < 10
