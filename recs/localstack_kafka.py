"""Apache Kafka on loopback, for tests and benchmarks: its own broker jars (fetched by Maven
from ``tests/kafka/pom.xml`` into a cache, kept between runs), storage formatted with its
StorageTool, and one or more combined broker+controller nodes in KRaft mode on a JVM.

A node keeps its log on disk: SIGKILLed and started again, it comes back with every record it
acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from recs.localstack_process import LOOPBACK, end_process, free_port, wait_for_port, wait_until

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


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka writes them (22 characters of URL-safe base64), never one
    that starts with ``-``: the storage tool would read that as an option (one id in 64 did,
    and a cluster start failed). Kafka's own ``Uuid.randomUuid`` skips those too."""
    import base64
    import uuid

    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


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
        cluster_id = kafka_cluster_id()
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
                wait_for_port(node.port, node.proc, timeout, f"Kafka node {node.node_id}")
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
            end_process(node.proc, timeout=20)
            node.proc = None

    def kill(self, node_id: int | None = None) -> None:
        """SIGKILL one node (all when ``node_id`` is None): a crash; its data stays."""
        for node in self.nodes:
            if node_id is None or node.node_id == node_id:
                end_process(node.proc, signal.SIGKILL)

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

    def leader(self, topic: str, partition: int) -> int | None:
        """The node id leading ``topic``'s ``partition`` now; None while the broker asked
        does not know the partition yet (metadata of a topic just created, or mid-election)."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.client_config})
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        known = meta.partitions.get(partition) if meta is not None else None
        return known.leader if known is not None else None

    @property
    def kind(self) -> str:
        return f"Apache Kafka {kafka_version()}"
