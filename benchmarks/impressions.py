"""What impressions and clicks cost (issue 19): the impression consumer's events/s against
the view consumer's in the same run, and Redis bytes per user's attribution windows.

    .venv/bin/python benchmarks/impressions.py [--users 5000] [--impressions 40000]
        [--items 10] [--views 120000] [--rounds 3] [--kafka apache]

Setup (untimed): a redis-server and a broker from ``recs.localstack``; a views topic and an
impressions topic of 4 partitions each; ``--impressions`` impression events (``--items``
resources each, ``recs`` lists of ``--users`` users, 2,000 resources) and ``--views`` view
events, a third of them views of a shown resource within the click window, produced once.
Then ``--rounds`` rounds, each of two runs on an emptied Redis (order alternating):

- ``views, no clicks``: ``StreamConsumer`` as ``recs consume`` without ``--clicks``
  (the counts alone);
- ``impressions`` then ``views + clicks``: ``recs impressions``' consumer drains the
  impressions, then ``recs consume``'s (click attribution on) drains the views, so every
  click is found by the views script (the work the views consumer adds).

Each consumer is timed from its first message to its last Redis write, in this process,
``--until-drained``. Printed: events/s of each per round and the medians, the ratios to
``views, no clicks``, the clicks counted (checked equal between rounds), and MEMORY USAGE of
the users' impression and view windows after a round (mean per user, and one user's full
window: ``--impression-cap`` impressions, ``--view-cap`` viewed resources).
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.config import ConsumerConfig  # noqa: E402
from consumers.consume import StreamConsumer  # noqa: E402
from consumers.impressions import impressions_consumer  # noqa: E402
from consumers.produce import produce_events  # noqa: E402
from recs.localstack import LocalStack  # noqa: E402
from store.attribution import AttributionConfig  # noqa: E402
from store.ctr import read_ctr  # noqa: E402
from store.keys import Keys  # noqa: E402

KEYS = Keys("recs")
VIEWS, IMPS = "bench-views", "bench-impressions"
T0 = 1764201600000
EXTRA = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


def workload(args) -> tuple[list[dict], list[dict]]:
    """(impressions, views): each user's impressions and views in time order."""
    rnd = random.Random(5)
    imps, views = [], []
    for k in range(args.impressions):
        user = f"user-{rnd.randrange(args.users)}"
        ts = T0 + k * 50
        items = rnd.sample(range(1, 2001), args.items)
        imps.append({"impression_id": f"i{k}", "user_id": user, "lang": "en", "list": "recs",
                     "model": "m1", "arm": "default", "items": items, "ts": ts})
        if len(views) < args.views // 3:
            views.append({"user_id": user, "lang": "en", "resource_id": rnd.choice(items),
                          "ts": ts + 60_000})
    while len(views) < args.views:
        views.append({"user_id": f"user-{rnd.randrange(args.users)}", "lang": "en",
                      "resource_id": rnd.randrange(1, 2001),
                      "ts": T0 + rnd.randrange(args.impressions * 50)})
    views.sort(key=lambda v: v["ts"])
    return imps, views


