"""The dead-letter producer of a Kafka consumer loop (consumers/consume.py): invalid events
go to the dead-letter topic, bytes unchanged, before the offsets that cover them are
written (consumers/writer.py delivers a batch's dead letters first; at-least-once: a crash
between the two re-sends them on replay).

A copy too large for the producer or the dead-letter topic (the broker accepted the
original, with headers it may not fit) is sent truncated instead: the value cut to 64 KiB,
then emptied, with headers ``truncated: true`` and ``original-size`` (consumers/batch.py
``DeadLetter.shrink``). A dead letter the broker refuses for good (topic invalid or
missing, not authorized, still too large) is tried ``DLQ_ATTEMPTS`` times, then
:class:`DeadLetterError` stops the consumer with one ERROR line, metric
``recs_consumer_dlq_failures_total{error}`` and a non-zero exit, before the batch's offsets
are written: nothing past it is counted or committed, and the restart replays it (invalid
events are never dropped, valid views never lost). A broker that is merely unreachable is
retried for as long as it lasts (WARNING, ``recs_consumer_dlq_retries_total``).
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException, Producer

from consumers.batch import DeadLetter
from consumers.metrics import ConsumerMetrics
from consumers.retry import Wait, backoff
from core.errors import RecsError

log = logging.getLogger("recs.consume")

DLQ_ATTEMPTS = 3
"""Sends of one dead letter the broker refuses for good before the consumer stops."""


class DeadLetterError(RecsError):
    """A dead letter cannot be delivered: the consumer stops before writing its batch."""


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

