"""Opening Redis connections from a URL (``redis://``, ``rediss://``, password included)."""

from __future__ import annotations

import time

import redis

from core.errors import RecsError

LOADING_WAIT = 60.0
"""Seconds a command waits at start-up for a Redis that is loading its data (a restart with
a large AOF or RDB): it is coming up, unlike one that refuses connections."""


def connect(url: str, *, decode_responses: bool = False, timeout: float = 10.0) -> redis.Redis:
    """A client for ``url``. Responses stay bytes unless asked: ids and blobs are parsed by
    the callers that know their types, and raw float32 factors must not be decoded."""
    return redis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
    )


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
