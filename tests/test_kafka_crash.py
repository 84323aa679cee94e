"""What only a broker that keeps its log on disk allows: Apache Kafka nodes SIGKILLed
mid-stream and started again from their data, and a partition leader SIGKILLed in a
three-node cluster (replication factor 3, ``min.insync.replicas=2``) while ``recs consume``
reads, writes counts and produces dead letters. Counts must be exact (nothing acknowledged
lost, nothing counted twice) and every invalid event on the dead-letter topic.

The producers here are idempotent: a send retried across the crash is written once, so
what the broker acknowledged is exactly the events sent.
"""

from __future__ import annotations

import random
import threading
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from recs.localstack_process import wait_until
from tests.conftest import KAFKA_TEST_CONFIG, own_kafka, recs_env
from tests.test_consume import Stream, invalid_messages, make_events, stop_cleanly, total_views
from tests.test_dead_letters import read_dlq

pytestmark = pytest.mark.integration

# Small record batches, small fetches and a small prefetch queue: when the broker dies the
# consumer holds only a little of the backlog, so the crash surely lands mid-stream.
IDEMPOTENT = {"enable.idempotence": "true", "batch.size": "16384"}
SMALL_FETCHES = {**KAFKA_TEST_CONFIG, "max.partition.fetch.bytes": "16384",
                 "queued.min.messages": "200"}


def send_mixed(stream: Stream, valid: list[dict], bad: list[tuple], seed: int,
               timeout: float = 120) -> None:
    """Send ``valid`` events and ``bad`` (key, value) messages shuffled together; the valid
    ones are what the counts must equal, every message moves the end offsets."""
    mixed = [(e["user_id"].encode(), orjson.dumps(e)) for e in valid] + list(bad)
    random.Random(seed).shuffle(mixed)
    failures: list = []

    def delivered(err, msg):
        if err is not None:
            failures.append(err)
            return
        stream.ends[msg.partition()] = max(stream.ends.get(msg.partition(), 0),
                                           msg.offset() + 1)
    producer = Producer({"bootstrap.servers": stream.env["RECS_KAFKA_BOOTSTRAP_SERVERS"],
                         "acks": "all", "linger.ms": 20, **stream.producer,
                         "on_delivery": delivered})
    for key, value in mixed:
        while True:
            try:
                producer.produce(stream.env["RECS_TOPIC"], key=key, value=value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(timeout) == 0 and not failures, failures[:1]
    stream.events += valid


def bad_messages(tag: str, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` invalid messages, each distinct (so the dead-letter topic can be compared as a
    set: a dead letter resent after a leader change may be there twice)."""
    kinds = [(k, v) for k, v, _ in invalid_messages() if v is not None and len(v) < 1000]
    return [(f"{tag}-{i}".encode(), kinds[i % len(kinds)][1] + f" {tag}-{i}".encode())
            for i in range(n)]


def test_a_broker_sigkilled_mid_stream_restarts_from_its_data_and_loses_nothing(
        tmp_path_factory, redis_server, start_recs):
    kafka = own_kafka(tmp_path_factory)
    try:
        topic = f"views-{uuid.uuid4().hex[:8]}"
        kafka.create_topics({topic: 4, f"{topic}.dlq": 1})
        env = recs_env(redis_server.url, kafka.bootstrap, topic, f"{topic}.dlq", SMALL_FETCHES)
        stream = Stream(env, redis_server, IDEMPOTENT)
        stream.send(make_events(8000, seed=31, users=300, items=100))
        expected = sum(e.get("count", 1) for e in stream.events)
        client = redis_server.client(decode_responses=True)
        proc = start_recs(["consume"], {**env, "RECS_BATCH_SIZE": "200"})
        wait_until(lambda: total_views(client) > 0.3 * expected, 60, "30% written")

        kafka.kill()  # SIGKILL: the log on disk is all that is left
        assert total_views(client) < expected  # the consumer was mid-stream
        # Events sent during the outage wait in the producer until the broker is back.
        sender = threading.Thread(target=stream.send,
                                  args=(make_events(3000, seed=32, users=300), 120))
        sender.start()
        kafka.restart()
        sender.join(150)
        assert not sender.is_alive()
        stream.wait_converged(timeout=120)
        proc.check_alive("after the broker came back")
        stop_cleanly(proc, timeout=60)
    finally:
        kafka.stop()


def test_a_partition_leader_sigkilled_on_three_nodes_loses_nothing(tmp_path_factory,
                                                                   redis_server, start_recs):
    cluster = own_kafka(tmp_path_factory, size=3)
    try:
        topic = f"views-{uuid.uuid4().hex[:8]}"
        dlq = f"{topic}.dlq"
        # Node 1 leads partition 0 of the views and the dead-letter topic, so killing it
        # moves both: the consumers' fetches and their dead-letter sends change leaders.
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        layout = {topic: [[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 3, 2]], dlq: [[1, 2, 3]]}
        for fut in admin.create_topics([NewTopic(t, len(r), replica_assignment=r)
                                        for t, r in layout.items()]).values():
            fut.result(30)
        wait_until(lambda: cluster.leader(topic, 0) == 1 and cluster.leader(dlq, 0) == 1,
                   30, "node 1 leads both")
        env = recs_env(redis_server.url, cluster.bootstrap, topic, dlq,
                       {**SMALL_FETCHES, "partition.assignment.strategy": "cooperative-sticky"})
        stream = Stream(env, redis_server, IDEMPOTENT)
        bad = bad_messages("before", 40)
        send_mixed(stream, make_events(6000, seed=33, users=300, items=100), bad, seed=34)
        expected = sum(e.get("count", 1) for e in stream.events)
        client = redis_server.client(decode_responses=True)
        members = [start_recs(["consume"], {**env, "RECS_BATCH_SIZE": "200"})
                   for _ in range(2)]
        wait_until(lambda: total_views(client) > 0.3 * expected, 90, "30% written")

        cluster.kill(1)
        assert total_views(client) < expected
        later = bad_messages("after", 40)
        send_mixed(stream, make_events(2000, seed=35, users=300), later, seed=36)
        stream.wait_converged(timeout=120)
        wait_until(lambda: cluster.leader(topic, 0) in (2, 3) and cluster.leader(dlq, 0) in (2, 3),
                   30, "another node leads both")
        for proc in members:
            proc.check_alive("after the leader change")

        marker = Producer({"bootstrap.servers": cluster.bootstrap})
        marker.produce(dlq, key=b"end", value=b"end-marker")
        assert marker.flush(30) == 0
        dead = read_dlq(cluster.bootstrap, dlq, b"end-marker")
        assert {(m.key(), m.value()) for m in dead} == set(bad + later)
        stop_cleanly(*members, timeout=60)
    finally:
        cluster.stop()
