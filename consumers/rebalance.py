"""The consumer group's rebalance callbacks of ``consumers.consume.StreamConsumer`` (a mixin:
they share its batch in hand, its writer and its partition state).

On assignment each partition starts at the offset Redis holds (the beginning when Redis holds
none), whatever Kafka has committed. A revocation writes the batch in hand first (or drops it
once ``revoke_timeout`` passes: the offsets in Redis make dropping safe); a lost partition
writes nothing, since another member may own it already.
"""

from __future__ import annotations

import contextlib
import logging
import time

from confluent_kafka import Consumer, TopicPartition

from consumers.batch import PartitionState
from store.progress import read_offsets

log = logging.getLogger("recs.consume")


class StopBeforeReading(Exception):
    """Asked to stop while waiting for Redis to learn where to start: leave without reading."""


class RebalanceCallbacks:
    """``on_assign``, ``on_revoke`` and ``on_lost`` of the consumer loop."""

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned_once = True
        if not partitions:  # a cooperative rebalance that gave us nothing new
            self._assign(consumer, partitions)
            return
        if self.cluster:  # every stream's progress: the restart point is their minimum
            wanted = [tp.partition for tp in partitions]
            held = self.writer.call(lambda: self.writer.assigned(wanted),
                                    self._sleep_unless_stopping,
                                    "redis unavailable during assignment, retrying")
        else:
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
            raise StopBeforeReading()
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
        if self.cluster:
            self.writer.forget(gone)
        for p in gone:
            del owned[p]
            self._strays.discard(p)
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(self.cfg.topic, str(p))
        if gone:
            self.metrics.rebalances.labels(kind).inc()
            log.info(f"partitions {'revoked' if kind == 'revoke' else 'lost'}",
                     extra={"fields": {"partitions": sorted(gone)}})
