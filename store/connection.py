"""Opening Redis connections from a URL (``redis://``, ``rediss://``, password included)."""

from __future__ import annotations

import redis


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
