"""``recs consume`` as a real subprocess against real Redis and a real broker: every view
counted exactly once through crashes, rebalances, Redis and broker outages.

Expected counts are computed here from the events the test produced. A run has converged
when the offsets Redis holds equal the partitions' end offsets (nothing left to apply);
only then are the counts compared, so a double count cannot hide behind a transient equal.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import urllib.request
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from consumers.produce import events_from_views, produce_events
from core.errors import InputError
from core.options import parse_kafka_config
from recs.localstack_process import free_port, wait_until
from store.keys import Keys
from tests.conftest import KAFKA, KAFKA_TEST_CONFIG

pytestmark = pytest.mark.integration

KEYS = Keys("recs")


# -- helpers --------------------------------------------------------------------------------
def make_events(n: int, seed: int, users: int = 60, items: int = 40,
                langs=("en", "es")) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        rid = rnd.randrange(1, items + 1)
        event = {"user_id": f"user-{rnd.randrange(users)}", "lang": rnd.choice(langs),
                 "resource_id": rid, "ts": 1764201600000 + rnd.randrange(10**6)}
        roll = rnd.random()
        if roll < 0.1:
            event["resource_id"] = str(rid).zfill(5)  # a decimal string is the same resource
        elif roll < 0.4:
            event["count"] = rnd.randrange(1, 6)
        out.append(event)
    return out


def expected_state(events: list[dict]) -> tuple[dict, dict]:
    views: dict = {}
    items: dict = {}
    for e in events:
        rid, n, lang = str(int(e["resource_id"])), e.get("count", 1), e["lang"]
        user = views.setdefault((lang, e["user_id"]), {})
        user[rid] = user.get(rid, 0) + n
        item = items.setdefault(lang, {})
        item[rid] = item.get(rid, 0) + n
    return views, items


def redis_state(client) -> tuple[dict, dict]:
    views, items = {}, {}
    for lang in client.smembers(KEYS.langs):
        items[lang] = {k: int(v) for k, v in client.hgetall(KEYS.item_views(lang)).items()}
        prefix = KEYS.views(lang, "")
        for key in client.scan_iter(match=KEYS.views_pattern(lang), count=1000):
            views[(lang, key[len(prefix):])] = {k: int(v) for k, v in client.hgetall(key).items()}
    return views, items


class Stream:
    """The events a test sent to its topic and the end offsets their delivery reported."""

    def __init__(self, env: dict, redis_server, producer: dict | None = None) -> None:
        self.env = env
        self.redis_server = redis_server
        self.producer = producer or {}  # producer settings (idempotence, SASL)
        self.events: list[dict] = []
        self.ends: dict[int, int] = {}

    def send(self, events: list[dict], timeout: float = 60) -> None:
        produce_events(self.env["RECS_KAFKA_BOOTSTRAP_SERVERS"], self.env["RECS_TOPIC"],
                       events, self.producer, timeout=timeout, ends=self.ends)
        self.events += events

    def wait_converged(self, timeout: float = 60) -> None:
        """Wait until Redis holds every partition's end offset, then demand exact counts."""
        ends = {str(p): str(o) for p, o in self.ends.items()}
        offsets_key = KEYS.offsets(self.env["RECS_GROUP"], self.env["RECS_TOPIC"])
        client = self.redis_server.client(decode_responses=True)

        def caught_up():
            try:
                return client.hgetall(offsets_key) == ends
            except Exception:  # Redis may be down in the middle of the test
                return False
        try:
            wait_until(caught_up, timeout, f"offsets in Redis reach {ends}")
            assert redis_state(client) == expected_state(self.events)
        finally:
            client.close()


