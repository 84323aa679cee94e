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
- On a Redis Cluster (``redis+cluster://``) the same holds per *stream* (docs/CLUSTER.md
  section 0): a batch is split into one item-side call per language and one call per
  touched slot group, each guarded by its own progress field (consumers/stream_writer.py);
  a partition restarts from the minimum over its streams, each stream dropping the events
  it holds; the streams are re-read every second (and on assignment), and one found below
  what we wrote (a failed-over node lost writes) seeks its partition back
  (consumers/replay.py). Kafka commits carry that minimum. Cluster redirections, TRYAGAIN,
  CLUSTERDOWN and a node gone mid-failover are retried like an outage. ``--clicks`` and
  ``recs impressions`` use the same writer with their scripts' calls
  (consumers/click_streams.py, consumers/impression_streams.py); ``recs control`` keeps its
  own progress hash (store/control.py).

Invalid events go to the dead-letter topic, bytes unchanged, before the offsets that cover
them are written; one the broker refuses for good stops the consumer before its batch's
offsets are written (consumers/dead_letters.py).

A Redis outage: the write is retried with capped exponential backoff and logged; nothing
is committed meanwhile. While it lasts the consumer pauses its partitions and keeps calling
``poll`` between attempts, so librdkafka's ``max.poll.interval.ms`` never expires and the
member keeps its partitions (heartbeats are librdkafka's own thread). Messages a paused
poll still hands out are dropped and their partitions sought back after the write.

Three parts, as arroyo splits its processor from its strategies: the batch in hand and the
offsets per partition (consumers/batch.py, no I/O), the writer (consumers/writer.py: dead
letters, then the guarded script, retried while Redis is away; consumers/stream_writer.py on
a cluster) and the loop here (poll, pause/resume; Kafka commits only after a write
succeeded), with its rebalance callbacks in consumers/rebalance.py, its offset check and
replay in consumers/replay.py, its Kafka clients in consumers/kafka_clients.py, its settings
in consumers/config.py and its command (signals) in consumers/consume_command.py. A
:class:`Flavour` picks the batch, the store script and an optional settle step: ``recs
control`` (consumers/control.py) is this loop with another flavour.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import (
    KafkaException,
    TopicPartition,
)

from consumers.config import ConsumerConfig
from consumers.dead_letters import DeadLetters
from consumers.flavour import Flavour, views_flavour
from consumers.kafka_clients import kafka_clients, start_and_protocol
from consumers.metrics import ConsumerMetrics
from consumers.rebalance import RebalanceCallbacks, StopBeforeReading
from consumers.replay import CLUSTER_CHECK_INTERVAL, ReplayFromRedis
from consumers.writer import BatchWriter
from store.cluster_keys import layout
from store.connection import connect
from store.counts import Parked
from store.keys import Keys

log = logging.getLogger("recs.consume")


class _Abandoned(Exception):
    """The batch in hand must be dropped (partitions revoked or lost while writing it)."""


class StreamConsumer(RebalanceCallbacks, ReplayFromRedis):
    """One member of the consumer group. ``run()`` until ``stop()`` (or drained).

    The loop alone lives here (poll, pause/resume, Kafka commits; the rebalance callbacks
    are :class:`~consumers.rebalance.RebalanceCallbacks`', the offset check and the replay
    :class:`~consumers.replay.ReplayFromRedis`'); the batch in hand is ``self.batch`` and
    writing it is ``self.writer``'s."""

    def __init__(self, config: ConsumerConfig, metrics: ConsumerMetrics | None = None,
                 flavour: Flavour | None = None) -> None:
        self.cfg = config
        self.flavour = flavour = flavour or views_flavour(config)
        self.metrics = metrics or ConsumerMetrics()
        self.redis = connect(config.redis_url)
        # The views counts (and impressions) name their keys by the layout (progress per
        # stream on a cluster); a flavour without a cluster writer (recs control) hands
        # plain Keys to a store that picks the layout itself (store/control.py), its own
        # progress in the one offsets hash.
        self.keys = layout(self.redis, config.prefix) if flavour.cluster_writer is not None \
            else Keys(config.prefix)
        self.cluster = self.keys.cluster
        self._start, self._incremental = start_and_protocol(config.kafka_config)
        self.consumer, self.producer = kafka_clients(config)
        dead = DeadLetters(self.producer, config.dlq_topic, self.metrics,
                           config.retry_initial, config.retry_max)
        if self.cluster:
            # Progress per (partition, stream): consumers/stream_writer.py.
            self.offsets_key = None
            self.batch = flavour.cluster_batch()
            self.writer = flavour.cluster_writer(
                flavour.store(self.redis, self.keys), self.keys, config.group, config.topic,
                dead, self.metrics, config.retry_initial, config.retry_max)
            self._check_interval = min(config.offset_check_interval, CLUSTER_CHECK_INTERVAL)
        else:
            self.offsets_key = self.keys.offsets(config.group, config.topic)
            self.batch = flavour.new_batch()
            self.writer = BatchWriter(
                flavour.store(self.redis, self.keys), self.offsets_key, dead,
                self.metrics, config.retry_initial, config.retry_max)
            self._check_interval = config.offset_check_interval
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
        except StopBeforeReading:
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
        next_check = time.monotonic() + self._check_interval
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
            # On a cluster the re-read also runs between batches under load: it finds a
            # failed-over node's lost writes and moves idle streams up (the restart point).
            if not batch.in_hand and (not msgs or self.cluster):
                if now >= next_check:
                    self._check_offsets()
                    next_check = time.monotonic() + self._check_interval
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
        if self.flavour.on_written is not None:
            self.flavour.on_written(self, applied)
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

    def _commit(self, asynchronous: bool) -> None:
        """Tell Kafka how far Redis is, for lag dashboards only (on a cluster the restart
        point: the minimum over the partition's streams)."""
        owned = self.batch.owned
        if self.cluster:
            held = self.writer.restart_points(owned)
        else:
            held = {p: part.applied for p, part in owned.items()}
        offsets = [TopicPartition(self.cfg.topic, p, o)
                   for p, o in held.items() if o is not None]
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

    def _close(self) -> None:
        try:
            self.consumer.close()  # leaves the group (on_revoke runs with nothing in hand)
        except Exception as exc:
            log.warning("closing the consumer failed", extra={"fields": {"error": str(exc)}})
        self.producer.flush(5)
        self.redis.close()


def report_parked(parked: list[Parked], metrics: ConsumerMetrics) -> None:
    """Views the counts script parked in the quarantine: one ERROR line per key."""
    for p in parked:
        metrics.views_quarantined.labels(p.lang).inc()
        log.error("views parked in the quarantine: their key refuses increments; fix or "
                  "delete it, then run `recs repair`", extra={"fields": {
                      "lang": p.lang, "user": p.user or None, "reason": p.reason}})
