"""``recs impressions`` and ``recs consume --clicks`` on a real Redis Cluster
(tests/redis_cluster.py) reading the session's Kafka broker: the same impressions and views
give, key by key (hash tags stripped, a counter's slot group shares summed), the counters
and per-user windows they give on one Redis; and, with no Kafka, a replayed impression batch
applies once (consumers/impression_streams.py)."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid

import pytest

from consumers.batch import PartitionState
from consumers.dead_letters import DeadLetters
from consumers.impression_streams import ImpressionStreamBatch, ImpressionStreamWriter
from consumers.metrics import ConsumerMetrics
from store.cluster_keys import layout
from store.connection import connect
from store.ctr import read_ctr
from store.impressions import Impressions
from tests.clicks_model import expected, redis_counts, workload
from tests.conftest import recs_env
from tests.test_cluster_ingest import Msg
from tests.test_impressions import as_messages, produce

pytestmark = pytest.mark.integration

_TAG = re.compile(r"\{([^}:]+)(?::\d+)?\}")
_SUMMED = (":_ctr:", ":_exp_users:")
"""Hashes a cluster splits into slot group shares (store/cluster_impressions.py)."""
_PER_USER = (":_impw:", ":_vieww:")


def _state(client) -> dict:
    """Every window and counter hash, by its name without hash tags; shares summed."""
    out: dict[str, dict] = {}
    for key in client.scan_iter(match="recs:*", count=1000):
        name = _TAG.sub(r"\1", key)
        if any(s in name for s in _PER_USER):
            assert name not in out, name
            out[name] = client.hgetall(key)
        elif any(s in name for s in _SUMMED):
            into = out.setdefault(name, {})
            for f, v in client.hgetall(key).items():
                into[f] = str(int(into.get(f, 0)) + int(v))
    return out


def _env(url: str, bootstrap: str, views: str, imps: str) -> dict:
    env = recs_env(url, bootstrap, views, f"{views}.dlq")
    return {**env, "RECS_IMPRESSIONS_TOPIC": imps, "RECS_IMPRESSIONS_DLQ_TOPIC": f"{imps}.dlq",
            "RECS_IMPRESSIONS_GROUP": f"imp-{uuid.uuid4().hex[:8]}", "RECS_CLICKS": "true"}


def test_impressions_and_clicks_on_a_cluster_equal_one_redis(broker, redis_server, cluster,
                                                             start_recs):
    views_topic = f"resource-views-{uuid.uuid4().hex[:8]}"
    imps_topic = f"resource-impressions-{uuid.uuid4().hex[:8]}"
    broker.create_topics({views_topic: 4, f"{views_topic}.dlq": 1, imps_topic: 3,
                          f"{imps_topic}.dlq": 1})
    envs = [_env(redis_server.url, broker.bootstrap, views_topic, imps_topic),
            _env(cluster.url, broker.bootstrap, views_topic, imps_topic)]
    imps, views = workload(seed=21, impressions=600)
    half_i, half_v = len(imps) // 2, len(views) // 2
    # Both click paths: views after their impressions, then impressions after their views.
    phases = [(imps[:half_i], views[:half_v], ("impressions", "consume")),
              (imps[half_i:], views[half_v:], ("consume", "impressions"))]
    for some_imps, some_views, order in phases:
        produce(broker.bootstrap, imps_topic, as_messages(some_imps))
        produce(broker.bootstrap, views_topic, as_messages(some_views))
        for env in envs:
            for command in order:
                assert start_recs([command, "--until-drained"], env).wait(180) == 0
    one = redis_server.client(decode_responses=True)
    many = connect(cluster.url, decode_responses=True)
    want = expected(imps, views)
    assert redis_counts(one, layout(one)) == want
    assert redis_counts(many, layout(many)) == want
    assert sum(c for _, c, _ in want.values()) > 50  # the workload really has clicks
    for lang in ("en", "es"):
        # Equal but for ``users``: one HyperLogLog on one Redis, a sum of the slot groups'
        # (disjoint users) on a cluster; both estimates (store/ctr.py).
        rows = [read_ctr(c, layout(c), lang) for c in (one, many)]
        assert [dataclasses.replace(r, users=0) for r in rows[0]] == [
            dataclasses.replace(r, users=0) for r in rows[1]]
        for a, b in zip(*rows, strict=True):
            assert abs(a.users - b.users) <= 1 + a.users // 50
    state = _state(one)
    assert state == _state(many)
    assert sum(":_impw:" in k for k in state) and sum(":_vieww:" in k for k in state)
    many.close()


def _writer(client) -> ImpressionStreamWriter:
    keys = layout(client)
    metrics = ConsumerMetrics()
    return ImpressionStreamWriter(Impressions(client, keys), keys, "g", "t",
                                  DeadLetters(None, "t.dlq", metrics, 0.01, 0.1), metrics,
                                  0.01, 0.1)


def _write(writer, msgs: list, start: dict[int, int | None]):
    batch = ImpressionStreamBatch()
    for p, offset in start.items():
        batch.owned[p] = PartitionState(offset)
    batch.add(msgs)
    guards, applied = writer.write(batch, time.sleep)
    if not applied.refused:
        batch.written(guards)
        assert not writer.advance(batch.owned)
    return applied


def test_a_replayed_impression_batch_applies_once(cluster):
    client = connect(cluster.url, decode_responses=True)
    imps, _views = workload(seed=22, impressions=300)
    msgs = [Msg(i % 2, i // 2, e) for i, e in enumerate(imps)]
    applied = _write(_writer(client), msgs, {0: None, 1: None})
    assert not applied.refused and not applied.duplicates
    assert sum(n for n, _c in applied.counted.values()) == len(imps)
    before = (_state(client), redis_counts(client, layout(client)))
    assert before[1] and any(":_impw:" in k for k in before[0])
    # A writer that believes Redis holds nothing sends the whole batch again: every
    # stream refuses it (Redis holds its end: a lost reply), nothing counts twice.
    stale = _writer(client)
    stale.assigned([0, 1])
    stale.held = {name: {p: 0 for p in held} for name, held in stale.held.items()}
    _write(stale, msgs, {0: 0, 1: 0})
    assert (_state(client), redis_counts(client, layout(client))) == before
    fresh = _writer(client)
    assert fresh.assigned([0, 1]) == {0: len(imps) // 2, 1: len(imps) // 2}
    client.close()
