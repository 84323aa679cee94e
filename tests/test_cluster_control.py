"""Take-downs and forgetting on a real Redis Cluster (tests/redis_cluster.py: 3 primaries + 3
replicas): ``recs hide``/``unhide``/``forget`` and ``recs control`` (the real Kafka broker)
against published state laid out by hand as the publisher lays it (store/publish.py,
store/switch.py: the model hash and every group's copy, item factors, similar lists, users'
lists and factors in their slot groups, views and item totals), compared with the same steps
on one Redis."""

from __future__ import annotations

import hashlib
import json
import uuid

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from recs.cli import main
from recs.localstack_process import wait_until
from store.cluster_keys import layout
from store.connection import connect
from store.control import Control
from store.control_op import ControlOp
from store.keys import Keys
from tests.conftest import recs_env

LANG, ITEMS, FACTORS, TOP_N = "en", 40, 4, 5


def publish(client, n_users: int, seed: int = 7) -> dict:
    """Published ALS state for ``n_users`` users, written key by key as the publisher would
    (lists are the exact top-N of the factors, viewed resources excluded). Returns what was
    written: {"views": {user: {rid: n}}, "totals": {rid: n}}."""
    keys = layout(client)
    rng = np.random.default_rng(seed)
    ids = np.arange(1, ITEMS + 1, dtype="<u4")
    items = rng.standard_normal((ITEMS, FACTORS)).astype("<f4")
    meta = {"version": "v1", "model": "als", "factors": FACTORS, "top_n": TOP_N}
    pipe = client.pipeline(transaction=False)
    pipe.sadd(keys.langs, LANG)
    pipe.hset(keys.model(LANG), mapping=meta)
    pipe.set(keys.item_factors(LANG), items.tobytes())
    pipe.set(keys.item_ids(LANG), ids.tobytes())
    pipe.set(keys.item_totals(LANG), np.zeros(ITEMS, "<f4").tobytes())
    for group in keys.slot_groups():  # the switch's copy into every group
        if keys.cluster:
            pipe.hset(group.group_model(LANG), mapping=meta)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    for row, rid in enumerate(ids):
        cos = unit @ unit[row]
        cos[row] = -np.inf
        top = np.argsort(-cos)[:TOP_N]
        pipe.zadd(keys.similar(LANG, int(rid)), {str(ids[t]): float(cos[t]) for t in top})
        pipe.sadd(keys.published_items(LANG), int(rid))
    views: dict[str, dict[int, int]] = {}
    totals: dict[int, int] = {}
    for u in range(n_users):
        user, group = f"user-{u}", keys.for_user(f"user-{u}")
        factors = rng.standard_normal(FACTORS).astype("<f4")
        seen = {int(r): int(rng.integers(1, 4)) for r in rng.choice(ids, 3, replace=False)}
        views[user] = seen
        for rid, n in seen.items():
            totals[rid] = totals.get(rid, 0) + n
        scores = items @ factors
        scores[[r - 1 for r in seen]] = -np.inf
        top = np.argsort(-scores)[:TOP_N]
        pipe.zadd(group.recs(LANG, user), {str(ids[t]): float(scores[t]) for t in top})
        pipe.set(group.factors(LANG, user), factors.tobytes())
        pipe.sadd(group.published_users(LANG), user)
        pipe.hset(group.views(LANG, user), mapping=seen)
        pipe.sadd(group.users(LANG), user)
        pipe.zadd(group.touched(LANG), {user: 1})
        pipe.zadd(group.dirty(LANG), {user: 1})
        if len(views) % 1000 == 0:
            pipe.execute()
    for rid, n in totals.items():
        pipe.hset(keys.item_views(LANG), rid, n)
    pipe.execute()
    return {"views": views, "totals": totals}


def user_lists(client, n_users: int) -> dict[str, list[int]]:
    keys = layout(client)
    pipe = client.pipeline(transaction=False)
    for u in range(n_users):
        pipe.zrange(keys.recs(LANG, f"user-{u}"), 0, -1)
    return {f"user-{u}": sorted(int(m) for m in r)
            for u, r in enumerate(pipe.execute())}


def similar_lists(client) -> dict[int, list[int]]:
    keys = layout(client)
    pipe = client.pipeline(transaction=False)
    for rid in range(1, ITEMS + 1):
        pipe.zrange(keys.similar(LANG, rid), 0, -1)
    return {rid: sorted(int(m) for m in r) for rid, r in zip(range(1, ITEMS + 1),
                                                             pipe.execute(), strict=True)}


