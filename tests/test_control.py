"""``recs control`` as a real subprocess on the Tansu broker and a real redis-server: hide,
unhide and forget events applied exactly once and in order through a SIGKILL (events that
arrive while it is down included), their lists cleaned and refilled, invalid events to the
dead-letter topic; and the event parser as a pure function."""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from consumers.control import parse_control
from consumers.events import InvalidEvent
from recs.localstack_process import wait_until
from store.counts import Counts
from store.keys import Keys
from tests.conftest import KAFKA_TEST_CONFIG
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.synth import generate
from trainer.pipeline.retrain import train_language
from trainer.settings import RetrainConfig

KEYS = Keys()


# -- the event ------------------------------------------------------------------------------


def test_valid_events_parse_to_operations():
    op = parse_control(b'{"action": "hide", "resource_id": "0042", "lang": "en", '
                       b'"reason": "dmca", "ts": 1764201600000}')
    assert (op.action, op.target, op.lang, op.reason, op.ts) == ("hide", "42", "en", "dmca",
                                                                 1764201600000)
    assert json.loads(op.value()) == {"reason": "dmca", "ts": 1764201600000}
    op = parse_control(b'{"action": "unhide", "resource_id": 7}')
    assert (op.action, op.target, op.lang) == ("unhide", "7", None)
    op = parse_control(b'{"action": "forget", "user_id": "u-1"}')
    assert (op.action, op.target, op.lang) == ("forget", "u-1", None)


@pytest.mark.parametrize("value, reason", [
    (b"", "no_value"), (b"{", "not_json"), (b"[1]", "not_object"),
    (b'{"action": "delete", "resource_id": 1}', "invalid_action"),
    (b'{"resource_id": 1}', "invalid_action"),
    (b'{"action": "hide"}', "invalid_resource_id"),
    (b'{"action": "hide", "resource_id": 0}', "invalid_resource_id"),
    (b'{"action": "hide", "resource_id": 4294967296}', "invalid_resource_id"),
    (b'{"action": "hide", "resource_id": true}', "invalid_resource_id"),
    (b'{"action": "hide", "resource_id": 1, "lang": "EN"}', "invalid_lang"),
    (b'{"action": "hide", "resource_id": 1, "reason": 5}', "invalid_reason"),
    (b'{"action": "hide", "resource_id": 1, "ts": "now"}', "invalid_ts"),
    (b'{"action": "forget"}', "invalid_user_id"),
    (b'{"action": "forget", "user_id": "a\\u0000b"}', "invalid_user_id"),
])
def test_invalid_events_say_why(value, reason):
    with pytest.raises(InvalidEvent) as exc:
        parse_control(value)
    assert exc.value.reason == reason


# -- the consumer ---------------------------------------------------------------------------


