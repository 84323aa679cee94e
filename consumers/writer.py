"""Writing one batch (consumers/batch.py) of a Kafka consumer loop (consumers/consume.py) on
one Redis: its dead letters first (consumers/dead_letters.py: delivered, or the consumer
stops), then the batch and its offsets in ONE guarded script call, retried while Redis is
unreachable. On a Redis Cluster the views consumer's writer is consumers/stream_writer.py's.

The store is anything with ``write(guard_key, guards, items) -> store.counts.Applied``:
``store.counts.Counts`` for views, ``store.control.Control`` for control events. How the
time between attempts is spent is the loop's ``wait(seconds)`` (pause and poll, or sleep
inside a rebalance callback); it may raise to drop the batch. A batch's offsets are never
written before its dead letters are delivered.
"""

from __future__ import annotations

import logging
from typing import Protocol

from consumers.batch import Batch
from consumers.dead_letters import DeadLetters
from consumers.metrics import ConsumerMetrics
from consumers.retry import Wait, backoff, retry_redis
from store.counts import Applied
from store.guards import Guard

log = logging.getLogger("recs.consume")


class Store(Protocol):
    def write(self, guard_key: str, guards: list[Guard], items) -> Applied: ...


class BatchWriter:
    """Dead letters, then the guarded write of a batch and its offsets to ``guard_key``."""

    def __init__(self, store: Store, guard_key: str, dead_letters: DeadLetters,
                 metrics: ConsumerMetrics, retry_initial: float, retry_max: float) -> None:
        self.store, self.guard_key, self.dead_letters = store, guard_key, dead_letters
        self.metrics = metrics
        self.retry = (retry_initial, retry_max)

    def write(self, batch: Batch, wait: Wait) -> tuple[list[Guard], Applied]:
        """Write ``batch``; returns the guards sent and what the script answered (its
        ``refused`` non-empty: nothing was written)."""
        self.dead_letters.deliver(batch.dead, wait)
        guards = batch.guards()
        payload = batch.payload()
        applied = self.call(lambda: self.store.write(self.guard_key, guards, payload), wait)
        return guards, applied

    def call(self, call, wait: Wait, message: str = "redis unavailable, retrying"):
        """``call()``, retried while Redis is unavailable, ``wait`` between attempts."""
        return retry_redis(call, wait, backoff(*self.retry), log, message,
                           on_retry=self.metrics.redis_retries.inc)
