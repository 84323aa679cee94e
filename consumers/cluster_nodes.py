"""Calls of the cluster stream writer (consumers/stream_writer.py) made on one node of a
Redis Cluster directly, on a connection to the primary serving a key's slot: redis-py's
cluster pipeline refuses EVALSHA, and WAIT counts the writes of its own connection only.

Invariants:

- An answer is never dropped: :func:`evalsha_per_node` returns every call a node answered
  (a refusal above all), and the first error of the others for the caller to retry them.
- A slot that moves (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) or a node that is gone is transient:
  the slot map is read again (redis-py does so for its own commands, not for a direct
  connection) and the caller retries; NOSCRIPT (a node that failed over or lost its script
  cache) loads the script again first.
- A registration waits (WAIT) until the node's replica has it while a replica is in sync; a
  node with none has no replica that could be promoted without it.
- :func:`cluster_transient` raises a cluster's topology errors as ``redis.ConnectionError``
  (which ``store.connection.transient`` retries); any other ``RedisClusterException`` is a
  bug (a refused command) and raises as it is.
"""

from __future__ import annotations

import logging

import redis

from store.replicas import MOVING, new_slot_map, on_primary

log = logging.getLogger("recs.consume")

WAIT_TRIES = 4
"""WAITs for a registration before writing on without the replica's ack."""

_MOVING = (*MOVING, redis.ConnectionError, redis.TimeoutError)
"""Replies of a node pipeline that mean the slot is moving or the node is gone: transient."""


def evalsha_per_node(client, script, calls: list[tuple[list, list]]
                     ) -> tuple[list[tuple[int, object]], Exception | None]:
    """``script`` with each ``(KEYS, ARGV)`` of ``calls``, one pipeline per node (the node
    of the call's first key). Returns ``[(index in calls, reply)]`` of the calls answered
    and the first error of the others (None: those only met NOSCRIPT, the script is loaded
    again for the next round)."""
    by_node: dict[str, list] = {}
    for i, (keys_, _args) in enumerate(calls):
        node = client.get_node_from_key(keys_[0])
        by_node.setdefault(node.name, [node]).append(i)
    answered, error, reload = [], None, False
    for node, *indices in by_node.values():
        pipe = client.get_redis_connection(node).pipeline(transaction=False)
        for i in indices:
            keys_, args = calls[i]
            pipe.evalsha(script.sha, len(keys_), *keys_, *args)
        try:
            replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            replies = [exc] * len(indices)
        for i, reply in zip(indices, replies, strict=True):
            if isinstance(reply, redis.exceptions.NoScriptError):
                reload = True
            elif isinstance(reply, _MOVING):
                error = error or redis.ConnectionError(f"{type(reply).__name__}: {reply}")
            elif isinstance(reply, Exception):
                error = error or reply
            else:
                answered.append((i, reply))
    if reload:
        script.sha = client.script_load(script.script)
    if error is not None:
        new_slot_map(client)
    return answered, error


def on_node(client, key: str, commands) -> list:
    """``commands(pipe)`` on one connection to the primary of ``key``'s slot, then WAIT
    there for its replica (store/replicas.py); returns the replies of ``commands``. A slot
    that moves or a node that is gone raises ``redis.ConnectionError`` (the caller retries:
    only idempotent commands belong here)."""
    replies, replicated = on_primary(client, key, commands, WAIT_TRIES)
    if not replicated:
        log.warning("a registration is not on the replica yet; writing on",
                    extra={"fields": {"key": key}})
    return replies


def cluster_transient(call):
    """``call()``, a cluster's topology errors raised as ``redis.ConnectionError``:
    ``ClusterError`` ("TTL exhausted", CLUSTERDOWN) and ``SlotNotCoveredError`` (no node
    serves a slot, mid-failover)."""
    try:
        return call()
    except (redis.exceptions.ClusterError, redis.exceptions.SlotNotCoveredError) as exc:
        raise redis.ConnectionError(f"{type(exc).__name__}: {exc}") from exc