@pytest.mark.integration
def test_control_events_apply_exactly_once_in_order_through_a_sigkill(
        redis_server, redis_client, broker, start_recs, consume_env, tmp_path):
    topic = f"resource-changes-{uuid.uuid4().hex[:8]}"
    broker.create_topics({topic: 2, f"{topic}.dlq": 1})
    env = {**consume_env, "RECS_CONTROL_TOPIC": topic, "RECS_CONTROL_DLQ_TOPIC": f"{topic}.dlq",
           "RECS_CONTROL_GROUP": f"control-{uuid.uuid4().hex[:8]}"}
    data = generate(n_users=300, n_resources=80, langs=("en",), seed=3)
    views = data.views_for("en")
    by_user: dict[str, dict[int, int]] = {}
    for user, rid, n in zip(views["user_id"], views["resource_id"], views["views"], strict=True):
        by_user.setdefault(str(user), {})[int(rid)] = int(n)
    Counts(redis_client, KEYS).apply(KEYS.offsets("t", "v"), [], {"en": by_user})
    train_language(redis_client, KEYS, "en", RetrainConfig(
        filters=FilterConfig(min_item_views=10, max_item_views=0, min_user_views=3),
        spec=ModelSpec("als", als=AlsConfig(factors=8, iterations=4)), top_n=10,
        model_dir=str(tmp_path)))
    totals = {int(k): int(v) for k, v in redis_client.hgetall(KEYS.item_views("en")).items()}

    rnd = random.Random(4)
    resources = sorted(totals, key=totals.get)[-12:]
    events = [{"action": rnd.choice(["hide", "hide", "unhide"]), "resource_id": rnd.choice(
        resources), "lang": "en", "ts": 1764201600000 + i, "reason": f"r{i}"} for i in range(160)]
    forgotten = sorted(by_user)[:3]
    events[40:40] = [{"action": "forget", "user_id": u} for u in forgotten]
    bad = [b'{"action": "explode", "resource_id": 1}', b"not json"]
    ends: dict[int, int] = {}

    def on_delivery(err, msg):
        assert err is None
        ends[msg.partition()] = max(ends.get(msg.partition(), 0), msg.offset() + 1)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "on_delivery": on_delivery})

    def send(batch, raw=()):
        for e in batch:  # keyed by resource: one resource's events keep their order
            producer.produce(topic, key=str(e.get("resource_id", e.get("user_id"))).encode(),
                             value=orjson.dumps(e))
        for value in raw:
            producer.produce(topic, key=b"bad", value=value)
        assert producer.flush(30) == 0

    offsets_key = KEYS.offsets(env["RECS_CONTROL_GROUP"], topic)

    def held() -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in redis_client.hgetall(offsets_key).items()}

    proc = start_recs(["control"], env)
    proc.wait_for_log("partitions assigned")
    send(events[:90], bad)  # the forgets are among these
    first = {str(p): str(o) for p, o in ends.items()}
    wait_until(lambda: held() == first, 60, "the first events applied")
    # The forgotten users come back with new views: applying a forget a second time (a
    # replay of an event already applied) would wipe them.
    again = {u: {resources[0]: 2} for u in forgotten}
    Counts(redis_client, KEYS).apply(KEYS.offsets("t", "v"), [], {"en": again})
    send(events[90:130])
    wait_until(lambda: held() != first, 30, "a batch of the second part applied")
    proc.kill()  # SIGKILL, mid-stream
    send(events[130:])  # these arrive while it is down
    proc = start_recs(["control"], env)
    want = {str(p): str(o) for p, o in ends.items()}
    wait_until(lambda: held() == want, 60, "every control event applied")
    wait_until(lambda: not redis_client.exists(KEYS.takedown_work("en")), 30, "lists settled")

    last: dict[int, dict] = {}
    for e in events:
        if e["action"] != "forget":
            last[e["resource_id"]] = e
    expected = {rid: {"reason": e["reason"], "ts": e["ts"]} for rid, e in last.items()
                if e["action"] == "hide"}
    got = {int(k): json.loads(v) for k, v in redis_client.hgetall(KEYS.hidden("en")).items()}
    assert got == expected and expected
    for user in redis_client.smembers(KEYS.published_users("en")):
        recs = {int(m) for m in redis_client.zrange(KEYS.recs("en", user.decode()), 0, -1)}
        assert not recs & set(expected)
    for rid in expected:
        assert not redis_client.exists(KEYS.similar("en", rid))
    # Each forget applied once: every total lost exactly the forgotten users' views.
    for user in forgotten:
        assert redis_client.hgetall(KEYS.views("en", user)) == {str(resources[0]).encode(): b"2"}
    now = {int(k): int(v) for k, v in redis_client.hgetall(KEYS.item_views("en")).items()}
    change = Counter({resources[0]: 2 * len(forgotten)})
    for user in forgotten:
        change.subtract(by_user[user])
    assert now == {k: v + change[k] for k, v in totals.items() if v + change[k] > 0}

    reader = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "dlq-reader",
                       **KAFKA_TEST_CONFIG})
    reader.assign([TopicPartition(f"{topic}.dlq", 0, 0)])
    dead: list = []
    wait_until(lambda: dead.extend(m for m in reader.consume(10, 0.2) if m.error() is None)
               or len(dead) >= len(bad), 30, "the dead letters")
    reader.close()
    assert {m.value() for m in dead} == set(bad)  # at least once: a replay may copy one
    assert {dict(m.headers())["error"] for m in dead} == {b"invalid_action", b"not_json"}
    assert proc.stop() == 0
