"""``recs consume``: Kafka view events -> per-language counts in Redis, each view exactly once.

How exactly-once works here (the offsets live in Redis, not in Kafka):

- Every batch is written by ONE Lua script (store/counts.py) that adds the counts AND sets
  each partition's next offset in ``Keys.offsets(group, topic)``, guarded: the script is
  given, for every partition this consumer owns, the offset it believes Redis holds, and
  refuses the whole batch if any differs. So a batch applies at most once, however often
  it is sent (a retry after a lost reply, a zombie member after a rebalance).
- On assignment each partition starts at the offset Redis holds (the beginning when Redis
  holds none), whatever Kafka has committed. Kafka commits happen after the Redis write
  and only serve lag dashboards.
- When the script refuses (or the periodic idle check finds Redis holding another offset:
  Redis lost its latest writes, or another member wrote), the batch in hand is dropped and
  the partitions are sought back to what Redis holds, so the counts converge exactly again.
- A crash at any point leaves Redis at a batch boundary; the restart resumes from there.

Invalid events go to the dead-letter topic, bytes unchanged, before the offsets that cover
them are written (at-least-once: a crash between the two re-sends them on replay). A copy
too large for the producer or the dead-letter topic (the broker accepted the original, with
headers it may not fit) is sent truncated instead: the value cut to 64 KiB, then emptied,
with headers ``truncated: true`` and ``original-size``. A dead letter the broker refuses
for good (topic invalid or missing, not authorized, still too large) is tried
``DLQ_ATTEMPTS`` times, then the consumer stops with one ERROR line, metric
``recs_consumer_dlq_failures_total{error}`` and a non-zero exit, before the batch's offsets
are written: nothing past it is counted or committed, and the restart replays it (invalid
events are never dropped, valid views never lost). A broker that is merely unreachable is
retried for as long as it lasts (WARNING, ``recs_consumer_dlq_retries_total``).

A Redis outage: the write is retried with capped exponential backoff and logged; nothing
is committed meanwhile. While it lasts the consumer pauses its partitions and keeps calling
``poll`` between attempts, so librdkafka's ``max.poll.interval.ms`` never expires and the
member keeps its partitions (heartbeats are librdkafka's own thread). Messages a paused
poll still hands out are dropped and their partitions sought back after the write.

Three parts, as arroyo splits its processor from its strategies: the batch in hand and the
offsets per partition (consumers/batch.py, no I/O), the writer (consumers/writer.py: dead
letters, then the guarded script, retried while Redis is away) and the loop here (poll,
rebalance callbacks, pause/resume; Kafka commits only after a write succeeded). A
:class:`Flavour` picks the batch, the store script and an optional settle step: ``recs
control`` (consumers/control.py) is this loop with another flavour.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)

from consumers.batch import Batch, PartitionState
from consumers.kafkalog import KafkaLog
from consumers.metrics import ConsumerMetrics
from consumers.writer import DLQ_ATTEMPTS, BatchWriter, DeadLetterError, DeadLetters, Store
from core.errors import InputError
from core.signals import on_stop_signals
from store.connection import connect
from store.counts import Counts, Parked, read_offsets
from store.keys import Keys

__all__ = ["DLQ_ATTEMPTS", "ConsumerConfig", "DeadLetterError", "Flavour", "StreamConsumer",
           "cmd_consume", "parse_kafka_config"]

log = logging.getLogger("recs.consume")

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
            until_drained=args.until_drained,
        )


def parse_kafka_config(items: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; a value may itself contain ``=``."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError("--kafka-config: expected KEY=VALUE (the value is not shown)")
        out[key.strip()] = value.strip()
    return out


class _Abandoned(Exception):
    """The batch in hand must be dropped (partitions revoked or lost while writing it)."""


class _StopNow(Exception):
    """Asked to stop while waiting for Redis to learn where to start: leave without reading."""


@dataclass(frozen=True)
class Flavour:
    """What a consumer loop reads and writes: the views consumer by default; ``recs
    control`` swaps the batch (validation, no aggregation), the store (its guarded script)
    and adds a settle step, and every rule of the loop holds for both."""

    new_batch: Callable[[], Batch] = Batch
    """The batch in hand (consumers/batch.py): parses, validates and aggregates messages."""
    store: Callable[[redis.Redis, Keys], Store] = Counts
    """The guarded script that writes a batch and its offsets (consumers/writer.py)."""
    settle: Callable[[StreamConsumer], None] | None = None
    """Run after each batch written outside a rebalance callback, and at each idle check."""


class StreamConsumer:
    """One member of the consumer group. ``run()`` until ``stop()`` (or drained).

    The loop alone lives here (poll, rebalance callbacks, pause/resume, Kafka commits);
    the batch in hand is ``self.batch`` and writing it is ``self.writer``'s."""

    def __init__(self, config: ConsumerConfig, metrics: ConsumerMetrics | None = None,
                 flavour: Flavour = Flavour()) -> None:
        self.cfg = config
        self.flavour = flavour
        self.metrics = metrics or ConsumerMetrics()
        self.keys = Keys(config.prefix)
        self.redis = connect(config.redis_url)
        self.offsets_key = self.keys.offsets(config.group, config.topic)
        self._start, self._incremental = _start_and_protocol(config.kafka_config)
        self.consumer, self.producer = _clients(config)
        self.batch = flavour.new_batch()
        self.writer = BatchWriter(
            flavour.store(self.redis, self.keys), self.offsets_key,
            DeadLetters(self.producer, config.dlq_topic, self.metrics,
                        config.retry_initial, config.retry_max),
            self.metrics, config.retry_initial, config.retry_max)
        # Control.
        self._stopping = False
        self._flushing = False
        self._abandon = False
        self._strays: set[int] = set()
        self._assigned_once = False
        self.first_message_at: float | None = None
        self.last_write_at: float | None = None
        self.events_applied = 0

    # -- public -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Finish the batch in hand, write it, commit, leave the group (from a signal too)."""
        self._stopping = True

    def run(self) -> int:
        cfg = self.cfg
        self.metrics.serve(cfg.metrics_port, cfg.metrics_address)
        self.consumer.subscribe([cfg.topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        log.info("consuming", extra={"fields": {
            "topic": cfg.topic, "group": cfg.group, "dlq": cfg.dlq_topic,
            "batch_size": cfg.batch_size, "batch_timeout": cfg.batch_timeout}})
        try:
            self._loop()
            self._flush()
            self._commit(asynchronous=False)
        except _StopNow:
            log.warning("stopped while Redis was unreachable; nothing was read")
            self.batch.clear()
        except BaseException:
            # Whatever broke, leaving the group must not try to write this batch again;
            # the offsets in Redis make dropping it safe.
            self.batch.clear()
            raise
        finally:
            self._close()
        log.info("stopped", extra={"fields": {"events_applied": self.events_applied}})
        return 0

    def _loop(self) -> None:
        cfg, batch = self.cfg, self.batch
        deadline = next_lag = 0.0
        next_check = time.monotonic() + cfg.offset_check_interval
        while not self._stopping:
            now = time.monotonic()
            # Short waits: a signal's handler runs only once consume() returns. consume()
            # waits its whole timeout to fill the batch, so an empty hand waits at most
            # batch_timeout too: a batch is then written within ~2 x batch_timeout.
            if batch.in_hand:
                wait = min(max(0.0, deadline - now), 0.5)
            else:
                wait = min(cfg.batch_timeout, 0.5)
            msgs = self.consumer.consume(cfg.batch_size - batch.in_hand, wait)
            now = time.monotonic()
            if msgs:
                if not batch.in_hand:
                    deadline = now + cfg.batch_timeout
                    if self.first_message_at is None:
                        self.first_message_at = time.perf_counter()
                self.add(msgs)
            if batch.in_hand and (batch.in_hand >= cfg.batch_size or now >= deadline):
                self._flush()
            if now >= next_lag:
                self._update_lag()
                next_lag = now + 1.0
            if not batch.in_hand and not msgs:
                if now >= next_check:
                    self._check_offsets()
                    next_check = now + cfg.offset_check_interval
                if cfg.until_drained and self._drained():
                    log.info("drained: every assigned partition is written up to its end")
                    return

    def add(self, msgs: list) -> None:
        """Take polled messages into the batch; their dead letters go out at once."""
        for dead in self.batch.add(msgs):
            self.writer.dead_letters.send(dead)
        self.metrics.batch_in_hand.set(self.batch.in_hand)

    # -- writing a batch --------------------------------------------------------------------
    def _flush(self, in_callback: bool = False) -> None:
        """Write the batch in hand; then, outside a rebalance callback, the flavour's
        settle step."""
        self._write(in_callback)
        if self.flavour.settle is not None and not in_callback and not self.batch.in_hand:
            self.flavour.settle(self)

    def _write(self, in_callback: bool) -> None:
        """Write the batch in hand (then commit to Kafka, for lag dashboards)."""
        batch = self.batch
        if not batch.in_hand or self._flushing:
            return
        started = time.perf_counter()
        # Inside a rebalance callback the group waits for us and poll() may not run: the
        # whole write (dead letters, then Redis) gets revoke_timeout before it is dropped.
        give_up = time.monotonic() + self.cfg.revoke_timeout if in_callback else None
        self._flushing = True
        self._abandon = False
        try:
            guards, applied = self.writer.write(batch, lambda s: self._wait(s, give_up))
        except _Abandoned:
            log.warning("batch dropped: partitions revoked or lost while writing it",
                        extra={"fields": {"messages": batch.in_hand}})
            self._discard_batch()
            return
        finally:
            self._flushing = False
            self._recover_strays()
        if applied.refused:
            self._replay({int(p): None if held is None else int(held)
                          for p, held in applied.refused.items()})
            return
        if applied.parked:
            report_parked(applied.parked, self.metrics)
        self._written(started)
        batch.written(guards)
        self.metrics.batch_in_hand.set(0)
        self._commit(asynchronous=True)

    def _written(self, started: float) -> None:
        b, m = self.batch, self.metrics
        self.last_write_at = time.perf_counter()
        self.events_applied += b.valid
        m.batches.inc()
        m.events_applied.inc(b.valid)
        m.views_applied.inc(b.view_sum)
        if b.skipped:
            m.events_skipped.inc(b.skipped)
        for reason, n in b.invalid.items():
            m.events_invalid.labels(reason).inc(n)
        m.batch_seconds.observe(time.perf_counter() - started)
        log.debug("batch written", extra={"fields": {
            "messages": b.in_hand, "events": b.valid, "views": b.view_sum}})

    def _wait(self, seconds: float, give_up: float | None) -> None:
        """Sleep between retries. Outside a rebalance callback (``give_up`` None) the
        partitions are paused and ``poll`` keeps running (group membership,
        max.poll.interval.ms); inside one, ``poll`` may not be called, so the batch is
        dropped once the wait would pass ``give_up``."""
        if give_up is not None:
            if time.monotonic() + seconds > give_up:
                raise _Abandoned()
            time.sleep(seconds)
            return
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        end = time.monotonic() + seconds
        try:
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    break
                msg = self.consumer.poll(min(left, 0.5))
                if (msg is not None and msg.error() is None
                        and msg.partition() in self.batch.owned):
                    self._strays.add(msg.partition())
                if self._abandon:
                    raise _Abandoned()
        finally:
            # Also when abandoning: a cooperative revocation takes only some partitions,
            # and the ones kept would otherwise stay paused for good.
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.resume(assignment)

    def _recover_strays(self) -> None:
        """Messages handed out by a poll while paused were dropped: read them again."""
        if not self._strays:
            return
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.resume(assignment)
        for p in self._strays:
            part = self.batch.owned.get(p)
            if part is not None:
                self._seek(p, part.read)
        self._strays.clear()

    def _replay(self, held: dict[int, int | None]) -> None:
        """Redis holds other offsets than we thought: drop the batch, resume from Redis."""
        self.batch.held(held)
        self.metrics.replays.inc(len(held))
        log.warning("offsets in Redis differ from ours; replaying from Redis", extra={"fields": {
            "partitions": {str(p): o for p, o in held.items()}, "dropped": self.batch.in_hand}})
        self._discard_batch(sought=held)

    def _discard_batch(self, sought: Collection[int] = ()) -> None:
        """Forget the batch in hand and seek every owned partition back to what Redis holds
        (as far as we know) wherever we had read past it, and every ``sought`` one."""
        for p, offset in self.batch.rewind(sought):
            self._seek(p, offset)
        self.metrics.batch_in_hand.set(0)

    def _seek(self, p: int, offset: int | None) -> None:
        """Read ``p`` again from ``offset`` (None: where auto.offset.reset says). A refused
        seek raises: reading on from the wrong place could skip events, while a crash is
        always safe (the restart resumes from the offsets in Redis)."""
        self.batch.owned[p].eof = -1
        self.consumer.seek(TopicPartition(self.cfg.topic, p,
                                          self._start if offset is None else offset))

    def _check_offsets(self) -> None:
        """Idle: does Redis still hold the offsets we wrote? (It may have lost writes.)"""
        self._compare_offsets()
        if self.flavour.settle is not None:
            self.flavour.settle(self)

    def _compare_offsets(self) -> None:
        owned = self.batch.owned
        if not owned:
            return
        try:
            held = read_offsets(self.redis, self.keys, self.cfg.group, self.cfg.topic)
        except redis.RedisError as exc:
            log.warning("redis unavailable for the offset check", extra={"fields": {
                "error": str(exc)}})
            return
        differ = {p: held.get(p) for p, part in owned.items() if held.get(p) != part.applied}
        if differ:
            self._replay(differ)

    def _commit(self, asynchronous: bool) -> None:
        """Tell Kafka how far Redis is, for lag dashboards only."""
        offsets = [TopicPartition(self.cfg.topic, p, part.applied)
                   for p, part in self.batch.owned.items() if part.applied is not None]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            log.info("kafka commit failed (only lag reporting is affected)",
                     extra={"fields": {"error": str(exc)}})

    def _update_lag(self) -> None:
        for p, part in self.batch.owned.items():
            tp = TopicPartition(self.cfg.topic, p)
            try:
                low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high is not None and high >= 0:
                lag = high - max(part.read, low if low >= 0 else 0)
                self.metrics.lag.labels(self.cfg.topic, str(p)).set(max(lag, 0))

    def _drained(self) -> bool:
        return self._assigned_once and self.batch.drained()

    # -- rebalancing --------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned_once = True
        if not partitions:  # a cooperative rebalance that gave us nothing new
            self._assign(consumer, partitions)
            return
        held = self.writer.call(
            lambda: read_offsets(self.redis, self.keys, self.cfg.group, self.cfg.topic),
            self._sleep_unless_stopping, "redis unavailable during assignment, retrying")
        for tp in partitions:
            offset = held.get(tp.partition)
            tp.offset = self._start if offset is None else offset
            self.batch.owned[tp.partition] = PartitionState(offset)
        self._assign(consumer, partitions)
        # librdkafka keeps a partition's pause flag across unassign/assign: one revoked
        # while a Redis outage had it paused would otherwise stay silent forever.
        consumer.resume(partitions)
        self.metrics.rebalances.labels("assign").inc()
        log.info("partitions assigned", extra={"fields": {
            "partitions": sorted(tp.partition for tp in partitions),
            "offsets": {str(tp.partition): held.get(tp.partition) for tp in partitions}}})

    def _sleep_unless_stopping(self, seconds: float) -> None:
        """The wait between Redis attempts in ``_on_assign``: we cannot poll there, so just
        sleep (an outage longer than max.poll.interval.ms makes librdkafka leave the group,
        and we join again afterwards: slow but safe). A stop request leaves at once: these
        partitions are not read yet, and the offsets in Redis make dropping a batch safe."""
        if self._stopping:
            raise _StopNow()
        time.sleep(seconds)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._flushing:  # called from inside our own retry loop: let it drop the batch
            self._forget(partitions, "revoke")
            self._abandon = True
        else:
            self._flush(in_callback=True)  # drops the batch itself if Redis stays down
            self._commit(asynchronous=True)
            self._forget(partitions, "revoke")
        self._unassign(consumer, partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Another member may own them already: write nothing (the guard would refuse
        # anyway); what we read is replayed by whoever owns them now.
        self._forget(partitions, "lost")
        if self._flushing:
            self._abandon = True
        else:
            self._discard_batch()
        self._unassign(consumer, partitions)

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._incremental:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)

    def _unassign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._incremental:
            consumer.incremental_unassign(partitions)
        else:
            consumer.unassign()

    def _forget(self, partitions: list[TopicPartition], kind: str) -> None:
        owned = self.batch.owned
        gone = [tp.partition for tp in partitions if tp.partition in owned]
        for p in gone:
            del owned[p]
            self._strays.discard(p)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(self.cfg.topic, str(p))
        if gone:
            self.metrics.rebalances.labels(kind).inc()
            log.info(f"partitions {'revoked' if kind == 'revoke' else 'lost'}",
                     extra={"fields": {"partitions": sorted(gone)}})

    def _close(self) -> None:
        try:
            self.consumer.close()  # leaves the group (on_revoke runs with nothing in hand)
        except Exception as exc:
            log.warning("closing the consumer failed", extra={"fields": {"error": str(exc)}})
        self.producer.flush(5)
        self.redis.close()


def _start_and_protocol(extra: dict[str, str]) -> tuple[int, bool]:
    """Where a partition without offsets in Redis starts; whether the group assigns
    incrementally (cooperative or the KIP-848 protocol)."""
    reset = str(extra.get("auto.offset.reset", "earliest")).lower()
    start = OFFSET_END if reset in ("latest", "largest", "end") else OFFSET_BEGINNING
    incremental = ("cooperative" in str(extra.get("partition.assignment.strategy", ""))
                   or str(extra.get("group.protocol", "")).lower() == "consumer")
    return start, incremental


def _clients(config: ConsumerConfig) -> tuple[Consumer, Producer]:
    """The group member and the dead-letter producer."""
    extra = dict(config.kafka_config)
    if str(extra.pop("enable.auto.commit", "false")).lower() in ("true", "1"):
        log.warning("enable.auto.commit ignored: offsets are recorded in Redis")
    consumer = Consumer({
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group,
        "auto.offset.reset": "earliest",
        # Views should reach the updater within a fraction of a second; librdkafka's
        # 500 ms default fetch wait dominates that on quiet topics.
        "fetch.wait.max.ms": 100,
        **extra,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,  # how --until-drained knows a partition's end
        "on_commit": _on_commit,
        **KafkaLog("consumer", config.broker_warn_after).settings(extra),
    })
    producer_extra = {k: v for k, v in extra.items() if k not in _CONSUMER_ONLY}
    producer = Producer({
        "bootstrap.servers": config.bootstrap_servers,
        "acks": "all",
        "linger.ms": 20,
        **producer_extra,
        **KafkaLog("dlq-producer", None).settings(producer_extra),
    })
    return consumer, producer


# librdkafka warns about (and ignores) consumer-only settings given to a producer; leave
# the common ones out of the dead-letter producer so its log stays quiet.
_CONSUMER_ONLY = {
    "group.id", "group.instance.id", "session.timeout.ms", "heartbeat.interval.ms",
    "max.poll.interval.ms", "auto.offset.reset", "partition.assignment.strategy",
    "fetch.min.bytes", "fetch.max.bytes", "fetch.wait.max.ms", "max.partition.fetch.bytes",
    "queued.min.messages", "queued.max.messages.kbytes", "isolation.level", "group.protocol",
    "enable.partition.eof", "check.crcs", "group.remote.assignor", "fetch.error.backoff.ms",
    "coordinator.query.interval.ms", "auto.commit.interval.ms", "enable.auto.offset.store",
}


def report_parked(parked: list[Parked], metrics: ConsumerMetrics) -> None:
    """Views the counts script parked in the quarantine: one ERROR line per key."""
    for p in parked:
        metrics.views_quarantined.labels(p.lang).inc()
        log.error("views parked in the quarantine: their key refuses increments; fix or "
                  "delete it, then run `recs repair`", extra={"fields": {
                      "lang": p.lang, "user": p.user or None, "reason": p.reason}})


def _on_commit(err, partitions) -> None:
    if err is not None:
        log.debug("kafka commit failed", extra={"fields": {"error": str(err)}})


def run_until_signalled(consumer: StreamConsumer) -> int:
    """Run ``consumer`` until SIGTERM/SIGINT: the first writes the batch in hand and leaves
    the group; a second exits at once (still safe: the offsets in Redis say what is applied)."""

    def first(name: str) -> None:
        log.info("signal received: writing the batch in hand, then leaving the group",
                 extra={"fields": {"signal": name}})
        consumer.stop()

    on_stop_signals(first)
    return consumer.run()


def cmd_consume(args) -> int:
    """``recs consume``: run one group member until SIGTERM/SIGINT (twice: at once)."""
    return run_until_signalled(StreamConsumer(ConsumerConfig.from_args(args)))
