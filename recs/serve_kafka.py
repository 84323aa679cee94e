"""How far behind the consumer is, for the operator page of ``recs serve``: Kafka's end
offsets (high watermarks) of the views topic against the next offsets the consumer has
applied, which it records in Redis with the counts (``Keys.offsets(group, topic)``).

Only used when ``recs serve`` is given ``--kafka-bootstrap-servers``. librdkafka calls block,
so they run in a worker thread; the end offsets, or the failure to get them, are kept for
``ttl`` seconds, so a page that is reloaded often does not load the broker, and page loads
behind an unreachable broker do not queue up, each waiting out the timeout. A partition
Redis has no record of counts from its low watermark, where the consumer starts
(``auto.offset.reset=earliest``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

from store.aclient import AsyncRecsClient


@dataclass(frozen=True)
class Lag:
    """The consumer group's lag on one topic, or why it is unknown."""

    topic: str
    group: str
    total: int | None
    partitions: dict[int, int]
    error: str | None = None


class LagProbe:
    """End offsets from Kafka (cached), applied offsets from Redis (fresh each time)."""

    def __init__(self, bootstrap: str, topic: str, group: str,
                 extra: dict[str, str] | None = None, ttl: float = 5.0,
                 timeout: float = 5.0) -> None:
        self.bootstrap, self.topic, self.group = bootstrap, topic, group
        self.extra, self.ttl, self.timeout = dict(extra or {}), ttl, timeout
        self._consumer = None
        self._lock = threading.Lock()
        # (until when, end offsets or the failure): a failure is kept as long as an answer,
        # so page loads behind an unreachable broker do not each wait ``timeout`` in turn.
        self._ends: tuple[float, dict[int, tuple[int, int]] | Exception] | None = None
        self.probes = 0
        """Times the broker was asked (each one may take ``timeout``)."""

    def _watermarks(self) -> dict[int, tuple[int, int]]:
        with self._lock:
            if self._ends is None or self._ends[0] <= time.monotonic():
                self.probes += 1
                try:
                    found: dict[int, tuple[int, int]] | Exception = self._ask()
                except Exception as exc:  # the broker away, the topic missing, bad settings
                    found = exc
                self._ends = (time.monotonic() + self.ttl, found)
            if isinstance(self._ends[1], Exception):
                raise self._ends[1]
            return self._ends[1]

    def _ask(self) -> dict[int, tuple[int, int]]:
        from confluent_kafka import Consumer, TopicPartition

        if self._consumer is None:
            # Never subscribes or commits: it only asks for watermarks.
            self._consumer = Consumer({
                "bootstrap.servers": self.bootstrap, **self.extra,
                "group.id": f"{self.group}-serve-probe", "enable.auto.commit": False})
        meta = self._consumer.list_topics(self.topic, timeout=self.timeout)
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise LookupError(f"topic {self.topic!r}: "
                              f"{topic.error if topic is not None else 'not found'}")
        return {p: self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=self.timeout)
                for p in sorted(topic.partitions)}

    async def lag(self, recs: AsyncRecsClient) -> Lag:
        """Events in Kafka the consumer has not applied to Redis yet, per partition."""
        try:
            ends = await asyncio.to_thread(self._watermarks)
        except Exception as exc:  # the broker away, the topic missing, bad settings
            return Lag(self.topic, self.group, None, {}, f"{type(exc).__name__}: {exc}")
        held = await recs.offsets(self.group, self.topic)
        parts = {p: max(0, high - held.get(p, low)) for p, (low, high) in ends.items()}
        return Lag(self.topic, self.group, sum(parts.values()), parts)

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
