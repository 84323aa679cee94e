"""Opening the asyncio Redis connections of ``recs serve``: the URLs ``store.connection``
understands (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``,
``redis+cluster://``), for ``redis.asyncio``.

Invariants:
- replies stay bytes (factors are raw float32);
- timeouts are short, so a Redis that is away turns into a quick 503, not a hung request;
- a full pool is load, not an outage: a command waits for a free connection (up to
  ``wait`` seconds) before it fails, and :func:`pool_exhausted` tells that failure apart
  from Redis being unreachable;
- a command that finds its pooled connection dead is sent once more on a fresh one, which
  is safe because every command of the asyncio client is a read;
- ``redis+sentinel://`` asks the Sentinels for the primary again on each new connection;
  no message quotes a password (``store.connection.no_primary``).
"""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, SentinelConnectionPool
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff

from core.redis_urls import ClusterTarget
from store.connection import no_primary, parsed, sentinel_settings


def connect_async(url: str, timeout: float = 2.0, connections: int = 64,
                  wait: float = 10.0) -> aioredis.Redis:
    """An asyncio client for ``url``: bytes replies (factors are raw float32), short
    timeouts so that a Redis that is away turns into a quick 503, not a hung request, and a
    pool of ``connections`` that a request waits on (``wait`` seconds at most) when all are
    busy: a full pool is load, not an outage. A command that finds its pooled connection
    dead (a Redis restart, a failover) is sent once more on a fresh one: every command of
    ``store.aclient`` is a read. ``redis+sentinel://`` reads from the primary the Sentinels
    name, asked for again on each new connection (so the retry after a failover reaches the
    new primary).

    ``redis+cluster://`` gives a ``redis.asyncio.RedisCluster`` with the same timeouts and
    one retry (on a fresh slot map) after a connection error. What differs, as RedisCluster
    allows: ``connections`` is the pool of EACH node (not of the whole server), and a pool
    that is full raises at once instead of waiting, so a single command or script call
    (not a pipeline: the operator page's status reads) waits for a free connection here, up
    to ``wait`` seconds, before the request gets 503 ``busy``."""
    settings = dict(
        max_connections=connections, timeout=wait, decode_responses=False,
        socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        retry_on_error=[redis.ConnectionError])
    target = parsed(url)
    if target is None:
        return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(url, **settings))
    if isinstance(target, ClusterTarget):
        return _WaitingCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in target.nodes], wait=wait,
            username=target.username, password=target.password, max_connections=connections,
            decode_responses=False, socket_timeout=timeout, socket_connect_timeout=timeout,
            health_check_interval=30, retry=Retry(NoBackoff(), 1))
    sentinel = _Sentinel(list(target.sentinels),
                         sentinel_kwargs=sentinel_settings(target, timeout))
    return sentinel.master_for(target.service, connection_pool_class=_BlockingSentinelPool,
                               db=target.db, username=target.username,
                               password=target.password, **settings)


class _WaitingCluster(AsyncCluster):
    """A RedisCluster whose commands wait for a free connection to their node (up to
    ``wait`` seconds) instead of failing at once when its pool is full: load, not an
    outage, as with the blocking pool of one Redis."""

    def __init__(self, *args, wait: float = 10.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.wait = wait

    async def execute_command(self, *args, **kwargs):
        deadline = None
        while True:
            try:
                return await super().execute_command(*args, **kwargs)
            except redis.exceptions.MaxConnectionsError:
                now = asyncio.get_running_loop().time()
                deadline = now + self.wait if deadline is None else deadline
                if now >= deadline:
                    raise
                await asyncio.sleep(0.002)


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The Sentinel pool (a new connection asks for the primary) with the blocking pool's
    bounded size and wait: the same load behaviour as a plain URL's pool."""


class _Sentinel(AsyncSentinel):
    async def discover_master(self, service_name: str):
        try:
            return await super().discover_master(service_name)
        except MasterNotFoundError:
            hosts = [(s.connection_pool.connection_kwargs.get("host"),
                      s.connection_pool.connection_kwargs.get("port")) for s in self.sentinels]
            raise MasterNotFoundError(no_primary(service_name, hosts)) from None


def pool_exhausted(exc: BaseException) -> bool:
    """Whether ``exc`` is the pool's "no connection free in time" (every connection busy
    until the deadline), as opposed to Redis being unreachable."""
    return isinstance(exc, redis.exceptions.MaxConnectionsError) or (
        isinstance(exc, redis.ConnectionError) and isinstance(exc.__cause__,
                                                              asyncio.TimeoutError))
