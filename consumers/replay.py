"""Keeping the consumer loop (``consumers.consume.StreamConsumer``) at what Redis holds (a
mixin: it shares the loop's batch in hand, its writer and its Kafka consumer).

- When the script refuses a batch, or the periodic check finds Redis holding another offset
  (Redis lost its latest writes, or another member wrote), the batch in hand is dropped and
  the partitions are sought back to what Redis holds, so the counts converge exactly again.
- On a Redis Cluster the check re-reads every stream's progress (at most every
  ``CLUSTER_CHECK_INTERVAL`` seconds, under load too): a stream below what we wrote (its
  node failed over and lost writes) seeks its partition back; otherwise idle streams move up
  to where their partition is written through (consumers/stream_writer.py).
- A seek Kafka refuses raises: reading on from the wrong place could skip events, while a
  crash is always safe (the restart resumes from the offsets in Redis). A Redis that cannot
  be read for the check is only logged: the next check (or the guard) finds the difference.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

import redis
from confluent_kafka import TopicPartition
from redis.exceptions import RedisClusterException

from store.progress import read_offsets

log = logging.getLogger("recs.consume")

CLUSTER_CHECK_INTERVAL = 1.0
"""Seconds between a cluster consumer's re-reads of its streams' progress (at most)."""


class ReplayFromRedis:
    """The offset check and the replay of the consumer loop."""

    def _check_offsets(self) -> None:
        """Idle: does Redis still hold the offsets we wrote? (It may have lost writes.)"""
        self._compare_offsets()
        if self.flavour.settle is not None:
            self.flavour.settle(self)

    def _compare_offsets(self) -> None:
        owned = self.batch.owned
        if not owned:
            return
        if self.cluster:
            self._compare_streams(owned)
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

    def _compare_streams(self, owned) -> None:
        """A cluster's re-read: a stream below what we wrote (its node failed over) seeks
        its partition back; else idle streams move up to where their partition is."""
        try:
            rolled = self.writer.check(owned) or self.writer.advance(owned)
        except (redis.RedisError, RedisClusterException) as exc:
            log.warning("redis unavailable for the offset check", extra={"fields": {
                "error": str(exc)}})
            return
        if rolled:
            self._replay(rolled)

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