def group_hidden(client) -> list[set[int]]:
    """The take-downs each slot group's copy holds."""
    keys = layout(client)
    return [{int(r) for r in client.hkeys(g.group_hidden(LANG))} for g in keys.slot_groups()]


def totals(client) -> dict[int, int]:
    return {int(k): int(v) for k, v in client.hgetall(layout(client).item_views(LANG)).items()}


@pytest.fixture
def one(redis_server):
    client = redis_server.client()
    yield redis_server.url, client
    client.close()


@pytest.fixture
def many(cluster):
    client = connect(cluster.url)
    yield cluster.url, client
    client.close()


def _most_listed(lists: dict[str, list[int]]) -> int:
    counts: dict[int, int] = {}
    for members in lists.values():
        for m in members:
            counts[m] = counts.get(m, 0) + 1
    return max(sorted(counts), key=counts.get)


def test_hide_cleans_every_group_and_unhide_restores_as_on_one_redis(one, many):
    n = 300
    results = {}
    for name, (url, client) in (("one", one), ("cluster", many)):
        publish(client, n)
        before, similar_before = user_lists(client, n), similar_lists(client)
        rid = _most_listed(before)
        holders = [u for u, m in before.items() if rid in m]
        assert main(["hide", str(rid), "--lang", LANG, "--reason", "dmca",
                     "--redis-url", url]) == 0
        after, similar_after = user_lists(client, n), similar_lists(client)
        assert all(rid not in m and len(m) == TOP_N for m in after.values())
        assert all(rid not in m for m in similar_after.values()) and not similar_after[rid]
        assert [u for u in before if before[u] != after[u]] == holders  # only those refilled
        assert json.loads(client.hget(layout(client).hidden(LANG), rid))["reason"] == "dmca"
        assert group_hidden(client) == [{rid}] * len(layout(client).slot_groups())
        assert not client.exists(layout(client).takedown_work(LANG))
        assert main(["unhide", str(rid), "--lang", LANG, "--redis-url", url]) == 0
        assert group_hidden(client) == [set()] * len(layout(client).slot_groups())
        assert not client.exists(layout(client).hidden(LANG))
        assert similar_lists(client)[rid] == similar_before[rid]  # restored at once
        results[name] = (rid, after, similar_after)
    assert len(group_hidden(many[1])) == 64
    assert results["one"] == results["cluster"]


def test_hidden_lists_the_cluster_take_downs(many, capsys):
    url, client = many
    publish(client, 10)
    assert main(["hide", "3", "7", "--lang", LANG, "--reason", "spam", "--redis-url", url]) == 0
    capsys.readouterr()
    assert main(["hidden", "--lang", LANG, "--json", "--redis-url", url]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["resource_id"], r["reason"]) for r in rows] == [(3, "spam"), (7, "spam")]


def test_forget_removes_every_trace_and_its_counts_once_as_on_one_redis(one, many):
    n = 200
    left = {}
    for name, (url, client) in (("one", one), ("cluster", many)):
        written = publish(client, n)
        keys, user = layout(client), "user-17"
        group = keys.for_user(user)
        client.zadd(group.claims(LANG), {user: 10**13})
        assert main(["forget", user, "--lang", LANG, "--redis-url", url]) == 0
        assert main(["forget", user, "--lang", LANG, "--redis-url", url]) == 0  # a retry
        assert not client.exists(group.views(LANG, user), group.factors(LANG, user),
                                 group.recs(LANG, user))
        for queue in (group.dirty, group.touched, group.claims):
            assert client.zscore(queue(LANG), user) is None
        for members in (group.users, group.published_users):
            assert not client.sismember(members(LANG), user)
        tomb = client.zscore(group.forgotten(LANG), hashlib.sha1(user.encode()).hexdigest())
        assert tomb is not None and tomb == float(client.get(group.seq(LANG)))
        want = dict(written["totals"])
        for rid, c in written["views"][user].items():
            want[rid] -= c
        assert totals(client) == {r: c for r, c in want.items() if c > 0}
        left[name] = totals(client)
    assert left["one"] == left["cluster"]


