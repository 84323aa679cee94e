"""A Sentinel-managed Redis on loopback for tests: a primary, one replica and three
``redis-sentinel`` processes (quorum 2), every port free and below 55536, chosen at run time.

The replica replicates through a :class:`Relay` (a TCP relay the test controls), so a test
can freeze replication and then SIGKILL the primary: the replica the Sentinels promote has
lost the primary's latest acknowledged writes, the data loss of a real failover to a lagging
replica, made certain instead of left to a race. The Sentinels reach the replica directly
(the primary reports it by its own port), so only the replication stream goes through the
relay.

Invariants: the servers require ``PASSWORD`` (the Sentinels use ``auth-pass``; they have no
password of their own); ``client()`` always talks to whichever node the Sentinels name now.
"""

from __future__ import annotations

import contextlib
import random
import select
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.sentinel import Sentinel

from recs.localstack import RedisServer
from recs.localstack_process import LOOPBACK, end_process, wait_for_port, wait_until

SERVICE = "recs-primary"
PASSWORD = "sentinel-test-Pa55"
LOW_PORTS = (20000, 55535)
"""Ports are drawn from here: a cluster node's bus is its port + 10000 (<= 65535)."""


def free_low_port(offsets: tuple[int, ...] = (0,), taken: set[int] | None = None) -> int:
    """A port in ``LOW_PORTS`` that is free (bindable on loopback) at every ``port + offset``
    (``(0, 10000)`` for a cluster node and its bus); ``taken`` ports are skipped too."""
    taken = taken if taken is not None else set()
    for _ in range(1000):
        port = random.randint(*LOW_PORTS)
        wanted = [port + o for o in offsets]
        if any(p in taken or p > 65535 for p in wanted) or not all(map(_bindable, wanted)):
            continue
        taken.update(wanted)
        return port
    raise RuntimeError("no free port below 55536 on loopback")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


class Relay:
    """Forwards one TCP port to another (the replica's replication link to the primary).
    ``freeze()`` stops passing the primary's bytes on (they stay unread in the relay's
    socket and die with it); ``close()`` drops every connection and the listener."""

    def __init__(self, target_port: int, port: int) -> None:
        self.port, self.target_port = port, target_port
        self.frozen, self.paused = threading.Event(), threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server((LOOPBACK, port))
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        """Stop passing the primary's bytes on; returns once the pump has stopped, so every
        write the primary makes from now on is one the replica never gets."""
        self.frozen.set()
        self.paused.wait(10)

    def close(self) -> None:
        for s in [self._listener, *self._sockets]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), 5)
            except OSError:  # the primary is gone: the replica keeps trying, in vain
                downstream.close()
                continue
            self._sockets += [downstream, upstream]
            threading.Thread(target=self._pump, args=(upstream, downstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(downstream, upstream, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_primary: bool) -> None:
        # Short waits for data (select, not a socket timeout, which would also bound the
        # other pump's sends): the primary's side looks at ``frozen`` between reads, so
        # freeze() never races a read already waiting for the next write.
        with contextlib.suppress(OSError, ValueError):  # ValueError: select on a closed one
            while True:
                if from_primary and self.frozen.is_set():
                    self.paused.set()
                    if source.fileno() < 0:
                        return
                    time.sleep(0.05)
                    continue
                if not select.select([source], [], [], 0.05)[0]:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


@dataclass
class SentinelProcess:
    """One ``redis-sentinel`` with its own (rewritable) config file."""

    workdir: Path
    port: int
    primary_port: int
    proc: subprocess.Popen | None = None

    def start(self) -> SentinelProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {self.port}", f"bind {LOOPBACK}", "protected-mode no",
            f"dir {self.workdir}", f"logfile {self.workdir / 'sentinel.log'}",
            f"sentinel monitor {SERVICE} {LOOPBACK} {self.primary_port} 2",
            f"sentinel auth-pass {SERVICE} {PASSWORD}",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            # Long: a Sentinel repoints a replica that replicates from another address (the
            # relay) only after this long, and the tests are over well before.
            f"sentinel failover-timeout {SERVICE} 60000",
            f"sentinel parallel-syncs {SERVICE} 1", ""]))
        binary = shutil.which("redis-sentinel") or "redis-sentinel"
        self.proc = subprocess.Popen([binary, str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.port, self.proc, 15, "redis-sentinel")
        return self

    def stop(self) -> None:
        end_process(self.proc)


@dataclass
class SentinelRedis:
    """Primary + replica (through a relay) + three Sentinels, started by ``start()``."""

    workdir: Path
    taken: set[int] = field(default_factory=set)
    primary: RedisServer | None = None
    replica: RedisServer | None = None
    relay: Relay | None = None
    sentinels: list[SentinelProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"{LOOPBACK}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}?db=0"

    def start(self) -> SentinelRedis:
        port = lambda: free_low_port(taken=self.taken)  # noqa: E731
        self.primary = self._server("primary", port())
        self.replica = self._server("replica", port())
        self.relay = Relay(self.primary.port, port())
        self.replica_client().replicaof(LOOPBACK, self.relay.port)
        wait_until(lambda: self.replica_client().info("replication")
                   .get("master_link_status") == "up", 30, "the replica in sync")
        self.sentinels = [SentinelProcess(self.workdir / f"sentinel-{i}", port(),
                                          self.primary.port).start() for i in range(3)]
        wait_until(self._sentinels_agree, 30, "3 sentinels that know each other and the replica")
        return self

    def _server(self, name: str, port: int) -> RedisServer:
        server = RedisServer(self.workdir / name, port=port).start()
        client = server.client()
        for key in ("masterauth", "requirepass"):  # after start(): its readiness ping has none
            client.config_set(key, PASSWORD)
        client.close()
        return server

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            info = redis.Redis(host=LOOPBACK, port=s.port, decode_responses=True)
            try:
                master = info.sentinel_master(SERVICE)
            except redis.RedisError:
                return False
            finally:
                info.close()
            if (int(master.get("num-other-sentinels", 0)) < 2
                    or int(master.get("num-slaves", 0)) < 1):
                return False
        return True

    def sentinel(self) -> Sentinel:
        return Sentinel([(LOOPBACK, s.port) for s in self.sentinels], socket_timeout=2)

    def client(self, **kwargs) -> redis.Redis:
        """A client of the primary the Sentinels name now (found again on reconnect)."""
        return self.sentinel().master_for(SERVICE, password=PASSWORD, socket_timeout=5, **kwargs)

    def primary_address(self) -> tuple[str, int]:
        return self.sentinel().discover_master(SERVICE)

    def replica_client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host=LOOPBACK, port=self.replica.port, password=PASSWORD,
                           socket_timeout=5, **kwargs)

    def kill_primary(self) -> None:
        """SIGKILL the primary and drop the replication link: the Sentinels fail over."""
        self.primary.kill()
        self.relay.close()

    def wait_promoted(self, timeout: float = 60) -> None:
        """Until the Sentinels name the replica and it answers as a primary."""
        def promoted():
            try:
                return (self.primary_address()[1] == self.replica.port and
                        self.replica_client().info("replication")["role"] == "master")
            except redis.RedisError:
                return False
        wait_until(promoted, timeout, "the replica promoted by the sentinels", interval=0.2)

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        if self.relay is not None:
            self.relay.close()
        for server in (self.primary, self.replica):
            if server is not None:
                server.stop()
