"""Poisoned keys never half-write a batch and never stop the other users' counts
(store/counts.py, store/quarantine.py, ``recs repair``), against a real redis-server and,
for the consumer, the Tansu broker."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from consumers.produce import produce_events
from recs.localstack_process import wait_until
from store.counts import Counts
from store.keys import Keys
from store.quarantine import read_entries, repair
from tests.test_consume import consume_env_with, stop_cleanly

pytestmark = pytest.mark.integration

KEYS = Keys("recs")
OFFSETS = KEYS.offsets("g", "t")


def ints(h: dict) -> dict:
    return {k: int(v) for k, v in h.items()}


def test_one_poisoned_user_leaves_the_others_counted_and_its_views_parked(r):
    r.hset(KEYS.views("en", "victim"), "5", "abc")
    views = {"en": {**{f"a{i}": {5: 1, 6: 2} for i in range(10)},
                    "victim": {6: 1, 5: 2, 7: 3},
                    **{f"b{i}": {5: 1} for i in range(10)}}}
    applied = Counts(r, KEYS).write(OFFSETS, [(0, None, 21)], views)
    assert not applied.refused
    assert [(p.lang, p.user) for p in applied.parked] == [("en", "victim")]
    assert "not an integer" in applied.parked[0].reason
    # The others are counted and known; the victim's own fields are exactly as before
    # (its 6 was incremented before 5 refused: undone, and not left behind as a 0).
    assert ints(r.hgetall(KEYS.item_views("en"))) == {"5": 20, "6": 20}
    assert r.smembers(KEYS.users("en")) == {f"a{i}" for i in range(10)} | {
        f"b{i}" for i in range(10)}
    assert r.hgetall(KEYS.views("en", "victim")) == {"5": "abc"}
    assert r.zscore(KEYS.dirty("en"), "victim") is None
    assert r.hgetall(OFFSETS) == {"0": "21"}
    [entry] = read_entries(r, KEYS, "en")
    assert (entry.user, entry.views) == ("victim", {6: 1, 5: 2, 7: 3})

    # Still poisoned: repair parks it again, counts nothing.
    assert repair(r, KEYS, "en").still_parked == 1
    assert r.hgetall(KEYS.views("en", "victim")) == {"5": "abc"}
    # Repaired by hand: exactly once, then nothing left.
    r.hset(KEYS.views("en", "victim"), "5", "4")
    result = repair(r, KEYS, "en")
    assert (result.applied, result.still_parked) == (1, 0)
    assert ints(r.hgetall(KEYS.views("en", "victim"))) == {"5": 6, "6": 1, "7": 3}
    assert ints(r.hgetall(KEYS.item_views("en"))) == {"5": 22, "6": 21, "7": 3}
    assert "victim" in r.smembers(KEYS.users("en")) and r.zscore(KEYS.dirty("en"), "victim")
    assert repair(r, KEYS, "en").applied == 0 and not r.exists(KEYS.quarantine("en"))


@pytest.mark.parametrize("poison", ["wrongtype", "overflow"])
def test_wrong_type_and_overflow_are_parked_too(r, poison):
    if poison == "wrongtype":
        r.set(KEYS.views("en", "x"), "1")
    else:
        r.hset(KEYS.views("en", "x"), "9", 2**63 - 1)
    applied = Counts(r, KEYS).write(OFFSETS, [(0, None, 2)],
                                    {"en": {"x": {1: 1, 9: 1}, "ok": {9: 1}}})
    assert [p.user for p in applied.parked] == ["x"]
    assert ints(r.hgetall(KEYS.item_views("en"))) == {"9": 1}
    assert r.hgetall(OFFSETS) == {"0": "2"}


def test_a_poisoned_item_total_is_parked_and_repaired(r):
    r.hset(KEYS.item_views("en"), "9", "zz")
    applied = Counts(r, KEYS).write(OFFSETS, [], {"en": {"u": {9: 2, 5: 1}}})
    assert [(p.user, p.reason.startswith("resource 9")) for p in applied.parked] == [("", True)]
    assert ints(r.hgetall(KEYS.views("en", "u"))) == {"9": 2, "5": 1}
    r.hdel(KEYS.item_views("en"), "9")
    assert repair(r, KEYS, "en").applied == 1
    assert ints(r.hgetall(KEYS.item_views("en"))) == {"9": 2, "5": 1}


def test_a_wrong_typed_internal_key_writes_nothing(r):
    import redis

    r.set(KEYS.dirty("en"), "x")
    with pytest.raises(redis.ResponseError, match="internal key recs:en:_dirty"):
        Counts(r, KEYS).write(OFFSETS, [(0, None, 3)], {"en": {"u": {1: 1}}})
    assert not r.exists(KEYS.views("en", "u")) and not r.exists(OFFSETS)


def test_the_issue_reproduction_through_recs_consume(broker, redis_server, consume_env,
                                                     start_recs):
    topic = f"poison-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 1, f"{topic}.dlq": 1})
    env = consume_env_with(consume_env, topic=topic, dlq_topic=f"{topic}.dlq")
    client = redis_server.client(decode_responses=True)
    client.hset(KEYS.views("en", "victim"), "5", "abc")
    events = ([{"user_id": f"a{i}", "resource_id": 5, "lang": "en"} for i in range(10)]
              + [{"user_id": "victim", "resource_id": 5, "lang": "en"}]
              + [{"user_id": f"b{i}", "resource_id": 5, "lang": "en"} for i in range(10)])
    ends: dict[int, int] = {}
    produce_events(broker.bootstrap, topic, events, ends=ends)
    proc = start_recs(["consume"], env)
    parked = proc.wait_for_log("views parked in the quarantine", timeout=60)
    assert parked["user"] == "victim" and parked["level"] == "error"
    offsets = KEYS.offsets(env["RECS_GROUP"], topic)
    wait_until(lambda: client.hgetall(offsets) == {"0": "21"}, 30, "offsets at 21")
    assert client.hgetall(KEYS.item_views("en")) == {"5": "20"}
    assert client.scard(KEYS.users("en")) == 20
    assert proc.running
    stop_cleanly(proc)

    client.hdel(KEYS.views("en", "victim"), "5")
    out = subprocess.run([sys.executable, "-m", "recs.cli", "repair", "--lang", "en"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert client.hgetall(KEYS.views("en", "victim")) == {"5": "1"}
    assert client.hgetall(KEYS.item_views("en")) == {"5": "21"}
    assert client.sismember(KEYS.users("en"), "victim")
    assert not client.exists(KEYS.quarantine("en"))
