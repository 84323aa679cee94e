"""Prometheus metrics of the consumer and of the updater, each in a registry of its own.

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
        self.clicks = Counter(
            "recs_clicks_counted", "clicks counted by this consumer (recs consume: the "
            "impression came first; recs impressions: the view did)", ["lang", "list"],
            registry=r)
        self.rebalances = Counter(
            "recs_consumer_rebalances", "partition assignment changes", ["kind"], registry=r)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on ``port`` (a daemon thread); 0 means no server."""
        serve_metrics(self.registry, port, addr)


class UpdaterMetrics:
    """Prometheus metrics of one updater, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.users = Counter(
            "recs_update_users", "Users whose factors and recs were written, by outcome "
            "(updated; no_factors: views only on resources the model does not know)",
            ["lang", "outcome"], registry=self.registry)
        self.skipped = Counter(
            "recs_update_skipped_users", "Claimed users not written, by reason (stale_model: "
            "a new model was published during the solve; lease_lost: another updater took "
            "them over; bad_views_key: their views key is not a hash)",
            ["lang", "reason"], registry=self.registry)
        self.batch_seconds = Histogram(
            "recs_update_batch_seconds", "Claim to commit time of one batch", ["lang"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.pending = Gauge(
            "recs_update_pending_users", "Users waiting for an update (dirty backlog)",
            ["lang"], registry=self.registry)
        self.model_switches = Counter(
            "recs_update_model_switches", "Times a newly published model version was loaded",
            ["lang"], registry=self.registry)
        self.model_items = Gauge(
            "recs_update_model_items", "Resources in the model version in use", ["lang"],
            registry=self.registry)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on ``port`` (a daemon thread); 0 means no server."""
        serve_metrics(self.registry, port, addr)
