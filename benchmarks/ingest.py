"""Ingest throughput: ``recs consume``'s own code path vs a minimal consume loop, draining
the same backlog from the same servers in the same run.

    .venv/bin/python benchmarks/ingest.py [--events 400000] [--rounds 3] [--batch-size 5000]
        [--kafka apache,tansu] [--cluster]

Setup (untimed), for each broker of ``--kafka`` in turn (default both: Apache Kafka, then
Tansu, in one run, so their figures compare): a redis-server and the broker from
``recs.localstack`` (or the broker named by RECS_KAFKA_BOOTSTRAP_SERVERS), one topic of 4
partitions, ``--events`` contract
events (heavy-tailed users and resources, three languages, 30% with a ``count``) produced
once. Then ``--rounds`` rounds, each on an emptied Redis and a fresh consumer group:

- ``baseline``: a confluent-kafka consumer; per batch of ``--batch-size`` messages:
  ``orjson.loads`` each value, aggregate ``lang -> user -> resource -> views`` in dicts (the
  shape ours uses), ONE Lua call with a flat ARGV doing HINCRBY on the views hashes and
  item_views (items summed in Lua, as ours does). No validation, no offsets, no langs/users/
  seq/dirty/touched bookkeeping, no dead-letter path, no commits, no metrics.
- ``recs``: ``consumers.consume.StreamConsumer`` in this process (the class behind
  ``recs consume``) with ``until_drained``: validation, aggregation, the guarded Lua step
  (offsets, langs, users, seq, dirty, touched), Kafka commits, metrics.

Each is timed from its first message to its last Redis write (the group join is left out).
Both results are checked against the expected total of views. Printed: events/s of each
per round, the medians, and recs / baseline (target >= 0.8). The order alternates between
rounds.

On this small machine the broker's fetch rate dominates both figures, which hides the CPU
cost of our extra work; so a second comparison runs the same two batch functions over the
messages already fetched into memory (``hot path only``): per batch, the baseline's decode,
aggregation and Lua call vs ``Batch.add`` + ``BatchWriter.write`` (validation, aggregation,
the guarded script with the bookkeeping). No target is set for that one; it shows what
validation and bookkeeping cost.

``--cluster`` runs instead, on the first broker of ``--kafka``: ``recs consume``'s
StreamConsumer on the one redis-server vs on a loopback Redis Cluster (tests/redis_cluster.py:
3 primaries + 3 replicas) in the same process and run, the same backlog, alternating: events/s
of each, Redis script calls per batch (one on one Redis; on a cluster one item-side call
per language plus one per touched slot group, docs/CLUSTER.md section 0), and on the
messages in memory (no broker) the write time per batch split by calls: the cost of one
slot-group call.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.batch import Batch, PartitionState, StreamBatch  # noqa: E402
from consumers.config import ConsumerConfig  # noqa: E402
from consumers.consume import StreamConsumer  # noqa: E402
from consumers.dead_letters import DeadLetters  # noqa: E402
from consumers.metrics import ConsumerMetrics  # noqa: E402
from consumers.produce import produce_events  # noqa: E402
from consumers.stream_writer import StreamWriter  # noqa: E402
from consumers.writer import BatchWriter  # noqa: E402
from recs.localstack import LocalStack  # noqa: E402
from store.cluster_keys import layout  # noqa: E402
from store.connection import connect  # noqa: E402
from store.counts import Counts  # noqa: E402
from store.keys import Keys  # noqa: E402

TOPIC = "bench-views"

KEYS = Keys("recs")

BASELINE_LUA = """
-- ARGV: n_langs, then per language:
--   views key prefix (views key = prefix .. user_id), item_views key, n_users,
--   n_users x (user_id, n_pairs, n_pairs x (resource_id, views))
local i = 2
for _ = 1, tonumber(ARGV[1]) do
  local prefix, item_key, n_users = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local items = {}
  i = i + 3
  for _ = 1, n_users do
    local key, n_pairs = prefix .. ARGV[i], tonumber(ARGV[i + 1])
    i = i + 2
    for _ = 1, n_pairs do
      local rid, c = ARGV[i], tonumber(ARGV[i + 1])
      redis.call('HINCRBY', key, rid, c)
      items[rid] = (items[rid] or 0) + c
      i = i + 2
    end
  end
  for rid, c in pairs(items) do
    redis.call('HINCRBY', item_key, rid, c)
  end
