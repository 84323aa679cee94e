"""The Kafka clients of a consumer loop (``consumers/consume.py``): the group member and the
dead-letter producer, built from :class:`consumers.config.ConsumerConfig`, with librdkafka's
log routed through ``consumers/kafkalog.py``. Offsets are never committed automatically:
they live in Redis with the counts they cover."""

from __future__ import annotations

import logging

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Producer

from consumers.config import ConsumerConfig
from consumers.kafkalog import KafkaLog

log = logging.getLogger("recs.consume")


def start_and_protocol(extra: dict[str, str]) -> tuple[int, bool]:
    """Where a partition without offsets in Redis starts; whether the group assigns
    incrementally (cooperative or the KIP-848 protocol)."""
    reset = str(extra.get("auto.offset.reset", "earliest")).lower()
    start = OFFSET_END if reset in ("latest", "largest", "end") else OFFSET_BEGINNING
    incremental = ("cooperative" in str(extra.get("partition.assignment.strategy", ""))
                   or str(extra.get("group.protocol", "")).lower() == "consumer")
    return start, incremental


def kafka_clients(config: ConsumerConfig) -> tuple[Consumer, Producer]:
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
    producer_extra = {k: v for k, v in extra.items() if k not in CONSUMER_ONLY}
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
CONSUMER_ONLY = {
    "group.id", "group.instance.id", "session.timeout.ms", "heartbeat.interval.ms",
    "max.poll.interval.ms", "auto.offset.reset", "partition.assignment.strategy",
    "fetch.min.bytes", "fetch.max.bytes", "fetch.wait.max.ms", "max.partition.fetch.bytes",
    "queued.min.messages", "queued.max.messages.kbytes", "isolation.level", "group.protocol",
    "enable.partition.eof", "check.crcs", "group.remote.assignor", "fetch.error.backoff.ms",
    "coordinator.query.interval.ms", "auto.commit.interval.ms", "enable.auto.offset.store",
}


def _on_commit(err, partitions) -> None:
    if err is not None:
        log.debug("kafka commit failed", extra={"fields": {"error": str(err)}})
