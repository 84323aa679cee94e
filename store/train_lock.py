"""One trainer per language: the trainer's lock in Redis.

:class:`TrainLock` is SET NX PX with a random token, renewed by a background thread while
the holder works, released by compare-and-delete, so a lock is only ever extended or freed by
its holder. :class:`LockFence` is the same lock seen from a process that does not hold it (a
Spark executor writing for the driver that does). A holder that stalled past the ttl and
lost the lock finds out (:meth:`TrainLock.check` raises :class:`LockLost`) before it switches
a model (``store.publish``).

On a Redis Cluster the lock is on the language's item side (``recs:{en}:_train_lock``), the
slot of the model hash: the switch's MULTI WATCHes it on that same node, and both scripts
here name only the lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator

import redis

log = logging.getLogger(__name__)

RENEW_LOCK = """
-- KEYS[1]: the lock. ARGV[1]: our token. ARGV[2]: new expiry in ms.
-- Extends the lock only while it is still ours (it may have expired and been retaken).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LOCK = """
-- KEYS[1]: the lock. ARGV[1]: our token. Deletes it only if it is still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockLost(RuntimeError):
    """The trainer's lock expired or was taken over: stop before switching the model."""


class TrainLock:
    """One trainer per language: ``SET lock token NX PX ttl``, renewed while held.

    Use :meth:`acquire`, then ``with lock.kept_alive():`` around the work, then
    :meth:`release` (also in ``finally``). If a renewal finds the lock gone (the process
    stalled past the ttl and another trainer took over), :attr:`lost` turns true and
    :meth:`check` raises :class:`LockLost`."""

    def __init__(self, client: redis.Redis, key: str, ttl: float = 60.0) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self.held = False
        self.lost = False
        self._renew = client.register_script(RENEW_LOCK)
        self._release = client.register_script(RELEASE_LOCK)

    def acquire(self, wait: float = 0.0, poll: float = 0.5,
                should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Take the lock, waiting up to ``wait`` seconds for its holder; False if not."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                self.held, self.lost = True, False
                return True
            if time.monotonic() >= deadline or should_stop():
                return False
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def holder(self) -> str | None:
        """The token of whoever holds the lock now (for log lines)."""
        value = self.client.get(self.key)
        return value.decode() if value is not None else None

    def renew(self) -> bool:
        ok = bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))
        if not ok and self.held:
            self.lost = True
        return ok

    def check(self) -> None:
        if self.lost or not self.held:
            raise LockLost(f"lost the lock {self.key} (expired or taken over); not publishing")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(redis.RedisError):
                self._release(keys=[self.key], args=[self.token])
        self.held = False

    @contextlib.contextmanager
    def kept_alive(self) -> Iterator[TrainLock]:
        """Renew every ttl/3 from a background thread for the duration of the block."""
        stop = threading.Event()

        def renew_loop() -> None:
            while not stop.wait(self.ttl_ms / 3000):
                try:
                    if not self.renew():
                        log.error("trainer lock lost", extra={"fields": {"key": self.key}})
                        return
                except redis.RedisError as exc:  # try again next tick; ttl covers two misses
                    log.warning("could not renew the trainer lock: %s", exc)

        thread = threading.Thread(target=renew_loop, name="train-lock", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()


class LockFence:
    """A trainer lock seen from a process that does not hold it (a Spark executor writing
    lists for the driver that does): :meth:`check` asks Redis whether the lock still holds
    the holder's token, so writes stop once another trainer has taken over."""

    def __init__(self, client: redis.Redis, key: str, token: str) -> None:
        self.client, self.key, self.token = client, key, token

    def check(self) -> None:
        if self.client.get(self.key) != self.token.encode():
            raise LockLost(f"lost the lock {self.key} (expired or taken over); not publishing")
