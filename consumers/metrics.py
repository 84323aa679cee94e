"""Prometheus metrics of the consumer, in a registry of their own.

A registry per consumer (rather than prometheus-client's global one) lets tests and the
benchmark run several consumers in one process. Counters move once per batch, never once
per event: the hot loop stays free of locks.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from core.metrics import serve_metrics


class ConsumerMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.events_applied = Counter(
            "recs_consumer_events_applied", "valid events whose views reached Redis",
            registry=r)
        self.views_applied = Counter(
            "recs_consumer_views_applied", "views (sum of event counts) that reached Redis",
            registry=r)
        self.events_invalid = Counter(
            "recs_consumer_events_invalid", "invalid events sent to the dead-letter topic",
            ["reason"], registry=r)
        self.events_skipped = Counter(
            "recs_consumer_events_skipped",
            "messages read again but already applied (offset below the one Redis holds)",
            registry=r)
        self.batches = Counter(
            "recs_consumer_batches", "batches written to Redis", registry=r)
        self.batch_seconds = Histogram(
            "recs_consumer_batch_seconds", "time to write one batch (DLQ flush + Redis)",
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30),
            registry=r)
        self.batch_in_hand = Gauge(
            "recs_consumer_batch_in_hand", "messages read but not yet written", registry=r)
        self.lag = Gauge(
            "recs_consumer_lag", "high watermark minus the consumer's position",
            ["topic", "partition"], registry=r)
        self.redis_retries = Counter(
            "recs_consumer_redis_retries", "Redis calls retried after an error", registry=r)
        self.dlq_retries = Counter(
            "recs_consumer_dlq_retries", "dead-letter flushes retried", registry=r)
        self.dlq_truncated = Counter(
            "recs_consumer_dlq_truncated",
            "dead letters sent truncated (headers truncated, original-size): the whole copy "
            "did not fit the producer's or the topic's size limit", registry=r)
        self.dlq_failures = Counter(
            "recs_consumer_dlq_failures",
            "dead letters the dead-letter topic refused for good; the consumer stopped",
            ["error"], registry=r)
        self.replays = Counter(
            "recs_consumer_offset_replays",
            "partitions sought to the offset Redis holds because it differed from ours",
            registry=r)
        self.views_quarantined = Counter(
            "recs_consumer_views_quarantined",
            "users' views (or item totals: user '') parked because their key refused an "
            "increment (recs repair re-applies them)", ["lang"], registry=r)
        self.rebalances = Counter(
            "recs_consumer_rebalances", "partition assignment changes", ["kind"], registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on ``port`` (a daemon thread); 0 means no server."""
        serve_metrics(self.registry, port, addr)