end
return 0
"""


def make_events(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    users = np.minimum(rng.zipf(1.3, n), 60000)
    items = np.minimum(rng.zipf(1.2, n), 8000)
    langs = rng.choice(np.array(["en", "es", "pt"]), n, p=[0.6, 0.3, 0.1])
    counts = np.where(rng.random(n) < 0.3, rng.integers(1, 6, n), 0)
    ts = 1764201600000 + np.arange(n)
    out = []
    for u, i, lang, c, t in zip(users.tolist(), items.tolist(), langs.tolist(),
                                counts.tolist(), ts.tolist(), strict=True):
        e = {"user_id": f"user-{u:06d}", "resource_id": int(i), "lang": lang, "ts": t}
        if c:
            e["count"] = c
        out.append(e)
    return out


def baseline_batch(msgs: list, script) -> int:
    """The minimal loop's work for one batch; returns the views it added.

    The aggregation is written out here on purpose, not shared with Batch.add:
    the baseline stands for what a bare consumer would do on its own, and a shared helper
    would cost the consumer's hot path a function call per event."""
    loads = orjson.loads
    agg: dict = {}
    views = 0
    for m in msgs:
        if m.error() is not None:
            continue
        d = loads(m.value())
        lang, user, rid, c = d["lang"], d["user_id"], d["resource_id"], d.get("count", 1)
        users = agg.get(lang)
        if users is None:
            users = agg[lang] = {}
        items = users.get(user)
        if items is None:
            users[user] = {rid: c}
        else:
            items[rid] = items.get(rid, 0) + c
        views += c
    args: list = [len(agg)]
    for lang, users in agg.items():
        args += (KEYS.views(lang, ""), KEYS.item_views(lang), len(users))
        for user, items in users.items():
            args += (user, len(items))
            for item in items.items():
                args += item
    script(keys=[], args=args)
    return views


