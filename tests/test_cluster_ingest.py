"""``recs consume`` on a real Redis Cluster (tests/redis_cluster.py: 3 primaries + 3 replicas
on loopback) reading the session's Kafka broker: counts exactly once per (partition, stream)
(docs/CLUSTER.md section 0) through a primary SIGKILLed and replaced by its replica, a
reshard of the slots holding slot groups, and a rebalance between two members; and, with no
Kafka, the stream writer itself (consumers/stream_writer.py ``StreamWriter``) given a replayed
batch and a stream rolled back on its own.

Expected counts are computed from the events produced. A run has converged when every
partition's restart point (the minimum over its streams) is the partition's end offset;
only then are the counts compared, so a double count cannot hide behind a transient equal.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import orjson
import pytest
import redis

from consumers.batch import PartitionState, StreamBatch
from consumers.dead_letters import DeadLetters
from consumers.metrics import ConsumerMetrics
from consumers.stream_writer import StreamWriter
from recs.localstack_process import LOOPBACK, wait_until
from store.cluster_keys import layout
from store.connection import connect
from store.counts import Counts
from store.progress import read_offsets
from tests.conftest import recs_env
from tests.test_consume import Stream, assigned, expected_state, make_events, stop_cleanly

pytestmark = pytest.mark.integration


# -- helpers --------------------------------------------------------------------------------
def cluster_state(client) -> tuple[dict, dict]:
    """(views per (lang, user), item_views per lang) read from every primary."""
    keys = layout(client)
    views, items = {}, {}
    for lang in client.smembers(keys.langs):
        items[lang] = {k: int(v) for k, v in client.hgetall(keys.item_views(lang)).items()}
        for key in client.scan_iter(match=keys.views_pattern(lang), count=1000):
            user = key.split(":views:", 1)[1]
            views[(lang, user)] = {k: int(v) for k, v in client.hgetall(key).items()}
    return views, items


def queues_hold_every_user(client, events: list[dict]) -> None:
    """Each slot group's ``users``, ``dirty`` and ``touched`` hold exactly its users, and
    ``dirty``'s latest score is the group's ``seq``."""
    keys = layout(client)
    for lang in {e["lang"] for e in events}:
        mine = {e["user_id"] for e in events if e["lang"] == lang}
        for g in keys.slot_groups():
            users = {u for u in mine if keys.group_of(u) == g.group}
            assert client.smembers(g.users(lang)) == users
            assert set(client.zrange(g.dirty(lang), 0, -1)) == users
            assert set(client.zrange(g.touched(lang), 0, -1)) == users
            if users:
                latest = client.zrange(g.dirty(lang), -1, -1, withscores=True)[0][1]
                assert latest == int(client.get(g.seq(lang)))


class ClusterStream(Stream):
    """The events sent, converged when the cluster's restart points reach the ends."""

    def __init__(self, env: dict, cluster) -> None:
        super().__init__(env, cluster)
        self.cluster = cluster

    def restart_points(self, client) -> dict[int, int]:
        return read_offsets(client, layout(client), self.env["RECS_GROUP"],
                            self.env["RECS_TOPIC"])

    def wait_converged(self, timeout: float = 60) -> None:
        client = connect(self.cluster.url, decode_responses=True)

        def caught_up():
            try:
                return self.restart_points(client) == self.ends
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                return False  # a node may be failing over
        try:
            wait_until(caught_up, timeout, f"restart points reach {self.ends}")
            assert cluster_state(client) == expected_state(self.events)
        finally:
            client.close()


def views_written(cluster) -> int:
    client = connect(cluster.url, decode_responses=True)
    try:
        keys = layout(client)
        return sum(int(v) for lang in client.smembers(keys.langs)
                   for v in client.hvals(keys.item_views(lang)))
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        return -1
    finally:
        client.close()


@pytest.fixture
def cluster_env(cluster, broker, topics) -> dict:
    topic, dlq = topics
    return recs_env(cluster.url, broker.bootstrap, topic, dlq)


