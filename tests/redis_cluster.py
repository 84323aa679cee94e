"""A Redis Cluster on loopback for tests: 3 primaries and 3 replicas of Debian's redis-server
(``--cluster-enabled yes``), formed by ``redis-cli --cluster create ... --cluster-replicas 1``.

Every node's port is free and below 55536 with its bus port (port + 10000) free too, chosen
at run time. ``start()`` returns once ``CLUSTER INFO`` says ``cluster_state:ok`` on every
node and each primary has its replica; ``stop()`` ends them all. tests/conftest.py gives it
as ``cluster`` (one per session, flushed per test) and ``fresh_cluster`` (a test's own, for
tests that kill nodes or move slots).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis

from recs.localstack import RedisServer
from recs.localstack_process import LOOPBACK, wait_until
from tests.sentinel import free_low_port

BUS_OFFSET = 10000


@dataclass
class RedisCluster:
    """Six cluster-enabled redis-servers in ``workdir``, formed into one cluster."""

    workdir: Path
    size: int = 6
    nodes: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{LOOPBACK}:{n.port}" for n in self.nodes[:3])

    def start(self) -> RedisCluster:
        taken: set[int] = set()
        for i in range(self.size):
            port = free_low_port((0, BUS_OFFSET), taken)
            self.nodes.append(RedisServer(self.workdir / f"node-{i}", port=port, extra_args=(
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000")).start())
        cli = shutil.which("redis-cli") or "redis-cli"
        done = subprocess.run(
            [cli, "--cluster", "create", *(f"{LOOPBACK}:{n.port}" for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]}"
                               f"{done.stderr[-2000:]}")
        wait_until(self.formed, 60, "cluster_state:ok on every node", interval=0.2)
        return self

    def formed(self) -> bool:
        """Every node says ``cluster_state:ok`` and knows 3 primaries with a replica each."""
        for node in self.nodes:
            client = node.client(decode_responses=True)
            try:
                if client.cluster("info").get("cluster_state") != "ok":
                    return False
                primaries = [n for n in client.cluster("nodes").values()
                             if "master" in n["flags"]]
                replicas = [n for n in client.cluster("nodes").values()
                            if "slave" in n["flags"]]
            except redis.RedisError:
                return False
            finally:
                client.close()
            if len(primaries) != self.size // 2 or len(replicas) != self.size // 2:
                return False
        return True

    def describe(self) -> str:
        """Each node's port, ``cluster_state`` and view of the nodes' flags (for a failure)."""
        out = []
        for node in self.nodes:
            client = node.client(decode_responses=True)
            try:
                state = client.cluster("info").get("cluster_state")
                flags = sorted(f"{addr.split('@')[0].rsplit(':', 1)[1]}={v['flags']}"
                               for addr, v in client.cluster("nodes").items())
                out.append(f"{node.port}: {state} {' '.join(flags)}")
            except redis.RedisError as exc:
                out.append(f"{node.port}: {type(exc).__name__}")
            finally:
                client.close()
        return "; ".join(out)

    def primaries(self) -> list[RedisServer]:
        """The nodes that are primaries now (a failover changes which)."""
        out = []
        for node in self.nodes:
            client = node.client(decode_responses=True)
            try:
                if client.info("replication").get("role") == "master":
                    out.append(node)
            except redis.RedisError:
                pass  # a killed node
            finally:
                client.close()
        return out

    def node(self, name: str) -> RedisServer:
        """The node redis-py names ``name`` ("host:port")."""
        return next(n for n in self.nodes if f"{LOOPBACK}:{n.port}" == name)

    def replica_of(self, primary: RedisServer) -> RedisServer:
        """The node replicating ``primary``, once it is past its initial sync."""
        client = primary.client(decode_responses=True)
        try:
            link = wait_until(lambda: (r := client.info("replication").get("slave0"))
                              and r["state"] == "online" and r, 30, "the replica in sync")
        finally:
            client.close()
        return next(n for n in self.nodes if n.port == int(link["port"]))

    def primary_ids(self) -> dict[int, str]:
        """port -> node id of every primary now."""
        client = self.primaries()[0].client(decode_responses=True)
        try:
            nodes = client.cluster("nodes")
        finally:
            client.close()
        return {int(addr.split("@")[0].rsplit(":", 1)[1]): v["node_id"]
                for addr, v in nodes.items() if "master" in v["flags"]
                and "fail" not in v["flags"]}

    def reshard(self, source: int, target: int, slots: int) -> None:
        """Move ``slots`` hash slots, their keys with them, from the primary on port
        ``source`` to the one on ``target`` (``redis-cli --cluster reshard``)."""
        ids = self.primary_ids()
        cli = shutil.which("redis-cli") or "redis-cli"
        done = subprocess.run(
            [cli, "--cluster", "reshard", f"{LOOPBACK}:{source}", "--cluster-from", ids[source],
             "--cluster-to", ids[target], "--cluster-slots", str(slots), "--cluster-yes"],
            capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster reshard failed: {done.stdout[-2000:]}"
                               f"{done.stderr[-2000:]}")

    def flush(self) -> None:
        """FLUSHALL on every primary (replicas follow), and the scripts' cache."""
        for node in self.primaries():
            client = node.client()
            try:
                client.flushall()
                client.script_flush()
            finally:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
