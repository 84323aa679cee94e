"""Writing one batch (consumers/batch.py) of a Kafka consumer loop (consumers/consume.py):
its dead letters first (delivered, or the consumer stops), then the batch and its offsets
in ONE guarded script call, retried while Redis is unreachable.

The store is anything with ``write(guard_key, guards, items) -> store.counts.Applied``:
``store.counts.Counts`` for views, ``store.control.Control`` for control events. How the
time between attempts is spent is the loop's ``wait(seconds)`` (pause and poll, or sleep
inside a rebalance callback); it may raise to drop the batch.

A dead letter the broker refuses for good is tried ``DLQ_ATTEMPTS`` times, then
:class:`DeadLetterError` stops the consumer before the batch's offsets are written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from consumers.batch import Batch, DeadLetter
from consumers.metrics import ConsumerMetrics
from consumers.retry import backoff, retry_redis
from core.errors import RecsError
from store.counts import Applied, Guard

log = logging.getLogger("recs.consume")

DLQ_ATTEMPTS = 3
"""Sends of one dead letter the broker refuses for good before the consumer stops."""

Wait = Callable[[float], None]


class DeadLetterError(RecsError):
    """A dead letter cannot be delivered: the consumer stops before writing its batch."""


class Store(Protocol):
    def write(self, guard_key: str, guards: list[Guard], items) -> Applied: ...


class DeadLetters:
    """Sends dead letters to ``topic`` with ``producer``."""

    def __init__(self, producer: Producer, topic: str, metrics: ConsumerMetrics,
                 retry_initial: float, retry_max: float) -> None:
        self.producer, self.topic, self.metrics = producer, topic, metrics
        self.retry = (retry_initial, retry_max)

    def send(self, dead: DeadLetter) -> None:
        dead.failed = None
        while True:
            try:
                self.producer.produce(self.topic, value=dead.value, key=dead.key,
                                      headers=dead.headers, on_delivery=dead.on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused before sending: too large, bad topic...
                cuts = dead.cuts
                self.refused(dead, exc.args[0])
                if dead.cuts == cuts:
                    self.producer.poll(0.5)

    def refused(self, dead: DeadLetter, err: KafkaError) -> None:
        """A send the producer or the broker refused: shrink a copy that is too large, retry
        a transient error, stop the consumer after DLQ_ATTEMPTS permanent refusals."""
        if err.code() in _TOO_LARGE and dead.shrink():
            self.metrics.dlq_truncated.inc()
            log.warning("dead letter too large for the dead-letter topic: sending it truncated",
                        extra={"fields": {"error": str(err), "cut": dead.cuts,
                                          "headers": _header_text(dead.own)}})
            return
        if (err.retriable() or err.code() in _TRANSIENT) and not err.fatal():
            return
        dead.refusals += 1
        if dead.refusals < DLQ_ATTEMPTS:
            return
        self.metrics.dlq_failures.labels(err.name()).inc()
        fields = {**_header_text(dead.own), "kafka_error": str(err), "dlq": self.topic}
        log.error("dead-letter topic refuses a dead letter for good: stopping before its batch "
                  "is written (a restart replays it)", extra={"fields": fields})
        raise DeadLetterError(f"dead-letter topic {self.topic!r} refused a dead letter "
                              f"{DLQ_ATTEMPTS} times ({err.str()}); nothing past it was "
                              "written or committed")

    def deliver(self, dead: list[DeadLetter], wait: Wait) -> None:
        """Every one of ``dead`` delivered (resent while refused), then the list emptied."""
        if not dead:
            return
        for delay in backoff(*self.retry):
            self.producer.flush(1.0)
            for d in dead:
                if d.failed is not None:
                    log.warning("dead-letter delivery failed, resending",
                                extra={"fields": {"error": str(d.failed)}})
                    self.refused(d, d.failed)
                    self.send(d)
            if all(d.delivered for d in dead):
                dead.clear()
                return
            self.metrics.dlq_retries.inc()
            log.warning("dead-letter topic not reachable, retrying", extra={"fields": {
                "pending": sum(not d.delivered for d in dead), "wait_s": delay}})
            wait(delay)


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


_TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)
# Delivery errors that pass once the broker is back: retried for as long as they last.
_TRANSIENT = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._QUEUE_FULL, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.NETWORK_EXCEPTION, KafkaError.BROKER_NOT_AVAILABLE,
}


def _header_text(headers: list) -> dict[str, str]:
    return {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v)
            for k, v in headers}