# -- through recs consume -------------------------------------------------------------------
def test_counts_on_a_cluster_equal_the_events_aggregate(cluster, cluster_env, start_recs):
    stream = ClusterStream(cluster_env, cluster)
    stream.send(make_events(1500, seed=61, users=200))  # a backlog...
    proc = start_recs(["consume"], cluster_env)
    proc.wait_for_log("partitions assigned")
    stream.send(make_events(1500, seed=62, users=200))  # ...then live events
    stream.wait_converged()
    client = connect(cluster.url, decode_responses=True)
    assert client.smembers(layout(client).langs) == {"en", "es"}
    queues_hold_every_user(client, stream.events)
    client.close()
    stop_cleanly(proc)


def _node_of_most_groups(cluster):
    """The primary serving the most slot groups of "en" (and a client on it)."""
    client = connect(cluster.url)
    keys = layout(client)
    by_node: dict[str, int] = {}
    for g in keys.slot_groups():
        name = client.get_node_from_key(g.users("en")).name
        by_node[name] = by_node.get(name, 0) + 1
    client.close()
    busiest = max(by_node, key=by_node.get)
    return cluster.node(busiest)


def streams_on(node, env) -> dict[str, dict]:
    """The progress hashes of "en" and "es" that ``node`` serves (or replicates), as it
    holds them."""
    client = node.client(decode_responses=True)
    try:
        client.execute_command("READONLY")  # a replica answers for its primary's slots
        out = {}
        for lang in ("en", "es"):
            for g in layout(connect_keys_only()).slot_groups():
                name = g.group_offsets(lang, env["RECS_GROUP"], env["RECS_TOPIC"])
                try:
                    out[name] = client.hgetall(name)
                except redis.ResponseError:  # MOVED: another node's
                    continue
        return out
    finally:
        client.close()


def connect_keys_only():
    """A stand-in client for ``layout`` (ClusterKeys without a connection)."""
    from redis.cluster import RedisCluster

    return RedisCluster.__new__(RedisCluster)


def test_a_primary_sigkilled_mid_stream_is_replaced_and_counts_stay_exact(
        fresh_cluster, broker, topics, start_recs):
    """The primary of the most slot groups is SIGKILLed while its replica is paused (CLIENT
    PAUSE WRITE stops it applying the replication stream): the batches written meanwhile are
    lost with their offsets, the cluster promotes the replica, and the counts end exact."""
    topic, dlq = topics
    env = recs_env(fresh_cluster.url, broker.bootstrap, topic, dlq)
    stream = ClusterStream(env, fresh_cluster)
    stream.send(make_events(6000, seed=63, users=400, items=100))
    expected = sum(e.get("count", 1) for e in stream.events)
    victim = _node_of_most_groups(fresh_cluster)
    replica = fresh_cluster.replica_of(victim)
    proc = start_recs(["consume"], {**env, "RECS_BATCH_SIZE": "50"})
    wait_until(lambda: views_written(fresh_cluster) > 0.2 * expected, 60, "20% written")

    paused = replica.client()
    paused.execute_command("CLIENT", "PAUSE", 6000, "WRITE")
    frozen = streams_on(victim, env)
    wait_until(lambda: streams_on(victim, env) != frozen, 30, "batches past the pause")
    lost = streams_on(victim, env)
    victim.kill()  # SIGKILL: what the replica has not applied is lost with it
    paused.close()
    held = streams_on(replica, env)
    assert held.keys() == lost.keys() and held != lost  # the replica lacks those writes
    stream.send(make_events(2000, seed=64, users=400, items=100))
    # The cluster promotes the replica after cluster-node-timeout (2 s) on its own.
    wait_until(lambda: len(fresh_cluster.primaries()) == 3, 30, "a replica promoted")
    wait_until(lambda: replica.client().info("replication")["role"] == "master", 30,
               "the paused replica promoted")
    stream.wait_converged(timeout=90)
    proc.wait_for_log("offsets in Redis differ from ours")  # the rollback was seen, replayed
    proc.check_alive("after the failover")
    stop_cleanly(proc)


