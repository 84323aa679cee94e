"""The one retry policy of the consumers (views, control, updater, backfill): waits that
start at ``initial`` seconds and double up to ``cap``, and a call retried while Redis is
unreachable (``store.connection.transient``); any other error is raised at once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TypeVar

import redis

from store.connection import transient

T = TypeVar("T")

Wait = Callable[[float], None]
"""How a loop spends the time between attempts (``wait(seconds)``); it may raise to give up."""


def backoff(initial: float, cap: float) -> Iterator[float]:
    """The waits between retries: ``initial``, doubling up to ``cap``, for ever."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, cap)


def retry_redis(call: Callable[[], T], wait: Wait, waits: Iterator[float],
                log: logging.Logger, message: str = "redis unavailable, retrying",
                on_retry: Callable[[], None] | None = None) -> T:
    """``call()``, retried after ``wait(next(waits))`` while Redis is unavailable (one
    WARNING per attempt, one INFO once it answers again); once ``waits`` runs out the last
    error is raised (an endless ``backoff`` retries for ever). ``wait`` may raise to give
    up. A timeout or a dropped connection leaves a script's outcome unknown: only calls
    that are safe to resend (guarded or idempotent) belong here."""
    attempt = 0
    while True:
        try:
            result = call()
        except redis.RedisError as exc:
            if not transient(exc):
                raise
            delay = next(waits, None)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry()
            attempt += 1
            log.warning(message, extra={"fields": {
                "attempt": attempt, "wait_s": round(delay, 3), "error": str(exc)}})
            wait(delay)
            continue
        if attempt:
            log.info("redis reachable again", extra={"fields": {"attempts": attempt}})
        return result