def read_to_marker(bootstrap: str, topic: str) -> list:
    """Every message of ``topic``'s partition 0 before the first ``end-marker`` value (the
    test produced the marker after what it waits for)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-reader",
                       **KAFKA_TEST_CONFIG})
    reader.assign([TopicPartition(topic, 0, 0)])
    got: list = []

    def marker_read():
        got.extend(m for m in reader.consume(100, 0.2) if m.error() is None)
        return got and got[-1].value() == b"end-marker"
    try:
        wait_until(marker_read, 30, f"{topic} read up to the marker")
    finally:
        reader.close()
    return got[:-1]


@pytest.fixture
def stream(consume_env, redis_server) -> Stream:
    return Stream(consume_env, redis_server)


@pytest.fixture
def start_consume(start_recs, consume_env):
    """``start_consume(env=None, joined=True, **changes)``: ``recs consume`` on this test's
    servers (``env`` replaces consume_env; ``changes`` are RECS_* settings), returned once it
    owns partitions unless ``joined=False``."""
    def start(env: dict | None = None, joined: bool = True, **changes):
        proc = start_recs(["consume"], consume_env_with(env or consume_env, **changes))
        if joined:
            proc.wait_for_log("partitions assigned")
        return proc
    return start


def stop_cleanly(*procs, timeout: float = 30) -> None:
    """SIGTERM to every process, then each must exit 0."""
    for proc in procs:
        proc.send(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(timeout) == 0


def total_views(client) -> int:
    try:
        return sum(sum(int(v) for v in client.hvals(KEYS.item_views(lang)))
                   for lang in client.smembers(KEYS.langs))
    except Exception:
        return -1


def consume_env_with(env: dict, **changes) -> dict:
    return {**env, **{f"RECS_{k.upper()}": str(v) for k, v in changes.items()}}


def scrape(port: int) -> dict[tuple, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(port: int, name: str, **labels) -> float | None:
    try:
        return scrape(port).get((name, tuple(sorted(labels.items()))))
    except OSError:
        return None


def assigned(proc) -> list[int]:
    """Partitions the process owns now, from its log (eager assignments log the whole set,
    cooperative ones only what is added or taken away)."""
    owned: set[int] = set()
    for r in proc.records():
        if r.get("msg") == "partitions assigned":
            owned |= set(r["partitions"])
        elif r.get("msg") in ("partitions revoked", "partitions lost"):
            owned -= set(r["partitions"])
    return sorted(owned)


# -- the tests ------------------------------------------------------------------------------
def test_counts_are_exact_for_users_and_languages(stream, start_consume, redis_server):
    stream.send(make_events(1500, seed=1))  # a backlog...
    proc = start_consume()
    stream.send(make_events(1500, seed=2))  # ...then live events
    stream.wait_converged()

    client = redis_server.client(decode_responses=True)
    users = {(e["lang"], e["user_id"]) for e in stream.events}
    assert client.smembers(KEYS.langs) == {"en", "es"}
    for lang in ("en", "es"):
        mine = {u for lg, u in users if lg == lang}
        assert client.smembers(KEYS.users(lang)) == mine
        assert set(client.zrange(KEYS.dirty(lang), 0, -1)) == mine
        assert set(client.zrange(KEYS.touched(lang), 0, -1)) == mine
        seq = int(client.get(KEYS.seq(lang)))
        latest = client.zrange(KEYS.dirty(lang), -1, -1, withscores=True)[0][1]
        assert seq >= 1 and latest == seq
    stop_cleanly(proc)


def test_sigkill_mid_stream_then_restart_counts_exactly(stream, start_consume, redis_server):
    stream.send(make_events(20000, seed=3, users=300, items=100))
    expected = sum(e.get("count", 1) for e in stream.events)
    client = redis_server.client(decode_responses=True)
    first = start_consume(joined=False, batch_size=10)
    wait_until(lambda: total_views(client) > 0.3 * expected, 60, "30% written")
    first.kill()  # a crash at whatever step it was running
    assert total_views(client) < expected  # it really died mid-stream

    last = start_consume(joined=False)
    stream.wait_converged()
    stop_cleanly(last)


@pytest.mark.parametrize("strategy", ["range,roundrobin", "cooperative-sticky"])
def test_two_consumers_share_the_partitions_and_stay_exact(consume_env, stream, start_consume,
                                                           strategy):
    env = {**consume_env, "RECS_KAFKA_CONFIG": consume_env["RECS_KAFKA_CONFIG"]
           + f",partition.assignment.strategy={strategy}".replace(",roundrobin", "")}
    a = start_consume(env)
    stream.send(make_events(2000, seed=4))
    b = start_consume(env, joined=False)  # joins while A is busy: a rebalance mid-stream
    wait_until(lambda: assigned(a) and assigned(b), 60, "both members own partitions")
    stream.send(make_events(2000, seed=5))
    stream.wait_converged()
    assert sorted(assigned(a) + assigned(b)) == [0, 1, 2, 3]
    stop_cleanly(a, b)


def invalid_messages() -> list[tuple[bytes | None, bytes | None, str]]:
    """(key, value, reason): one of every invalid kind."""
    ok = {"user_id": "u", "resource_id": 5, "lang": "en"}

    def with_(**kw):
        return orjson.dumps({**ok, **kw})

    return [
        (b"k0", None, "no_value"),
        (b"k1", b"x" * (64 * 1024 + 1), "too_large"),
        (b"k2", b"\xff\xfe not json", "not_json"),
        (None, b"[1,2,3]", "not_object"),
        (b"k4", b'{"resource_id": 5, "lang": "en"}', "missing_user_id"),
        (b"k5", with_(user_id="a\x00b"), "invalid_user_id"),
        (b"k6", b'{"user_id": "u", "lang": "en"}', "missing_resource_id"),
        (b"k7", with_(resource_id=4294967296), "invalid_resource_id"),
        (b"k8", with_(resource_id=True), "invalid_resource_id"),
        (b"k9", b'{"user_id": "u", "resource_id": 5}', "missing_lang"),
        (b"k10", with_(lang="EN"), "invalid_lang"),
        (b"k11", with_(count=0), "invalid_count"),
        (b"k12", with_(count=2.5), "invalid_count"),
        (b"k13", with_(impression_id="has space"), "invalid_impression_id"),
        (b"k14", with_(impression_id=7), "invalid_impression_id"),
    ]


def test_invalid_events_go_to_the_dead_letter_topic_unchanged(stream, start_consume, broker,
                                                              topics):
    topic, dlq = topics
    valid = make_events(600, seed=6)
    bad = invalid_messages()
    mixed = [(e["user_id"].encode(), orjson.dumps(e)) for e in valid] + \
        [(k, v) for k, v, _ in bad]
    random.Random(7).shuffle(mixed)

    def delivered(err, msg):
        assert err is None
        stream.ends[msg.partition()] = max(stream.ends.get(msg.partition(), 0), msg.offset() + 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "on_delivery": delivered})
    for key, value in mixed:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    stream.events = valid

    port = free_port()
    proc = start_consume(joined=False, metrics_port=port)
    stream.wait_converged()  # exact counts: nothing invalid reached them

    # Offsets are written only after the batch's dead letters were delivered, so a marker
    # sent now lands after all of them: everything before it is the consumer's.
    producer.produce(dlq, key=b"end", value=b"end-marker")
    assert producer.flush(30) == 0
    got = read_to_marker(broker.bootstrap, dlq)
    as_found = Counter((m.key(), m.value(), dict(m.headers())["error"].decode()) for m in got)
    assert as_found == Counter(bad)
    for _key, _value, reason in bad:
        assert metric(port, "recs_consumer_events_invalid_total", reason=reason) == \
            sum(r == reason for *_, r in bad)
    assert metric(port, "recs_consumer_events_applied_total") == len(valid)
    stop_cleanly(proc)


def test_redis_killed_and_restarted_mid_stream_loses_nothing(stream, start_consume,
                                                             redis_server):
    proc = start_consume()
    stream.send(make_events(1000, seed=8))
    stream.wait_converged()

    redis_server.kill()  # SIGKILL: AOF everysec may also lose the last second of writes
    stream.send(make_events(1000, seed=9))
    proc.wait_for_log("redis unavailable")
    redis_server.start()
    stream.send(make_events(1000, seed=10))
    stream.wait_converged()
    stop_cleanly(proc)


def test_redis_restored_from_an_older_snapshot_converges(stream, start_consume, redis_server):
    proc = start_consume()
    stream.send(make_events(1000, seed=11))
    stream.wait_converged()
    snapshot = redis_server.snapshot()
    older = list(stream.events)
    stream.send(make_events(1000, seed=12))
    stream.wait_converged()

    redis_server.restore(snapshot)  # Redis forgets the second phase; the stream is idle now
    client = redis_server.client(decode_responses=True)
    assert redis_state(client) == expected_state(older)
    stream.wait_converged()
    proc.wait_for_log("offsets in Redis differ from ours")
    stream.send(make_events(1000, seed=13))
    stream.wait_converged()
    stop_cleanly(proc)


def test_sigterm_writes_the_batch_in_hand_commits_and_exits_0(consume_env, stream,
                                                              start_consume, redis_server,
                                                              broker):
    port = free_port()
    proc = start_consume(batch_timeout=120, batch_size=100000, metrics_port=port)
    stream.send(make_events(800, seed=14))
    wait_until(lambda: metric(port, "recs_consumer_batch_in_hand") == 800, 30,
               "every event read and held in one batch")
    client = redis_server.client(decode_responses=True)
    assert total_views(client) == 0  # held, not written: the signal must write it

    stop_cleanly(proc)
    stream.wait_converged(timeout=0)
    # Kafka's committed offsets (lag reporting only) caught up too.
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": consume_env["RECS_GROUP"]})
    committed = c.committed([TopicPartition(consume_env["RECS_TOPIC"], p) for p in range(4)],
                            timeout=10)
    c.close()
    assert {tp.partition: tp.offset for tp in committed if tp.offset >= 0} == stream.ends


def test_a_frozen_member_cannot_double_count_after_losing_its_partitions(stream,
                                                                          start_consume):
    """A zombie: a member frozen (SIGSTOP) with a batch in hand while the group gives its
    partitions to another member, then thawed. Its late write must not count twice."""
    port = free_port()
    a = start_consume(batch_timeout=3, metrics_port=port)
    b = start_consume(joined=False)
    wait_until(lambda: assigned(a) and assigned(b), 60, "both members own partitions")
    stream.send(make_events(2000, seed=17))
    wait_until(lambda: (metric(port, "recs_consumer_batch_in_hand") or 0) > 0, 30,
               "A holds a batch it has not written")
    a.send(signal.SIGSTOP)
    try:
        wait_until(lambda: sorted(assigned(b)) == [0, 1, 2, 3], 60, "B took A's partitions")
        stream.wait_converged()  # B replayed A's unwritten events from Redis' offsets
    finally:
        a.send(signal.SIGCONT)
    stream.send(make_events(2000, seed=18))
    stream.wait_converged()
    # A woke up holding stale events: its write was refused, or it learned it lost them.
    wait_until(lambda: any(r.get("msg", "").startswith(
        ("offsets in Redis differ", "partitions lost", "batch dropped")) for r in a.records()),
        30, "A noticed it was fenced")
    stream.wait_converged()
    stop_cleanly(a, b)


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_a_rebalance_during_a_redis_outage_stays_exact(consume_env, stream, start_consume,
                                                       redis_server, strategy):
    """B joins while A waits between Redis attempts with its partitions paused. A
    cooperative rebalance takes only some of them: A must resume the ones it keeps."""
    env = {**consume_env, "RECS_KAFKA_CONFIG": consume_env["RECS_KAFKA_CONFIG"]
           + f",partition.assignment.strategy={strategy}"}
    a = start_consume(env)
    stream.send(make_events(1000, seed=19))
    stream.wait_converged()

    redis_server.kill()
    stream.send(make_events(1000, seed=20))  # A holds these and retries, polling meanwhile
    a.wait_for_log("redis unavailable, retrying")
    b = start_consume(env, joined=False)  # a rebalance while Redis is down
    b.wait_for_log("redis unavailable during assignment")
    redis_server.start()
    wait_until(lambda: assigned(a) and assigned(b) and
               sorted(assigned(a) + assigned(b)) == [0, 1, 2, 3], 60, "the group settled")
    stream.send(make_events(1000, seed=21))
    stream.wait_converged()
    stop_cleanly(a, b)


def test_broker_paused_and_resumed_mid_stream_counts_exactly(stream, start_consume,
                                                             redis_server, broker):
    phase1, phase2 = make_events(1000, seed=15), make_events(1000, seed=16)
    # A send retried across the pause is written once, so the counts must equal what was sent
    # (without idempotence a retry after a lost acknowledgement is a real second event).
    if KAFKA.apache:  # Tansu (the fallback) has no idempotent producer
        stream.producer = {"enable.idempotence": "true"}
    proc = start_consume()
    stream.send(phase1[:500])
    client = redis_server.client(decode_responses=True)
    wait_until(lambda: total_views(client) > 0, 30, "first events written")

    broker.pause()
    try:
        # Producers queue while the broker is frozen. (An outage that outlasts the session
        # timeout, so the member loses its partitions, is the frozen-member test's case.)
        sender = threading.Thread(target=stream.send, args=(phase1[500:] + phase2, 120))
        sender.start()
        time.sleep(3)  # the outage itself, not an assertion
    finally:
        broker.resume()
    sender.join(120)
    stream.wait_converged(timeout=90)
    stop_cleanly(proc, timeout=60)


def test_events_from_views_splits_counts_above_the_event_limit():
    import pandas as pd
    df = pd.DataFrame({"user_id": ["a", "b"], "resource_id": [3, 4], "views": [2, 25000]})
    events = list(events_from_views(df, "en"))
    assert [(e["user_id"], e["resource_id"], e["count"]) for e in events] == \
        [("a", 3, 2), ("b", 4, 10000), ("b", 4, 10000), ("b", 4, 5000)]
    split = list(events_from_views(df.iloc[:1], "es", split=True, ts=5))
    assert split == [{"user_id": "a", "resource_id": 3, "lang": "es", "count": 1, "ts": 5}] * 2


def test_kafka_config_pairs():
    assert parse_kafka_config(["security.protocol=SASL_SSL", "sasl.password=a=b"]) == {
        "security.protocol": "SASL_SSL", "sasl.password": "a=b"}
    with pytest.raises(InputError):
        parse_kafka_config(["no-equals-sign"])
