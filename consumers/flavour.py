"""What a consumer loop (consumers/consume.py) reads and writes: a :class:`Flavour` picks
the batch, the store script and optional settle and report steps. ``views_flavour`` is
``recs consume``'s (the counts, with click attribution under ``--clicks``); ``recs control``
(consumers/control.py) and ``recs impressions`` (consumers/impressions.py) have theirs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from consumers.batch import Batch, StreamBatch, TouchBatch
from consumers.click_streams import ClickStreamWriter, TouchStreamBatch
from consumers.config import ConsumerConfig
from consumers.stream_writer import StreamWriter
from consumers.writer import Store
from store.attribution import ClickCounts
from store.counts import Applied, Counts
from store.keys import Keys

# The loop (consumers.consume.StreamConsumer) is passed to the steps as ``Any``: naming
# it here would make the two modules import each other.
Loop = Any


@dataclass(frozen=True)
class Flavour:
    """What a consumer loop reads and writes: the views consumer by default; ``recs
    control`` swaps the batch (validation, no aggregation), the store (its guarded script)
    and adds a settle step, and every rule of the loop holds for both."""

    new_batch: Callable[[], Batch] = Batch
    """The batch in hand (consumers/batch.py): parses, validates and aggregates messages."""
    store: Callable[[redis.Redis, Keys], Store] = Counts
    """The guarded script that writes a batch and its offsets (consumers/writer.py)."""
    settle: Callable[[Loop], None] | None = None
    """Run after each batch written outside a rebalance callback, and at each idle check."""
    on_written: Callable[[Loop, Applied], None] | None = None
    """Run after each batch written, with what the script answered (metrics)."""
    cluster_batch: Callable[[], Batch] = StreamBatch
    """The batch on a Redis Cluster: every event kept with its offset, for the writer's
    streams (consumers/stream_writer.py)."""
    cluster_writer: Callable[..., Any] | None = StreamWriter
    """The per-stream writer on a Redis Cluster, given the store made with the layout's
    keys (store/cluster_keys.py); None: the store picks its key layout itself and keeps
    one progress hash (``recs control``, store/control.py)."""


def views_flavour(config: ConsumerConfig) -> Flavour:
    """``recs consume``'s flavour: the view counts, with click attribution where
    ``config.clicks`` is on (``--clicks``)."""
    if not config.clicks:
        return Flavour()
    return Flavour(new_batch=TouchBatch,
                   store=lambda client, keys: ClickCounts(client, keys, config.attribution),
                   on_written=report_clicks, cluster_batch=TouchStreamBatch,
                   cluster_writer=ClickStreamWriter)


def report_clicks(consumer: Loop, applied: Applied) -> None:
    """``recs_clicks_counted_total{lang,list}`` of a batch (both consumers count clicks)."""
    for (lang, list_), (_n, clicks) in applied.counted.items():
        if clicks:
            consumer.metrics.clicks.labels(lang, list_).inc(clicks)