def produce(bootstrap: str, topic: str, events: list[dict]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for e in events:
        while True:
            try:
                producer.produce(topic, key=e["user_id"].encode(), value=orjson.dumps(e))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def config(stack, topic: str, clicks: bool) -> ConsumerConfig:
    return ConsumerConfig(bootstrap_servers=stack.broker.bootstrap, topic=topic,
                          dlq_topic=topic + ".dlq", group=f"b-{uuid.uuid4().hex}",
                          redis_url=stack.redis.url, batch_size=2000, metrics_port=0,
                          kafka_config=EXTRA, until_drained=True, clicks=clicks)


def timed(consumer: StreamConsumer) -> float:
    consumer.run()
    return consumer.events_applied / (consumer.last_write_at - consumer.first_message_at)


def window_bytes(client, args) -> tuple[float, float, int, int]:
    """Mean MEMORY USAGE of the users' impression and view windows now; and of one user's
    full windows (built here through the scripts)."""
    imp_sizes, view_sizes = [], []
    for u in range(0, args.users, max(1, args.users // 500)):
        for key, out in ((KEYS.impression_window("en", f"user-{u}"), imp_sizes),
                         (KEYS.view_window("en", f"user-{u}"), view_sizes)):
            size = client.memory_usage(key, samples=0)
            if size:
                out.append(size)
    from consumers.impression_events import Impression
    from store.attribution import ClickCounts
    from store.impressions import Impressions

    cfg, rnd = AttributionConfig(), random.Random(9)
    store, views = Impressions(client, KEYS, cfg), ClickCounts(client, KEYS, cfg)
    for k in range(cfg.impression_cap + 5):
        items = tuple(rnd.sample(range(1, 2001), args.items))
        store.write(KEYS.offsets("full", "i"), [], [Impression(
            f"full-{k}-{uuid.uuid4().hex[:12]}", "full-user", "en", "recs", None,
            "20251127T101500-3f2a", "default", "", items, T0 + k)])
    for k in range(cfg.view_cap + 5):
        touches = [(1_000_000 + k, T0 + k * 1000 + j, "") for j in range(cfg.view_times)]
        views.write(KEYS.offsets("full", "v"), [], ({"en": {"full-user": {1_000_000 + k: 1}}},
                                                    {"en": {"full-user": touches}}))
    return (statistics.mean(imp_sizes), statistics.mean(view_sizes),
            client.memory_usage(KEYS.impression_window("en", "full-user"), samples=0),
            client.memory_usage(KEYS.view_window("en", "full-user"), samples=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--impressions", type=int, default=40_000)
    ap.add_argument("--items", type=int, default=10)
    ap.add_argument("--views", type=int, default=120_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kafka", default="apache")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    imps, views = workload(args)
    with LocalStack(kafka=args.kafka) as stack:
        stack.broker.create_topics({VIEWS: 4, VIEWS + ".dlq": 1, IMPS: 4, IMPS + ".dlq": 1})
        t = time.perf_counter()
        produce_events(stack.broker.bootstrap, VIEWS, views)
        produce(stack.broker.bootstrap, IMPS, imps)
        print(f"produced {len(imps):,} impressions ({args.items} resources each) and "
              f"{len(views):,} views in {time.perf_counter() - t:.1f} s", flush=True)
        client = stack.redis.client()
        rates: dict[str, list[float]] = {"views, no clicks": [], "impressions": [],
                                         "views + clicks": []}
        clicks = set()
        for r in range(args.rounds):
            for run in (("plain", "clicks") if r % 2 == 0 else ("clicks", "plain")):
                client.flushall()
                if run == "plain":
                    rates["views, no clicks"].append(
                        timed(StreamConsumer(config(stack, VIEWS, False))))
                    continue
                rates["impressions"].append(timed(impressions_consumer(
                    config(stack, IMPS, True))))
                rates["views + clicks"].append(timed(StreamConsumer(config(stack, VIEWS, True))))
                clicks.add(sum(row.clicks for row in read_ctr(client, KEYS, "en")))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} events/s"
                                                   for k, v in rates.items()), flush=True)
        assert len(clicks) == 1, clicks
        med = {k: statistics.median(v) for k, v in rates.items()}
        base = med["views, no clicks"]
        print(f"\nmedian of {args.rounds}: " + ", ".join(
            f"{k} {v:,.0f} events/s ({v / base:.2f}x)" for k, v in med.items()))
        print(f"clicks counted: {clicks.pop():,} (same every round)")
        mi, mv, fi, fv = window_bytes(client, args)
        print(f"Redis MEMORY USAGE per user after a round: impression window {mi:,.0f} B, "
              f"view window {mv:,.0f} B (mean); one full window "
              f"({AttributionConfig().impression_cap} impressions of {args.items}): {fi:,} B, "
              f"full view window ({AttributionConfig().view_cap} resources x "
              f"{AttributionConfig().view_times} times): {fv:,} B")


if __name__ == "__main__":
    main()
