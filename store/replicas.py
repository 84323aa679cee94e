"""Writes that must be on a primary's replica before the caller goes on (Redis Cluster).

Invariants:

- WAIT counts the writes of its own connection, so the commands and the WAIT go over one
  connection to the primary serving the key's slot, in one pipeline.
- A node with no replica in sync has none that could be promoted in its place: there is
  nothing to wait for, and :func:`on_primary` says the writes are safe.
- A slot that moves (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) or a node that is gone raises
  ``redis.ConnectionError`` after the slot map is read again (redis-py does so for its own
  commands; a direct connection to a node is not one of them): the caller retries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import redis

REPLICA_WAIT_MS = 500
"""How long one WAIT blocks for the replica's acknowledgement."""

MOVING = (redis.exceptions.AskError, redis.exceptions.TryAgainError,
          redis.exceptions.ClusterDownError)
"""Replies that mean the slot is moving (MOVED is an AskError)."""


def on_primary(client, key: str, commands: Callable, tries: int) -> tuple[list, bool]:
    """``commands(pipe)`` on one connection to the primary of ``key``'s slot, then WAIT
    there, up to ``tries`` more times while the replica is in sync but has not acknowledged.
    Returns the commands' replies and whether they are on the replica (or no replica is
    in sync); False: the replica is lagging and the caller decides."""
    conn = client.get_redis_connection(client.get_node_from_key(key))
    pipe = conn.pipeline(transaction=False)
    commands(pipe)
    pipe.execute_command("WAIT", 1, REPLICA_WAIT_MS)
    try:
        replies = pipe.execute()
    except (redis.ConnectionError, redis.TimeoutError):
        new_slot_map(client)  # the node may be gone: its replica serves the slot now
        raise
    except MOVING as exc:
        new_slot_map(client)
        raise redis.ConnectionError(f"slot moving: {type(exc).__name__}: {exc}") from exc
    acked = replies[-1]
    for _ in range(tries):
        if acked or not replica_in_sync(conn):
            return replies[:-1], True
        acked = conn.execute_command("WAIT", 1, REPLICA_WAIT_MS)
    return replies[:-1], bool(acked)


def replica_in_sync(conn) -> bool:
    """Whether a replica of ``conn``'s node is connected and past its initial sync."""
    info = conn.info("replication")
    return any(isinstance(v, dict) and v.get("state") == "online"
               for k, v in info.items() if k.startswith("slave"))


def new_slot_map(client) -> None:
    """Read the cluster's slot map again."""
    with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
        client.nodes_manager.initialize()