def baseline(bootstrap: str, client, n: int, batch_size: int, extra: dict) -> tuple[float, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"base-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "enable.auto.offset.store": False, **extra})
    consumer.subscribe([TOPIC])
    script = client.register_script(BASELINE_LUA)
    seen = views = 0
    start = end = 0.0
    while seen < n:
        msgs = consumer.consume(batch_size, 0.5)
        if not msgs:
            continue
        if not start:
            start = time.perf_counter()
        views += baseline_batch(msgs, script)
        seen += sum(m.error() is None for m in msgs)
        end = time.perf_counter()
    consumer.close()
    return n / (end - start), views


def ours(bootstrap: str, url: str, batch_size: int, extra: dict, consumers: list | None = None
         ) -> tuple[float, int]:
    """``recs consume``'s loop until drained; the consumer is appended to ``consumers``."""
    cfg = ConsumerConfig(bootstrap_servers=bootstrap, topic=TOPIC, dlq_topic=TOPIC + ".dlq",
                         group=f"recs-{uuid.uuid4().hex}", redis_url=url,
                         batch_size=batch_size, metrics_port=0, kafka_config=extra,
                         until_drained=True)
    consumer = StreamConsumer(cfg)
    consumer.run()
    if consumers is not None:
        consumers.append(consumer)
    return (consumer.events_applied / (consumer.last_write_at - consumer.first_message_at),
            consumer.events_applied)


def fetch_all(bootstrap: str, n: int, extra: dict) -> list:
    """Every message of the topic, in memory (for the hot-path-only comparison)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"all-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, **extra})
    consumer.subscribe([TOPIC])
    out: list = []
    while len(out) < n:
        out += [m for m in consumer.consume(10000, 0.5) if m.error() is None]
    consumer.close()
    return out


def hot_baseline(msgs: list, client, batch_size: int) -> float:
    script = client.register_script(BASELINE_LUA)
    start = time.perf_counter()
    for i in range(0, len(msgs), batch_size):
        baseline_batch(msgs[i:i + batch_size], script)
    return len(msgs) / (time.perf_counter() - start)


def hot_ours(msgs: list, bootstrap: str, url: str, batch_size: int, extra: dict) -> float:
    """The consumer's own batch code (consumers/batch.py ``Batch.add``: validation and
    aggregation; consumers/writer.py ``BatchWriter.write``: the guarded script) over messages
    already in memory, no consumer loop; the batch owns all four partitions by decree."""
    client = connect(url)
    group = f"hot-{uuid.uuid4().hex}"
    batch = Batch()
    batch.owned = {p: PartitionState(None) for p in range(4)}
    metrics = ConsumerMetrics()
    dead = DeadLetters(Producer({"bootstrap.servers": bootstrap, **extra}), TOPIC + ".dlq",
                       metrics, 0.1, 5.0)
    writer = BatchWriter(Counts(client, KEYS), KEYS.offsets(group, TOPIC), dead, metrics,
                         0.1, 5.0)
    applied = 0
    start = time.perf_counter()
    for i in range(0, len(msgs), batch_size):
        assert not batch.add(msgs[i:i + batch_size])  # every event valid here
        guards, result = writer.write(batch, time.sleep)
        assert not result.refused
        applied += batch.valid
        batch.written(guards)
    rate = applied / (time.perf_counter() - start)
    client.close()
    return rate


def total_views(client) -> int:
    keys = layout(client)
    return sum(sum(int(v) for v in client.hvals(keys.item_views(lang)))
               for lang in ("en", "es", "pt"))


def kafka_kinds(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    bad = set(kinds) - {"tansu", "apache"}
    if bad:
        raise argparse.ArgumentTypeError(f"unknown broker kind(s) {sorted(bad)}")
    return kinds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=5000)
    ap.add_argument("--kafka", type=kafka_kinds, default=["apache", "tansu"],
                    help="brokers to run on, one after the other in this run: apache "
                         "(Apache Kafka, jars from tests/kafka/pom.xml), tansu (default both)")
    ap.add_argument("--profile", help="write a cProfile of one recs run to this file")
    ap.add_argument("--cluster", action="store_true",
                    help="recs consume on one Redis vs on a Redis Cluster instead (first "
                         "broker of --kafka only)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.cluster:
        cluster_vs_one_node(args.kafka[0], args)
        return
    results = {kind: on_broker(kind, args, hot=(i == 0)) for i, kind in enumerate(args.kafka)}
    print("\nsummary (median events/s end to end):")
    for kind, (base, ours_rate) in results.items():
        print(f"  {kind:6s}  baseline {base:,.0f}  recs consume {ours_rate:,.0f}  "
              f"recs / baseline = {ours_rate / base:.2f}")


def on_broker(kind: str, args, hot: bool) -> tuple[float, float]:
    """The end-to-end rounds on one broker (and, with ``hot``, the hot path without one);
    the medians (baseline, recs) in events/s."""
    extra = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
    external = os.environ.get("RECS_KAFKA_BOOTSTRAP_SERVERS")
    with LocalStack(external_kafka=external, kafka=kind) as stack:
        print(f"--- broker: {getattr(stack.broker, 'kind', kind)}", flush=True)
        stack.broker.create_topics({TOPIC: 4, TOPIC + ".dlq": 1})
        events = make_events(args.events, seed=11)
        expected = sum(e.get("count", 1) for e in events)
        t = time.perf_counter()
        produce_events(stack.broker.bootstrap, TOPIC, events)
        print(f"produced {len(events):,} events ({expected:,} views) in "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        del events
        client = stack.redis.client()
        base_rates, our_rates = [], []
        for r in range(args.rounds):
            # Alternate which runs first, so neither always meets a warmer broker cache.
            for which in (("baseline", "recs") if r % 2 == 0 else ("recs", "baseline")):
                client.flushall()
                if which == "baseline":
                    rate, views = baseline(stack.broker.bootstrap, client, args.events,
                                           args.batch_size, extra)
                    assert views == expected == total_views(client), (views, expected)
                    base_rates.append(rate)
                    continue
                prof = None
                if args.profile and r == 0:
                    import cProfile
                    prof = cProfile.Profile()
                    prof.enable()
                rate, applied = ours(stack.broker.bootstrap, stack.redis.url, args.batch_size,
                                     extra)
                if prof is not None:
                    prof.disable()
                    prof.dump_stats(args.profile)
                assert applied == args.events and total_views(client) == expected
                our_rates.append(rate)
            print(f"round {r + 1}: baseline {base_rates[-1]:,.0f} events/s, "
                  f"recs {our_rates[-1]:,.0f} events/s, "
                  f"ratio {our_rates[-1] / base_rates[-1]:.2f}", flush=True)
        b, o = statistics.median(base_rates), statistics.median(our_rates)
        print(f"end to end, median: baseline {b:,.0f} events/s, recs consume {o:,.0f} events/s, "
              f"recs / baseline = {o / b:.2f} (target >= 0.8)", flush=True)
        if hot:
            hot_path(stack, args, client, expected, extra)
    return b, o


def hot_path(stack, args, client, expected: int, extra: dict) -> None:
    """The same code without the broker: what validation and bookkeeping cost on the CPU."""
    msgs = fetch_all(stack.broker.bootstrap, args.events, extra)
    # 400,000 live Message objects are an artifact of this measurement: keep the cyclic
    # GC from walking them on every full collection (it would tax whichever path
    # allocates more containers).
    gc.collect()
    gc.freeze()
    hot_base, hot_recs = [], []
    for r in range(args.rounds):
        for which in (("baseline", "recs") if r % 2 == 0 else ("recs", "baseline")):
            client.flushall()
            if which == "baseline":
                hot_base.append(hot_baseline(msgs, client, args.batch_size))
            else:
                hot_recs.append(hot_ours(msgs, stack.broker.bootstrap, stack.redis.url,
                                         args.batch_size, extra))
            assert total_views(client) == expected
        print(f"hot path round {r + 1}: baseline {hot_base[-1]:,.0f} events/s, "
              f"recs {hot_recs[-1]:,.0f} events/s, ratio {hot_recs[-1] / hot_base[-1]:.2f}",
              flush=True)
    b, o = statistics.median(hot_base), statistics.median(hot_recs)
    print(f"hot path only (messages in memory), median: baseline {b:,.0f} events/s, "
          f"recs {o:,.0f} events/s, recs / baseline = {o / b:.2f}", flush=True)
    del msgs
    gc.unfreeze()


def batches_of(consumer) -> int:
    return int(consumer.metrics.batches._value.get())


def cluster_vs_one_node(kind: str, args) -> None:
    """``--cluster``: see the module docstring."""
    import tempfile

    from tests.redis_cluster import RedisCluster

    extra = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
    external = os.environ.get("RECS_KAFKA_BOOTSTRAP_SERVERS")
    with tempfile.TemporaryDirectory() as tmp, \
            LocalStack(external_kafka=external, kafka=kind) as stack:
        cluster = RedisCluster(Path(tmp)).start()
        try:
            stack.broker.create_topics({TOPIC: 4, TOPIC + ".dlq": 1})
            events = make_events(args.events, seed=11)
            expected = sum(e.get("count", 1) for e in events)
            produce_events(stack.broker.bootstrap, TOPIC, events)
            print(f"--- broker: {getattr(stack.broker, 'kind', kind)}; {len(events):,} events "
                  f"({expected:,} views), batches of {args.batch_size}", flush=True)
            del events
            one = stack.redis.client()
            many = connect(cluster.url)
            rates: dict[str, list[float]] = {"one": [], "cluster": []}
            calls: dict[str, list[float]] = {"one": [], "cluster": []}
            for r in range(args.rounds):
                for which in (("one", "cluster") if r % 2 == 0 else ("cluster", "one")):
                    if which == "one":
                        one.flushall()
                    else:
                        cluster.flush()
                    done: list = []
                    url = stack.redis.url if which == "one" else cluster.url
                    rate, applied = ours(stack.broker.bootstrap, url, args.batch_size, extra,
                                         done)
                    assert applied == args.events
                    assert total_views(one if which == "one" else many) == expected
                    consumer = done[0]
                    n_calls = consumer.writer.calls if which == "cluster" else batches_of(
                        consumer)
                    rates[which].append(rate)
                    calls[which].append(n_calls / max(1, batches_of(consumer)))
                print(f"round {r + 1}: one Redis {rates['one'][-1]:,.0f} events/s, cluster "
                      f"{rates['cluster'][-1]:,.0f} events/s, cluster calls per batch "
                      f"{calls['cluster'][-1]:.1f}", flush=True)
            o, c = statistics.median(rates["one"]), statistics.median(rates["cluster"])
            print(f"end to end, median: one Redis {o:,.0f} events/s, cluster {c:,.0f} "
                  f"events/s (cluster / one = {c / o:.2f}); Redis calls per batch: one Redis "
                  f"{statistics.median(calls['one']):.1f}, cluster "
                  f"{statistics.median(calls['cluster']):.1f}", flush=True)
            hot_cluster(stack, cluster, args, expected, extra)
            many.close()
        finally:
            cluster.stop()


def hot_cluster(stack, cluster, args, expected: int, extra: dict) -> None:
    """Messages in memory: the one-node writer vs the cluster's, and the cluster write time
    divided by its calls (the cost of one slot-group call, round trip included)."""
    msgs = fetch_all(stack.broker.bootstrap, args.events, extra)
    gc.collect()
    gc.freeze()
    one_rates, rates, per_call, per_batch = [], [], [], []
    for _r in range(args.rounds):
        stack.redis.client().flushall()
        one_rates.append(hot_ours(msgs, stack.broker.bootstrap, stack.redis.url,
                                  args.batch_size, extra))
        cluster.flush()
        rate, call_s, calls = hot_stream(msgs, stack.broker.bootstrap, cluster.url,
                                         args.batch_size, extra)
        assert total_views(connect(cluster.url)) == expected
        rates.append(rate)
        per_call.append(call_s)
        per_batch.append(calls)
    o, c = statistics.median(one_rates), statistics.median(rates)
    print(f"hot path only (messages in memory), median: one Redis {o:,.0f} events/s, cluster "
          f"{c:,.0f} events/s (cluster / one = {c / o:.2f}); cluster: "
          f"{statistics.median(per_batch):.1f} calls per batch, "
          f"{statistics.median(per_call) * 1e3:.3f} ms of batch write per call", flush=True)
    del msgs
    gc.unfreeze()


def hot_stream(msgs: list, bootstrap: str, url: str, batch_size: int, extra: dict
               ) -> tuple[float, float, float]:
    """The cluster consumer's batch code over messages in memory: (events/s, write seconds
    per script call, calls per batch)."""
    client = connect(url)
    keys = layout(client)
    batch = StreamBatch()
    batch.owned = {p: PartitionState(None) for p in range(4)}
    metrics = ConsumerMetrics()
    dead = DeadLetters(Producer({"bootstrap.servers": bootstrap, **extra}), TOPIC + ".dlq",
                       metrics, 0.1, 5.0)
    writer = StreamWriter(Counts(client, keys), keys, f"hot-{uuid.uuid4().hex}", TOPIC, dead,
                          metrics, 0.1, 5.0)
    applied = batches = 0
    writing = 0.0
    start = time.perf_counter()
    for i in range(0, len(msgs), batch_size):
        assert not batch.add(msgs[i:i + batch_size])
        t = time.perf_counter()
        guards, result = writer.write(batch, time.sleep)
        writing += time.perf_counter() - t
        assert not result.refused
        applied += batch.valid
        batches += 1
        batch.written(guards)
    rate = applied / (time.perf_counter() - start)
    client.close()
    return rate, writing / writer.calls, writer.calls / batches


if __name__ == "__main__":
    main()
