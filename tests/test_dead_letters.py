"""Dead letters that cannot be copied whole, and a dead-letter topic that refuses for good:
``recs consume`` as a real subprocess against the session's broker (Apache Kafka, with its
real ``message.max.bytes``) and a real redis-server; on a broker of their own, a dead-letter
topic that refuses by size (its ``max.message.bytes``) and one closed by ACL (SASL/PLAIN
and StandardAuthorizer)."""

from __future__ import annotations

import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumers.events import MAX_VALUE_BYTES
from recs.localstack_kafka import SaslUsers
from recs.localstack_process import free_port, wait_until
from store.keys import Keys
from tests.conftest import KAFKA, KAFKA_TEST_CONFIG, own_kafka, recs_env
from tests.test_consume import Stream, consume_env_with, make_events, metric, stop_cleanly

pytestmark = pytest.mark.integration

KEYS = Keys("recs")


@pytest.fixture
def stream(consume_env, redis_server) -> Stream:
    return Stream(consume_env, redis_server)


def read_dlq(bootstrap: str, dlq: str, until: bytes, client: dict | None = None) -> list:
    """The dead-letter topic's messages up to the marker ``until`` (left out)."""
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "dlq-reader",
                       **KAFKA_TEST_CONFIG, **(client or {})})
    reader.assign([TopicPartition(dlq, 0, 0)])
    got: list = []

    def read_to_marker():
        got.extend(m for m in reader.consume(100, 0.2) if m.error() is None)
        return got and got[-1].value() == until
    wait_until(read_to_marker, 30, "the dead-letter topic read up to the marker")
    reader.close()
    return got[:-1]


def test_a_one_megabyte_event_leaves_a_truncated_dead_letter_and_ingest_goes_on(
        stream, consume_env, start_recs, broker, topics):
    topic, dlq = topics
    # What a default producer may send: the broker accepts it, but its copy with the
    # dead-letter headers is over the producer's message.max.bytes.
    huge = b'{"user_id": "u", "pad": "' + b"x" * 999_920 + b'"}'
    assert 999_900 < len(huge) < 1_000_000
    stream.send(make_events(300, seed=21))
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    at: list[int] = []
    producer.produce(topic, key=b"big", value=huge, partition=0, headers=[("trace", b"abc")],
                     on_delivery=lambda err, msg: at.append(msg.offset()))
    assert producer.flush(30) == 0
    stream.send(make_events(300, seed=22))
    stream.ends[0] = max(stream.ends.get(0, 0), at[0] + 1)  # it counts on partition 0

    port = free_port()
    proc = start_recs(["consume"], consume_env_with(consume_env, metrics_port=port))
    # Partition 0's offsets count the huge message; the others converge as usual.
    stream.wait_converged()
    producer.produce(dlq, key=b"end", value=b"end-marker")
    assert producer.flush(30) == 0
    [dead] = read_dlq(broker.bootstrap, dlq, b"end-marker")
    headers = dict(dead.headers())
    assert dead.key() == b"big" and dead.value() == huge[:MAX_VALUE_BYTES]
    assert headers["error"] == b"too_large" and headers["truncated"] == b"true"
    assert headers["original-size"] == str(len(huge)).encode()
    assert headers["trace"] == b"abc"
    assert metric(port, "recs_consumer_dlq_truncated_total") == 1
    assert proc.running
    stop_cleanly(proc)


