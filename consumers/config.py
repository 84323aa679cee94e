"""Settings of the streaming services, each field with its default and a docstring:
``recs consume`` (:class:`ConsumerConfig`, also ``recs control``'s) and ``recs update``
(:class:`UpdaterConfig`). The command line reads its defaults from here and fills them from
flags and ``RECS_*`` variables."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import InputError
from core.options import parse_kafka_config
from store.attribution import AttributionConfig
from store.trending import TrendingConfig


@dataclass
class ConsumerConfig:
    """Everything ``recs consume`` can be told (flags and RECS_* env vars)."""

    bootstrap_servers: str = "localhost:9092"
    """Kafka bootstrap servers."""
    topic: str = "resource-views"
    """Topic of view events."""
    dlq_topic: str = "resource-views.dlq"
    """Dead-letter topic: invalid events, bytes unchanged, header ``error`` = reason."""
    group: str = "recs"
    """Consumer group id; also names the offsets hash in Redis."""
    redis_url: str = "redis://localhost:6379/0"
    """Redis URL (password and rediss:// allowed)."""
    prefix: str = "recs"
    """Redis key prefix."""
    batch_size: int = 5000
    """Messages per batch at most (valid and invalid alike)."""
    batch_timeout: float = 0.05
    """Seconds after its first message a batch is written even if not full. Under load
    batches fill by size long before; on a quiet topic this bounds how stale counts are."""
    metrics_port: int = 9100
    """Prometheus port; 0 = no HTTP server."""
    metrics_address: str = "0.0.0.0"
    """Address the metrics server listens on: every interface by default, so a Prometheus in
    another container can scrape it (the metrics carry counts, no secrets); 127.0.0.1 keeps
    it on this host."""
    broker_warn_after: float = 30.0
    """Seconds without any reachable Kafka broker before a WARNING (consumers/kafkalog.py)."""
    kafka_config: dict[str, str] = field(default_factory=dict)
    """Extra librdkafka settings for the consumer and the dead-letter producer (SASL, SSL,
    timeouts...). ``enable.auto.commit`` is always false."""
    retry_initial: float = 0.1
    """First wait in seconds before retrying a failed Redis call or dead-letter flush."""
    retry_max: float = 5.0
    """Cap in seconds of the doubling retry wait."""
    offset_check_interval: float = 5.0
    """While idle, compare the offsets Redis holds with ours this often (seconds), so a Redis
    that lost writes is noticed even when no new event arrives."""
    revoke_timeout: float = 10.0
    """How long a revocation may spend writing the batch in hand before dropping it (the
    group waits for us meanwhile; the offsets in Redis make dropping safe)."""
    until_drained: bool = False
    """Exit 0 once every assigned partition is read up to its end and written (batch jobs,
    the benchmark)."""
    clicks: bool = False
    """``recs consume --clicks``: attribute clicks to impressions (keeps a view window per
    user; docs/CONTRACT.md "Clicks"). Off by default: attribution costs ingest speed (0.24x)
    and Redis memory per active user, which only a platform that publishes impressions needs."""
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    """The click window and the window caps, the same for ``recs consume`` and ``recs
    impressions``."""

    @classmethod
    def from_args(cls, args) -> ConsumerConfig:
        if args.batch_size < 1 or args.batch_timeout <= 0:
            raise InputError("--batch-size must be >= 1 and --batch-timeout > 0")
        return cls(
            bootstrap_servers=args.kafka_bootstrap_servers, topic=args.topic,
            dlq_topic=args.dlq_topic, group=args.group, redis_url=args.redis_url,
            prefix=args.prefix, batch_size=args.batch_size, batch_timeout=args.batch_timeout,
            metrics_port=args.metrics_port, metrics_address=args.metrics_address,
            broker_warn_after=args.broker_warn_after,
            kafka_config=parse_kafka_config(args.kafka_config),
            retry_max=args.redis_retry_max, offset_check_interval=args.offset_check_interval,
            until_drained=args.until_drained, clicks=getattr(args, "clicks", False),
            attribution=attribution_from_args(args),
        )


def attribution_from_args(args) -> AttributionConfig:
    """The ``--click-window`` and cap flags (the defaults where a command has none)."""
    d = AttributionConfig()
    return AttributionConfig(
        window=getattr(args, "click_window", d.window),
        impression_cap=getattr(args, "impression_cap", d.impression_cap),
        view_cap=getattr(args, "view_cap", d.view_cap),
        state_ttl=getattr(args, "click_state_ttl", d.state_ttl))


@dataclass(frozen=True)
class UpdaterConfig:
    """Settings of one ``recs update`` process (flags / ``RECS_*`` environment)."""

    redis_url: str = "redis://localhost:6379/0"
    """Where the counts, the queue and the published model live."""
    prefix: str = "recs"
    """Key prefix (store/keys.py)."""
    langs: tuple[str, ...] = ()
    """Languages to update; empty means every language in ``recs:langs``."""
    batch_size: int = 500
    """Users claimed, solved and written together; bigger batches amortise the round trips,
    smaller ones cut the latency of a single view."""
    poll_interval: float = 0.02
    """Seconds to sleep when no language has pending users (the latency floor when idle)."""
    top_n: int = 20
    """Recommendations kept per user (N of the contract)."""
    lease_seconds: float = 30.0
    """How long a claim holds a user; must exceed a batch's time by far. It is how long the
    users of an updater that died mid-batch wait before another updater takes them."""
    metrics_port: int = 9101
    """Prometheus endpoint port; 0 turns it off."""
    metrics_address: str = "0.0.0.0"
    """Address the metrics server listens on (README "Metrics" says why every interface)."""
    langs_refresh_seconds: float = 5.0
    """How often ``recs:langs`` is re-read to find languages that appeared."""
    progress_log_seconds: float = 30.0
    """How often a progress line (users updated, pending backlog) is logged at INFO."""
    trending: TrendingConfig = TrendingConfig()
    """The trending list this loop refreshes every ``trending.every`` seconds (0: never)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")
        if self.top_n < 1:
            raise InputError("--top-n must be at least 1")
        if not self.poll_interval >= 0:
            raise InputError("--poll-interval must be 0 or more seconds")
        if not self.lease_seconds > 0:
            raise InputError("--lease-seconds must be positive")
        if not 0 <= self.metrics_port <= 65535:
            raise InputError("--metrics-port must be 0 (off) or a TCP port")

    @classmethod
    def from_args(cls, args) -> UpdaterConfig:
        return cls(
            redis_url=args.redis_url, prefix=args.prefix, langs=tuple(args.lang or ()),
            batch_size=args.batch_size, poll_interval=args.poll_interval, top_n=args.top_n,
            lease_seconds=args.lease_seconds, metrics_port=args.metrics_port,
            metrics_address=args.metrics_address, trending=TrendingConfig.from_args(args),
        )
