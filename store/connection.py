"""Opening Redis connections from a URL: ``redis://``, ``rediss://``, ``unix://`` (redis-py's
own), and ``redis+sentinel://`` (core/redis_urls.py): the primary a set of Sentinels
manages, asked for again on every new connection, so a client rides a failover.

Invariants: every command reaches Redis through ``connect`` (or store/aconnect.py's
``connect_async``), so every command understands the same URLs; ``redis+cluster://`` gives
a ``redis.cluster.RedisCluster`` (name keys with ``store.cluster_keys.layout``, docs/CLUSTER.md);
no message quotes a password.
"""

from __future__ import annotations

import time

import redis
import redis.sentinel

from core.errors import InputError, RecsError
from core.redis_urls import ClusterTarget, SentinelTarget, special

LOADING_WAIT = 60.0
"""Seconds a command waits at start-up for a Redis that is loading its data (a restart with
a large AOF or RDB): it is coming up, unlike one that refuses connections."""


def connect(url: str, *, decode_responses: bool = False, timeout: float = 10.0) -> redis.Redis:
    """A client for ``url``. Responses stay bytes unless asked: ids and blobs are parsed by
    the callers that know their types, and raw float32 factors must not be decoded."""
    settings = {"decode_responses": decode_responses, "socket_timeout": timeout,
                "socket_connect_timeout": timeout, "health_check_interval": 30}
    target = parsed(url)
    if target is None:
        return redis.Redis.from_url(url, **settings)
    if isinstance(target, ClusterTarget):
        return connect_cluster(url, timeout, decode_responses=decode_responses)
    sentinel = _Sentinel(list(target.sentinels),
                         sentinel_kwargs=sentinel_settings(target, timeout))
    return sentinel.master_for(target.service, db=target.db, username=target.username,
                               password=target.password, **settings)


def parsed(url: str) -> SentinelTarget | ClusterTarget | None:
    """The target of a ``redis+sentinel://`` or ``redis+cluster://`` URL, None for redis-py's
    own URLs; ``InputError`` for a malformed one."""
    try:
        return special(url)
    except ValueError as exc:
        raise InputError(f"not a valid Redis URL ({exc})") from None


def no_primary(service: str, sentinels) -> str:
    """What ``MasterNotFoundError`` says instead of redis-py's repr of every client."""
    where = ",".join(f"{h}:{p}" for h, p in sentinels)
    return (f"no Sentinel of {where} names a primary for {service!r} (unreachable, not "
            "monitoring that name, or the primary is down and not yet replaced)")


class _Sentinel(redis.sentinel.Sentinel):
    def discover_master(self, service_name: str):
        try:
            return super().discover_master(service_name)
        except redis.sentinel.MasterNotFoundError:
            hosts = [(s.connection_pool.connection_kwargs.get("host"),
                      s.connection_pool.connection_kwargs.get("port")) for s in self.sentinels]
            raise redis.sentinel.MasterNotFoundError(no_primary(service_name, hosts)) from None


def sentinel_settings(target: SentinelTarget, timeout: float) -> dict:
    """How the Sentinels themselves are reached: the same timeouts, and the Redis servers'
    credentials only when the URL says ``sentinel_auth=yes``."""
    out: dict = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if target.sentinel_auth:
        out.update(username=target.username, password=target.password)
    return out


def connect_cluster(url: str, timeout: float = 10.0, *, decode_responses: bool = False):
    """A ``redis.cluster.RedisCluster`` for a ``redis+cluster://`` URL: any node given
    bootstraps the slot map; MOVED and ASK are followed by redis-py, a failover's
    ``CLUSTERDOWN``/``TRYAGAIN`` are :func:`transient`."""
    from redis.cluster import ClusterNode, RedisCluster

    target = special(url)
    if not isinstance(target, ClusterTarget):
        raise InputError("not a redis+cluster:// URL")
    return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in target.nodes],
                        username=target.username, password=target.password,
                        socket_timeout=timeout, socket_connect_timeout=timeout,
                        decode_responses=decode_responses)


def connect_checked(url: str, loading_wait: float = LOADING_WAIT) -> redis.Redis:
    """A client for ``url`` that has answered a PING; one ``RecsError`` line when Redis cannot
    be reached or refuses the credentials. A Redis still loading its data is waited for, up
    to ``loading_wait`` seconds: a service restarted with its Redis must not exit for that."""
    client = connect(url)
    deadline = time.monotonic() + loading_wait
    while True:
        try:
            client.ping()
            return client
        except redis.exceptions.BusyLoadingError as exc:
            if time.monotonic() > deadline:
                raise RecsError(f"Redis is still loading its data after {loading_wait:g}s "
                                f"({exc})") from None
            time.sleep(0.1)
        except redis.RedisError as exc:
            raise RecsError(f"cannot reach Redis ({type(exc).__name__}: {exc})") from None


# Error replies that pass once the server recovers (a failover, memory freed, a slow script,
# a replica catching up): worth retrying, unlike a bug such as WRONGTYPE or NOSCRIPT.
_TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError)
_TRANSIENT_REPLIES = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN",
                      "READONLY", "NOREPLICAS")


def transient(exc: redis.RedisError) -> bool:
    """Whether ``exc`` means "Redis is away or not ready", so the call may simply be retried."""
    return isinstance(exc, _TRANSIENT_ERRORS) or (
        isinstance(exc, redis.ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES))


# How Redis words a command the user may not run: NOPERM outside scripts, and inside a script
# (Redis 7.0) "The user executing the script can't run this command or subcommand".
_PERMISSION_WORDS = ("NOPERM", "can't run this command")


def permission_denied(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a command (or key) to this user's ACL."""
    return isinstance(exc, redis.exceptions.NoPermissionError) or (
        isinstance(exc, redis.RedisError) and any(w in str(exc) for w in _PERMISSION_WORDS))