def test_a_dead_letter_topic_that_refuses_for_good_stops_before_the_batch(
        consume_env, start_recs, redis_server, broker, topics):
    topic, _ = topics
    producer = Producer({"bootstrap.servers": broker.bootstrap})
    valid = [orjson.dumps(e) for e in make_events(40, seed=23)]
    for value in valid[:20]:
        producer.produce(topic, value=value, partition=1)
    producer.produce(topic, value=b"not json", partition=1)  # offset 20
    for value in valid[20:]:
        producer.produce(topic, value=value, partition=1)
    assert producer.flush(30) == 0

    env = {**consume_env, "RECS_DLQ_TOPIC": "bad topic!"}  # a name the broker refuses
    proc = start_recs(["consume"], env)
    assert proc.wait(60) != 0
    errors = [r for r in proc.records() if r.get("level") == "error"]
    assert [r["msg"][:46] for r in errors] == ["dead-letter topic refuses a dead letter for go"]
    assert errors[0]["source.offset"] == "20" and "kafka_error" in errors[0]
    client = redis_server.client(decode_responses=True)
    held = client.hgetall(KEYS.offsets(env["RECS_GROUP"], topic))
    assert int(held.get("1", 0)) <= 20  # nothing past the undelivered dead letter

    # Once the topic is fixed the restart replays from there: every valid view counted.
    proc = start_recs(["consume"], {**consume_env, "RECS_UNTIL_DRAINED": "true"})
    assert proc.wait(60) == 0
    assert client.hgetall(KEYS.offsets(env["RECS_GROUP"], topic)).get("1") == "41"
    total = sum(int(v) for lang in client.smembers(KEYS.langs)
                for v in client.hvals(KEYS.item_views(lang)))
    assert total == sum(orjson.loads(v).get("count", 1) for v in valid)


def test_shrinking_a_dead_letter_cuts_the_value_then_everything_but_our_headers():
    from consumers.batch import DeadLetter as _DeadLetter

    own = [("error", b"too_large"), ("source.offset", b"7")]
    dead = _DeadLetter(b"v" * 100_000, b"k", [("trace", b"t")], own)
    assert dead.shrink() and dead.value == b"v" * MAX_VALUE_BYTES
    marks = [("truncated", b"true"), ("original-size", b"100000")]
    assert dead.headers == [("trace", b"t"), *own, *marks]
    assert dead.shrink() and dead.value == b"" and dead.headers == [*own, *marks]
    assert not dead.shrink()
    small = _DeadLetter(b"abc", None, [("h", b"x" * 2_000_000)], own)
    assert small.shrink() and small.value == b"" and small.headers == [
        *own, ("truncated", b"true"), ("original-size", b"3")]


def _produce_around_a_bad_one(bootstrap: str, topic: str, bad: bytes, client=None,
                              **bad_options) -> tuple[list[bytes], int]:
    """40 valid events and ``bad`` at offset 20, all on partition 1; (valid, bad's offset)."""
    producer = Producer({"bootstrap.servers": bootstrap, **(client or {})})
    valid = [orjson.dumps(e) for e in make_events(40, seed=24)]
    at: list[int] = []
    for value in valid[:20]:
        producer.produce(topic, value=value, partition=1)
    producer.produce(topic, value=bad, partition=1, key=b"bad",
                     on_delivery=lambda err, msg: at.append(msg.offset()), **bad_options)
    for value in valid[20:]:
        producer.produce(topic, value=value, partition=1)
    assert producer.flush(30) == 0
    return valid, at[0]


def _counted(client) -> int:
    return sum(int(v) for lang in client.smembers(KEYS.langs)
               for v in client.hvals(KEYS.item_views(lang)))


