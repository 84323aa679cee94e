"""Publishing view events (the contract's shape) to Kafka: for the demo, tests and benchmarks.

``events_from_views`` turns a views table into event dicts; ``produce_events`` sends them
with the user id as the message key (one user's events stay in one partition, in order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import orjson
import pandas as pd
from confluent_kafka import KafkaException, Producer

from core.contract import MAX_COUNT


def events_from_views(df: pd.DataFrame, lang: str, *, split: bool = False,
                      ts: int | None = None) -> Iterator[dict]:
    """One event per row of ``df`` (columns user_id, resource_id, views), the row's views
    carried in ``count`` (rows above MAX_COUNT views become several events). ``split=True``
    sends one event of count 1 per view instead, as the platform's clients do."""
    users = df["user_id"].astype(str).tolist()
    items = df["resource_id"].astype("int64").tolist()
    views = df["views"].astype("int64").tolist()
    extra = {} if ts is None else {"ts": ts}
    for user, rid, n in zip(users, items, views, strict=True):
        step = 1 if split else MAX_COUNT
        while n > 0:
            c = min(step, n)
            yield {"user_id": user, "resource_id": rid, "lang": lang, "count": c, **extra}
            n -= c


def produce_events(bootstrap: str, topic: str, events: Iterable[Mapping],
                   config: Mapping[str, str] | None = None, timeout: float = 60.0,
                   ends: dict[int, int] | None = None) -> int:
    """Send ``events`` (contract dicts) to ``topic``; returns how many were delivered.
    Raises ``KafkaException`` if any could not be delivered within ``timeout`` seconds.

    ``ends``, if given, is updated to ``{partition: offset after the last event delivered}``
    (the end offsets a reader must reach; some brokers' ListOffsets cannot be trusted)."""
    failures: list = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            failures.append(err)
        elif ends is not None:
            p = msg.partition()
            ends[p] = max(ends.get(p, 0), msg.offset() + 1)

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20,
                         "batch.num.messages": 10000, "acks": "all", **(config or {}),
                         "on_delivery": on_delivery,
                         "delivery.report.only.error": ends is None})

    sent = 0
    dumps = orjson.dumps
    for event in events:
        value = dumps(event)
        key = str(event.get("user_id", "")).encode()
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:  # local queue full: wait for deliveries
                producer.poll(0.05)
        sent += 1
        if sent % 10000 == 0:
            producer.poll(0)
    left = producer.flush(timeout)
    if left or failures:
        raise KafkaException(f"{left} events undelivered after {timeout}s, "
                             f"{len(failures)} failed (first: {failures[:1]})")
    return sent
