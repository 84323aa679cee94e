"""``recs impressions``: the impression topic (default ``resource-impressions``) -> the
impression and click counters (docs/CONTRACT.md "Impressions and clicks"), each impression
exactly once.

It is the views consumer's loop (consumers/consume.py) with the batch and the store swapped,
so every rule of that loop holds unchanged: the partition offsets live in Redis and are set
by the same script as the counters (store/impressions.py, guarded like the view counts), a
crash or SIGKILL at any point resumes from what Redis holds, a Redis that lost writes is
replayed from what it holds (on a Redis Cluster per (partition, stream), as the views:
consumers/impression_streams.py), invalid events go to the dead-letter topic (default
``resource-impressions.dlq``) with an ``error`` header. Impressions of one batch are applied
in offset order (a user's window evicts in consumption order); the app keys them by user id.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

from consumers.batch import OrderedBatch
from consumers.config import ConsumerConfig
from consumers.consume import StreamConsumer
from consumers.consume_command import run_until_signalled
from consumers.flavour import Flavour, report_clicks
from consumers.impression_events import parse_impression
from consumers.impression_streams import ImpressionStreamBatch, ImpressionStreamWriter
from consumers.metrics import ConsumerMetrics
from store.counts import Applied
from store.impressions import Impressions


@dataclass(frozen=True)
class ImpressionDefaults:
    """Where ``recs impressions`` differs from ``recs consume`` (every other setting, and
    what each means, is :class:`consumers.config.ConsumerConfig`'s)."""

    topic: str = "resource-impressions"
    """Topic of impression events (docs/CONTRACT.md)."""
    dlq_topic: str = "resource-impressions.dlq"
    """Dead-letter topic for invalid impression events."""
    group: str = "recs-impressions"
    """Consumer group id (not the views consumers': one rebalance never stalls both)."""
    batch_size: int = 2000
    """Events per batch at most. An impression costs the script ~4 writes per shown
    resource, so this bounds how long one call holds Redis."""
    metrics_port: int = 9104
    """Prometheus port; 0 = no HTTP server."""


class ImpressionMetrics:
    """The impression consumer's own counters, in the loop's registry."""

    def __init__(self, registry) -> None:
        self.counted = Counter("recs_impressions_counted", "impressions counted",
                               ["lang", "list"], registry=registry)
        self.duplicates = Counter(
            "recs_impressions_duplicate",
            "impressions whose id was already in the user's window (counted once)",
            registry=registry)

    def report(self, consumer: StreamConsumer, applied: Applied) -> None:
        for (lang, list_), (n, _clicks) in applied.counted.items():
            self.counted.labels(lang, list_).inc(n)
        report_clicks(consumer, applied)
        if applied.duplicates:
            self.duplicates.inc(applied.duplicates)


def impressions_consumer(config: ConsumerConfig) -> StreamConsumer:
    """One member of the impression group (module docstring)."""
    metrics = ConsumerMetrics()
    own = ImpressionMetrics(metrics.registry)
    flavour = Flavour(
        new_batch=lambda: OrderedBatch(parse_impression),
        store=lambda client, keys: Impressions(client, keys, config.attribution),
        on_written=own.report, cluster_batch=ImpressionStreamBatch,
        cluster_writer=ImpressionStreamWriter)
    return StreamConsumer(config, metrics, flavour)


def cmd_impressions(args) -> int:
    """``recs impressions``: run one member of the impression group until SIGTERM/SIGINT."""
    args.topic, args.dlq_topic, args.group = (args.impressions_topic,
                                              args.impressions_dlq_topic,
                                              args.impressions_group)
    return run_until_signalled(impressions_consumer(ConsumerConfig.from_args(args)))