def test_a_dead_letter_over_the_topics_max_message_bytes_goes_truncated(
        broker, redis_server, start_recs):
    if not KAFKA.apache:
        pytest.skip(f"needs a broker enforcing topic configs: Apache Kafka ({KAFKA.kind} here)")
    topic = f"views-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 2})
    broker.create_topics({f"{topic}.dlq": 1}, config={"max.message.bytes": "4096"})
    # Under the consumer's own 64 KiB limit, so it is sent whole first: the broker refuses.
    bad = b"not json " + b"x" * 19_991
    valid, _ = _produce_around_a_bad_one(broker.bootstrap, topic, bad,
                                         headers=[("trace", b"abc")])
    port = free_port()
    env = recs_env(redis_server.url, broker.bootstrap, topic, f"{topic}.dlq")
    proc = start_recs(["consume"], {**consume_env_with(env, metrics_port=port),
                                    "RECS_UNTIL_DRAINED": "true"})
    assert proc.wait(60) == 0
    client = redis_server.client(decode_responses=True)
    assert client.hgetall(KEYS.offsets(env["RECS_GROUP"], topic)).get("1") == "41"
    assert _counted(client) == sum(orjson.loads(v).get("count", 1) for v in valid)
    marker = Producer({"bootstrap.servers": broker.bootstrap})
    marker.produce(f"{topic}.dlq", value=b"end-marker")
    assert marker.flush(30) == 0
    [dead] = read_dlq(broker.bootstrap, f"{topic}.dlq", b"end-marker")
    headers = dict(dead.headers())
    assert (dead.key(), dead.value()) == (b"bad", b"")
    assert headers["error"] == b"not_json" and headers["truncated"] == b"true"
    assert headers["original-size"] == b"20000" and "trace" not in headers
    warned = [r for r in proc.records() if r.get("msg", "").startswith("dead letter too large")]
    assert len(warned) == 1 and "MSG_SIZE_TOO_LARGE" in warned[0]["error"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """A broker of our own with SASL/PLAIN and ACLs: ``recs`` may do only what is granted."""
    kafka = own_kafka(tmp_path_factory, sasl=SaslUsers({"admin": "admin-secret",
                                                        "recs": "recs-secret"}))
    yield kafka
    kafka.stop()


def _grant(kafka, *grants: tuple) -> None:
    """(resource type, name, pattern type, operation) ALLOWed for User:recs."""
    from confluent_kafka.admin import AclBinding, AclPermissionType, AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap, **kafka.client_config})
    bindings = [AclBinding(kind, name, pattern, "User:recs", "*", op, AclPermissionType.ALLOW)
                for kind, name, pattern, op in grants]
    for fut in admin.create_acls(bindings).values():
        fut.result(30)


def test_a_dead_letter_topic_closed_by_acl_stops_the_consumer_until_write_is_granted(
        secured, redis_server, start_recs):
    from confluent_kafka.admin import AclOperation as Op
    from confluent_kafka.admin import ResourcePatternType as Pattern
    from confluent_kafka.admin import ResourceType as Kind

    topic = f"views-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    secured.create_topics({topic: 2, dlq: 1})
    _grant(secured, (Kind.TOPIC, topic, Pattern.LITERAL, Op.READ),
           (Kind.TOPIC, topic, Pattern.LITERAL, Op.DESCRIBE),
           (Kind.GROUP, "recs-", Pattern.PREFIXED, Op.READ),
           (Kind.TOPIC, dlq, Pattern.LITERAL, Op.DESCRIBE))  # no WRITE on the dead letters
    valid, bad_at = _produce_around_a_bad_one(secured.bootstrap, topic, b"not json",
                                              secured.client_config)
    env = recs_env(redis_server.url, secured.bootstrap, topic, dlq,
                   {**KAFKA_TEST_CONFIG, **secured.sasl.client("recs")})
    proc = start_recs(["consume"], env)
    assert proc.wait(60) != 0
    errors = [r for r in proc.records() if r.get("level") == "error"]
    assert [r["msg"][:46] for r in errors] == ["dead-letter topic refuses a dead letter for go"]
    assert errors[0]["source.offset"] == str(bad_at)
    assert "TOPIC_AUTHORIZATION_FAILED" in errors[0]["kafka_error"]
    assert "recs-secret" not in proc.log_path.read_text(errors="replace")
    client = redis_server.client(decode_responses=True)
    assert int(client.hgetall(KEYS.offsets(env["RECS_GROUP"], topic)).get("1", 0)) <= bad_at

    _grant(secured, (Kind.TOPIC, dlq, Pattern.LITERAL, Op.WRITE))
    proc = start_recs(["consume"], {**env, "RECS_UNTIL_DRAINED": "true"})
    assert proc.wait(60) == 0
    assert client.hgetall(KEYS.offsets(env["RECS_GROUP"], topic)).get("1") == "41"
    assert _counted(client) == sum(orjson.loads(v).get("count", 1) for v in valid)
    marker = Producer({"bootstrap.servers": secured.bootstrap, **secured.client_config})
    marker.produce(dlq, value=b"end-marker")
    assert marker.flush(30) == 0
    [dead] = read_dlq(secured.bootstrap, dlq, b"end-marker", secured.client_config)
    assert (dead.key(), dead.value(), dict(dead.headers())["error"]) == (
        b"bad", b"not json", b"not_json")