def test_a_reshard_of_group_slots_during_ingest_keeps_counts_exact(
        fresh_cluster, broker, topics, start_recs):
    topic, dlq = topics
    env = recs_env(fresh_cluster.url, broker.bootstrap, topic, dlq)
    stream = ClusterStream(env, fresh_cluster)
    stream.send(make_events(4000, seed=65, users=400, items=100))
    keys = layout(connect(fresh_cluster.url))
    ids = primary_ids(fresh_cluster)
    source = _node_of_most_groups(fresh_cluster)
    src_id = ids[f"{LOOPBACK}:{source.port}"]
    dst_id = next(i for a, i in ids.items() if i != src_id)
    moved = [g for g in keys.slot_groups()
             if keys_slot(g.users("en")) in owned_slots(fresh_cluster, source)]
    assert moved, "the source node serves slot groups"
    proc = start_recs(["consume"], {**env, "RECS_BATCH_SIZE": "50"})
    wait_until(lambda: views_written(fresh_cluster) > 0, 60, "some views written")
    done = subprocess.run(
        [shutil.which("redis-cli") or "redis-cli", "--cluster", "reshard",
         f"{LOOPBACK}:{source.port}", "--cluster-from", src_id, "--cluster-to", dst_id,
         "--cluster-slots", "3000", "--cluster-yes"],
        capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    stream.send(make_events(1000, seed=66, users=400, items=100))
    after = owned_slots(fresh_cluster, source)
    assert any(keys_slot(g.users("en")) not in after for g in moved)  # groups really moved
    stream.wait_converged(timeout=60)
    proc.check_alive("after the reshard")
    stop_cleanly(proc)


def primary_ids(cluster) -> dict[str, str]:
    """"host:port" -> node id of every primary."""
    client = cluster.nodes[0].client(decode_responses=True)
    try:
        nodes = client.cluster("nodes")
    finally:
        client.close()
    return {addr.split("@")[0]: v["node_id"] for addr, v in nodes.items()
            if "master" in v["flags"]}


def keys_slot(key: str) -> int:
    from redis.crc import key_slot

    return key_slot(key.encode())


def owned_slots(cluster, node) -> set[int]:
    client = node.client(decode_responses=True)
    try:
        slots: set[int] = set()
        for start, end, *_rest in client.execute_command("CLUSTER SLOTS"):
            primary = _rest[0]
            if int(primary[1]) == node.port:
                slots.update(range(int(start), int(end) + 1))
        return slots
    finally:
        client.close()


def test_two_members_and_a_rebalance_on_a_cluster_stay_exact(cluster, cluster_env, start_recs):
    stream = ClusterStream(cluster_env, cluster)
    a = start_recs(["consume"], cluster_env)
    a.wait_for_log("partitions assigned")
    stream.send(make_events(2000, seed=67, users=300))
    b = start_recs(["consume"], cluster_env)  # joins while A is busy: a rebalance
    wait_until(lambda: assigned(a) and assigned(b), 60, "both members own partitions")
    stream.send(make_events(2000, seed=68, users=300))
    stream.wait_converged()
    assert sorted(assigned(a) + assigned(b)) == [0, 1, 2, 3]
    stop_cleanly(a, b)


# -- the stream writer, no Kafka ------------------------------------------------------------
class Msg:
    """What consumers/batch.py needs of a Kafka message."""

    def __init__(self, partition: int, offset: int, event: dict) -> None:
        self._p, self._o, self._v = partition, offset, orjson.dumps(event)

    def error(self):
        return None

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v

    def timestamp(self):
        return (1, 0)


def _writer(client) -> StreamWriter:
    keys = layout(client)
    metrics = ConsumerMetrics()
    return StreamWriter(Counts(client, keys), keys, "g", "t",
                        DeadLetters(None, "t.dlq", metrics, 0.01, 0.1), metrics, 0.01, 0.1)


def _write(writer: StreamWriter, msgs: list, start: dict[int, int | None]):
    """One batch of ``msgs`` from the positions ``start``; returns the reply."""
    batch = StreamBatch()
    for p, offset in start.items():
        batch.owned[p] = PartitionState(offset)
    batch.add(msgs)
    guards, applied = writer.write(batch, time.sleep)
    if not applied.refused:
        batch.written(guards)
        assert not writer.advance(batch.owned)  # idle streams up to the batch end
    return applied


def _messages(events: list[dict], partitions: int = 2) -> list[Msg]:
    return [Msg(i % partitions, i // partitions, e) for i, e in enumerate(events)]


def test_a_replayed_batch_applies_once_and_a_rolled_back_stream_reapplies_only_itself(cluster):
    client = connect(cluster.url, decode_responses=True)
    keys = layout(client)
    first = make_events(400, seed=69, users=80, langs=("en",))
    second = make_events(400, seed=70, users=80, langs=("en",))
    msgs = _messages(first + second)
    half = len(first) // 2  # per partition: offsets 0..199 are `first`
    writer = _writer(client)
    assert not _write(writer, msgs[:len(first)], {0: None, 1: None}).refused
    # One slot group's keys as they are after the first batch (a replica lagging behind).
    victim = keys.for_user(second[0]["user_id"])
    tag = f"{{en:{victim.group}}}"
    saved = {k: client.dump(k) for k in client.scan_iter(match=f"recs:{tag}:*")}
    client.script_flush()  # as a promoted replica's empty script cache: NOSCRIPT, reloaded
    assert not _write(writer, msgs[len(first):], {0: half, 1: half}).refused
    assert cluster_state(client) == expected_state(first + second)

    # The batch again, from a writer that believes Redis holds less: part of it is refused
    # (Redis holds more), all of it is taken for a lost reply (Redis holds its end); neither
    # counts twice.
    stale = _writer(client)
    assert stale.assigned([0, 1]) == {0: 2 * half, 1: 2 * half}
    for part in (True, False):
        replay = msgs[len(first):len(first) + half] if part else msgs[len(first):]
        stale.held = {name: {p: half for p in held} for name, held in stale.held.items()}
        refused = _write(stale, replay, {0: half, 1: half}).refused
        assert bool(refused) == part
        assert cluster_state(client) == expected_state(first + second)

    # The group loses the second batch (counts and offsets together, as a failover does).
    for k in list(client.scan_iter(match=f"recs:{tag}:*")):
        client.delete(k)
    for k, dumped in saved.items():
        client.restore(k, 0, dumped.encode("latin-1") if isinstance(dumped, str) else dumped,
                       replace=True)
    fresh = _writer(client)
    points = fresh.assigned([0, 1])
    assert points == {0: half, 1: half}  # the restart point went back with that group
    calls = fresh.calls
    assert not _write(fresh, msgs[len(first):], points).refused
    # Only that group (and no item side, no other group) was written again.
    assert fresh.calls - calls == 1
    assert cluster_state(client) == expected_state(first + second)
    assert read_offsets(client, keys, "g", "t") == {0: 2 * half, 1: 2 * half}
    client.close()


def test_the_counts_script_refuses_undeclared_or_misordered_keys(redis_client):
    """One Redis: the header's names must be the declared KEYS (the single source of keys)."""
    from store.counts import apply_args, apply_keys
    from store.counts_script import APPLY_LUA
    from store.keys import Keys

    keys = Keys()
    views = {"en": {"a": {1: 1}, "b": {2: 2}}}
    declared = apply_keys(keys, keys.offsets("g", "t"), views)
    swapped = declared[:-2] + [declared[-1], declared[-2]]
    script = redis_client.register_script(APPLY_LUA)
    with pytest.raises(redis.ResponseError, match="is not the views key"):
        script(keys=swapped, args=apply_args(keys, [], views))
    assert not redis_client.exists(keys.views("en", "a"), keys.views("en", "b"))
    assert script(keys=declared, args=apply_args(keys, [], views)) == []