def test_a_forget_cut_between_its_two_steps_is_finished_once(many, monkeypatch):
    url, client = many
    written = publish(client, 50)
    keys, user = layout(client), "user-3"
    group = keys.for_user(user)
    import store.control_cluster as control

    def crash(*_a, **_k):
        raise ConnectionError("killed between the group step and the item step")
    monkeypatch.setattr(control, "finish_forgets", crash)
    with pytest.raises(ConnectionError):
        Control(client, keys).run([ControlOp("forget", user, LANG)])
    monkeypatch.undo()
    assert not client.exists(group.views(LANG, user)) and totals(client) == written["totals"]
    parked = client.hgetall(group.forget_pending(LANG))
    assert len(parked) == 1
    assert main(["forget", user, "--lang", LANG, "--redis-url", url]) == 0  # finishes it
    want = {r: c - written["views"][user].get(r, 0) for r, c in written["totals"].items()}
    want = {r: c for r, c in want.items() if c > 0}
    assert totals(client) == want and not client.exists(group.forget_pending(LANG))
    # Cut after the item step, before the parked entry was dropped: given back only once.
    client.hset(group.forget_pending(LANG), mapping=parked)
    assert control.finish_forgets(client, keys, LANG) == 0
    assert totals(client) == want and not client.exists(group.forget_pending(LANG))


def test_a_forget_is_on_the_replica_before_its_counts_are_taken_back(cluster, many):
    """With the replica of the user's node paused (CLIENT PAUSE WRITE stops it applying the
    replication stream), the forget returns only once that replica holds the group step
    too: a failover after the item side took the counts back cannot bring the views back
    without their totals."""
    url, client = many
    publish(client, 50)
    keys, user = layout(client), "user-3"
    views = keys.for_user(user).views(LANG, user)
    replica = cluster.replica_of(cluster.node(client.get_node_from_key(views).name))
    reader = replica.client()
    paused = replica.client()
    try:
        reader.execute_command("READONLY")  # a replica answers for its primary's slots
        wait_until(lambda: reader.exists(views), 10, "the views on the replica")
        paused.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        assert main(["forget", user, "--lang", LANG, "--redis-url", url]) == 0
        assert not reader.exists(views)
    finally:
        paused.close()
        reader.close()


def test_a_control_event_is_on_the_replicas_before_the_consumer_offsets_move(cluster, many):
    """A hide as ``recs control`` writes it (guarded by the consumer's offsets) with the
    replica of the item side's node paused: the write returns, its guard set, only once that
    replica holds the take-down, so a failover cannot lose an event the consumer's offsets
    call done (the consumer restarts from them)."""
    url, client = many
    publish(client, 30)
    keys = layout(client)
    hidden = keys.hidden(LANG)
    replica = cluster.replica_of(cluster.node(client.get_node_from_key(hidden).name))
    reader, paused = replica.client(), replica.client()
    guard = Keys().offsets("control-test", "resource-changes")
    try:
        reader.execute_command("READONLY")
        paused.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
        applied = Control(client, keys).write(
            guard, [(0, None, 1)], [ControlOp("hide", "3", LANG, "spam", at=(0, 0))])
        assert applied.refused == {}
        assert reader.hexists(hidden, "3")
        assert client.hget(guard, "0") == b"1"
    finally:
        paused.close()
        reader.close()


