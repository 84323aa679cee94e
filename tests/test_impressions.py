"""``recs impressions`` and ``recs consume`` together against the broker and Redis: exact
impression and click counts in either consumption order and through SIGKILL, the dead-letter
topic for every invalid impression shape (issue 19)."""

from __future__ import annotations

import uuid
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from consumers.impression_events import REASONS
from recs.localstack_process import free_port, wait_until
from store.ctr import read_ctr
from store.keys import Keys
from tests.clicks_model import T0, expected, redis_counts, workload
from tests.test_consume import metric, read_to_marker, stop_cleanly

pytestmark = pytest.mark.integration

KEYS = Keys()


@pytest.fixture
def imp_topics(broker):
    name = f"resource-impressions-{uuid.uuid4().hex[:8]}"
    broker.create_topics({name: 3, f"{name}.dlq": 1})
    return name, f"{name}.dlq"


@pytest.fixture
def env(consume_env, imp_topics):
    topic, dlq = imp_topics
    return {**consume_env, "RECS_IMPRESSIONS_TOPIC": topic, "RECS_IMPRESSIONS_DLQ_TOPIC": dlq,
            "RECS_IMPRESSIONS_GROUP": f"imp-{uuid.uuid4().hex[:8]}", "RECS_CLICKS": "true"}


def produce(bootstrap: str, topic: str, messages) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def as_messages(events: list[dict]):
    return [(e["user_id"].encode(), orjson.dumps(e)) for e in events]


def drain(start_recs, command: str, env: dict, **changes) -> None:
    """Run ``recs COMMAND --until-drained`` to its end (exit 0)."""
    env = {**env, **{f"RECS_{k.upper()}": str(v) for k, v in changes.items()}}
    proc = start_recs([command, "--until-drained"], env)
    assert proc.wait(120) == 0


@pytest.mark.parametrize("views_first", [False, True])
def test_counts_are_exact_whichever_topic_is_consumed_first(env, broker, redis_server,
                                                            start_recs, views_first):
    imps, views = workload(seed=11)
    produce(broker.bootstrap, env["RECS_IMPRESSIONS_TOPIC"], as_messages(imps))
    produce(broker.bootstrap, env["RECS_TOPIC"], as_messages(views))
    order = ["consume", "impressions"] if views_first else ["impressions", "consume"]
    for command in order:
        drain(start_recs, command, env)
    want = expected(imps, views)
    client = redis_server.client(decode_responses=True)
    assert redis_counts(client, KEYS) == want
    assert sum(c for _, c, _ in want.values()) > 50  # the workload really has clicks


def test_sigkill_of_both_consumers_mid_stream_then_restart_counts_exactly(
        env, broker, redis_server, start_recs):
    imps, views = workload(seed=12, impressions=1500, users=80)
    produce(broker.bootstrap, env["RECS_IMPRESSIONS_TOPIC"], as_messages(imps))
    produce(broker.bootstrap, env["RECS_TOPIC"], as_messages(views))
    client = redis_server.client(decode_responses=True)
    small = {**env, "RECS_BATCH_SIZE": "7"}
    first = [start_recs(["impressions"], small), start_recs(["consume"], small)]

    def counted() -> int:
        return sum(n for n, _, _ in redis_counts(client, KEYS).values())
    wait_until(lambda: counted() > 0.3 * len(imps), 60, "30% of the impressions written")
    for proc in first:
        proc.kill()
    assert counted() < len(imps)  # they really died mid-stream
    for command in ("impressions", "consume"):
        drain(start_recs, command, env)
    assert redis_counts(client, KEYS) == expected(imps, views)


def invalid_impressions() -> list[tuple[bytes, bytes | None, str]]:
    """(key, value, reason): one of every invalid impression shape."""
    ok = {"impression_id": "i-1", "user_id": "u", "lang": "en", "list": "recs",
          "items": [1, 2], "ts": T0}

    def with_(**kw):
        return orjson.dumps({k: v for k, v in {**ok, **kw}.items() if v is not ...})

    return [
        (b"k0", None, "no_value"),
        (b"k1", b"x" * (64 * 1024 + 1), "too_large"),
        (b"k2", b"\xff not json", "not_json"),
        (b"k3", b"[1]", "not_object"),
        (b"k4", with_(impression_id=...), "missing_impression_id"),
        (b"k5", with_(impression_id="a b"), "invalid_impression_id"),
        (b"k6", with_(impression_id="x" * 65), "invalid_impression_id"),
        (b"k7", with_(user_id=...), "missing_user_id"),
        (b"k8", with_(user_id="a\x00b"), "invalid_user_id"),
        (b"k9", with_(lang=...), "missing_lang"),
        (b"k10", with_(lang="EN"), "invalid_lang"),
        (b"k11", with_(list=...), "missing_list"),
        (b"k12", with_(list="home"), "invalid_list"),
        (b"k13", with_(list="similar"), "missing_resource_id"),
        (b"k14", with_(list="similar", resource_id=0), "invalid_resource_id"),
        (b"k15", with_(model="a|b"), "invalid_model"),
        (b"k16", with_(arm="B"), "invalid_arm"),
        (b"k17", with_(arm=""), "invalid_arm"),
        (b"k18", with_(experiment="x" * 33), "invalid_experiment"),
        (b"k19", with_(items=...), "missing_items"),
        (b"k20", with_(items=[]), "invalid_items"),
        (b"k21", with_(items=list(range(1, 102))), "invalid_items"),
        (b"k22", with_(items=[1, 1]), "invalid_items"),
        (b"k23", with_(items=[1, "x"]), "invalid_items"),
        (b"k24", with_(items=7), "invalid_items"),
        (b"k25", with_(ts=...), "missing_ts"),
        (b"k26", with_(ts="1764201600000"), "invalid_ts"),
        (b"k27", with_(ts=0), "invalid_ts"),
    ]


def test_invalid_impressions_go_to_the_dead_letter_topic_unchanged(env, broker, redis_server,
                                                                   start_recs):
    topic, dlq = env["RECS_IMPRESSIONS_TOPIC"], env["RECS_IMPRESSIONS_DLQ_TOPIC"]
    bad = invalid_impressions()
    assert {reason for *_, reason in bad} == set(REASONS)
    valid = [{"impression_id": f"ok-{k}", "user_id": f"u{k}", "lang": "en", "list": "similar",
              "resource_id": "42", "items": ["7", 8], "ts": T0} for k in range(20)]
    produce(broker.bootstrap, topic, [(k, v) for k, v, _ in bad] + as_messages(valid))
    port = free_port()
    proc = start_recs(["impressions"], {**env, "RECS_METRICS_PORT": str(port)})
    wait_until(lambda: metric(port, "recs_impressions_counted_total", lang="en",
                              list="similar") == len(valid), 60, "every valid one counted")
    assert metric(port, "recs_consumer_events_invalid_total", reason="invalid_items") == 5
    stop_cleanly(proc)
    rows = read_ctr(redis_server.client(), KEYS, "en")
    assert [(r.list, r.impressions, r.users, r.items) for r in rows] == [("similar", 20, 20, 2)]

    produce(broker.bootstrap, dlq, [(b"end", b"end-marker")])
    got = read_to_marker(broker.bootstrap, dlq)
    assert Counter((m.key(), m.value(), dict(m.headers())["error"].decode())
                   for m in got) == Counter(bad)
