"""One language's retrain as a unit: run under the language's trainer lock, one outcome.

Only one trainer publishes a language at a time (``store.train_lock.TrainLock``: SET NX PX with
a token, renewed while the work runs). A second trainer waits ``lock_wait`` seconds, then
skips the language: the ``locked`` outcome, which is not an error (the other trainer is
publishing the same counts). A lock lost mid-run (the process stalled past its ttl) stops the
run before the switch (``LockLost``), logged and raised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from store.keys import Keys
from store.train_lock import LockLost, TrainLock
from trainer.settings import RetrainConfig

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What happened to one language in one run."""

    lang: str
    outcome: str
    """``published``, ``gated`` (the quality gate kept the live model), ``locked`` (another
    trainer holds the lock) or ``empty`` (nothing to train on after the filters; the old
    model, if any, stays)."""
    fields: dict = field(default_factory=dict)
    message: str = ""


def under_lock(client: redis.Redis, keys: Keys, lang: str, settings: RetrainConfig,
               steps: Callable[[TrainLock], RunResult]) -> RunResult:
    """``steps(lock)`` while holding (and renewing) the language's trainer lock, or the
    ``locked`` outcome when another trainer holds it past ``settings.lock_wait``."""
    lock = TrainLock(client, keys.train_lock(lang), ttl=settings.lock_ttl)
    if not lock.acquire(wait=settings.lock_wait):
        holder = lock.holder()
        log.info("skipped: another trainer is publishing this language",
                 extra={"fields": {"lang": lang, "holder": holder}})
        return RunResult(lang, "locked", {"holder": holder},
                         f"{lang}: skipped, another trainer ({holder}) holds the lock")
    try:
        with lock.kept_alive():
            return steps(lock)
    except LockLost as exc:
        log.error("%s: %s", lang, exc)
        raise
    finally:
        lock.release()