@pytest.mark.integration
def test_control_events_apply_once_on_a_cluster_when_sent_again(many, broker, start_recs):
    url, client = many
    n = 120
    written = publish(client, n)
    keys = layout(client)
    topic = f"resource-changes-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 2, f"{topic}.dlq": 1})
    cg = f"control-{uuid.uuid4().hex[:8]}"
    env = {**recs_env(url, broker.bootstrap, "unused-views", "unused-views.dlq"),
           "RECS_CONTROL_TOPIC": topic, "RECS_CONTROL_DLQ_TOPIC": f"{topic}.dlq",
           "RECS_CONTROL_GROUP": cg}
    rid, user = _most_listed(user_lists(client, n)), "user-5"
    ends: dict[int, int] = {}

    def on_delivery(err, msg):
        assert err is None
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "on_delivery": on_delivery})
    for e in ({"action": "hide", "resource_id": rid, "lang": LANG, "reason": "dmca"},
              {"action": "forget", "user_id": user, "lang": LANG}):
        producer.produce(topic, key=str(e.get("resource_id", e.get("user_id"))).encode(),
                         value=orjson.dumps(e))
    assert producer.flush(30) == 0
    guard = Keys().offsets(cg, topic)  # the consumer's own progress (set last)
    want = {str(p): str(o) for p, o in ends.items()}

    def held() -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in client.hgetall(guard).items()}
    proc = start_recs(["control"], env)
    wait_until(lambda: held() == want, 60, "the control events applied")
    wait_until(lambda: not client.exists(keys.takedown_work(LANG)), 30, "lists settled")
    assert group_hidden(client) == [{rid}] * 64
    assert all(rid not in m for m in user_lists(client, n).values())
    # Later decisions: the resource unhidden by hand, the user back with new views.
    assert main(["unhide", str(rid), "--lang", LANG, "--redis-url", url]) == 0
    group = keys.for_user(user)
    client.hset(group.views(LANG, user), "1", 2)
    client.hincrby(keys.item_views(LANG), "1", 2)
    expected = totals(client)
    # The consumer's progress lost (as if it died before setting it): every event comes
    # again, and each slot skips what its own progress says it applied.
    proc.kill()
    client.delete(guard)
    proc = start_recs(["control"], env)
    wait_until(lambda: held() == want, 60, "the events read again")
    assert group_hidden(client) == [set()] * 64 and not client.exists(keys.hidden(LANG))
    assert client.hgetall(group.views(LANG, user)) == {b"1": b"2"}
    assert totals(client) == expected
    gone = {r: c - written["views"][user].get(r, 0) for r, c in written["totals"].items()}
    gone[1] = gone.get(1, 0) + 2
    assert expected == {r: c for r, c in gone.items() if c > 0}
    assert proc.stop() == 0


def _sscans(cluster) -> int:
    calls = 0
    for node in cluster.primaries():
        c = node.client(decode_responses=True)
        calls += int(c.info("commandstats").get("cmdstat_sscan", {}).get("calls", 0))
        c.close()
    return calls


def _reset_stats(cluster) -> None:
    for node in cluster.primaries():
        c = node.client()
        c.config_resetstat()
        c.close()


def test_a_cluster_settle_cut_half_way_resumes_group_by_group(cluster, monkeypatch):
    from store import takedown_scan
    from store.takedown_scan import begin_scan, scan_lists
    from trainer.pipeline.takedown import settle

    monkeypatch.setattr(takedown_scan, "LIST_STEP_OPS", 21 * 10)  # 10 lists a step
    n = 1500
    client = connect(cluster.url)
    keys = layout(client)
    publish(client, n)
    rid = _most_listed(user_lists(client, n))
    hides = [ControlOp("hide", str(rid), LANG), ControlOp("hide", str(rid + 1), LANG)]
    Control(client, keys).run(hides)
    _reset_stats(cluster)
    settle(client, keys, LANG)
    whole, settled = _sscans(cluster), user_lists(client, n)

    cluster.flush()
    publish(client, n)
    before = user_lists(client, n)
    Control(client, keys).run(hides)
    _reset_stats(cluster)
    seq = begin_scan(client, keys, LANG)
    assert not scan_lists(client, keys, LANG, "users", [rid, rid + 1], 40, seq=seq)  # cut
    progress = [client.hget(g.group_takedown_scan(LANG), "users") for g in keys.slot_groups()]
    assert b"done" in progress and b"0" in progress  # some groups done, some not stepped
    report = settle(client, keys, LANG)
    assert _sscans(cluster) == whole  # no step made twice
    assert user_lists(client, n) == settled
    assert report.users_refilled == sum(bool({rid, rid + 1} & set(m)) for m in before.values())
    assert not any(client.exists(g.group_takedown_scan(LANG), g.group_takedown_found(
        LANG, "users")) for g in keys.slot_groups())
    client.close()


def test_a_hide_without_a_language_reaches_every_language_and_group(many):
    url, client = many
    publish(client, 20)
    keys = layout(client)
    client.sadd(keys.langs, "de")  # a language with nothing published yet
    assert main(["hide", "9", "--redis-url", url]) == 0
    for lang in ("de", LANG):
        assert client.hexists(keys.hidden(lang), "9")
        assert all(client.hexists(g.group_hidden(lang), "9") for g in keys.slot_groups())
    assert main(["unhide", "9", "--redis-url", url]) == 0
    for lang in ("de", LANG):
        assert not any(client.exists(g.group_hidden(lang)) for g in keys.slot_groups())
