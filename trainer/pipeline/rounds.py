"""``recs train`` from Redis: one round over the languages, or one every ``--every`` seconds.

Each language of a round is retrained with its own tuned settings applied (the language's
settings hash, under the flags and variables given: ``trainer.settings.for_language``) by
``trainer.pipeline.retrain.train_language``. A round asked for one language by name with
nothing to train on is an error; over every language it is a WARNING and the round goes on.

``--every`` repeats with +-10% jitter (so replicas drift apart) and serves the trainer's
metrics (``trainer.pipeline.metrics``); a failed run is logged and retried next round, and
a round that trained nothing (no counts yet) is retried within a minute. The first SIGTERM
or SIGINT lets the language in progress finish (its publish is the unit that must complete)
and starts nothing new; a second one stops at once (the lock is released, and a publish cut
short leaves every list whole and the old model live).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import redis

from core.errors import InputError, RecsError
from core.signals import StopFlag, on_stop_signals
from store.cluster_keys import layout
from store.connection import connect
from store.keys import Keys
from store.quality import read_settings
from store.snapshot import read_languages
from store.train_lock import LockLost
from trainer.pipeline.metrics import TrainMetrics
from trainer.pipeline.retrain import train_language
from trainer.settings import RetrainConfig, for_language

log = logging.getLogger(__name__)

NOTHING_YET_RETRY = 60.0
"""Seconds ``--every`` waits after a round that trained nothing, if shorter than --every."""


def stop_at_once(signum: int) -> None:
    """The second signal: unwinds through the lock's ``finally``, so the lock is freed."""
    raise KeyboardInterrupt


def train_from_redis(redis_url: str, prefix: str, lang: str | None, settings: RetrainConfig,
                     say: Callable[[str], None]) -> int:
    """Retrain and publish ``lang`` (every language when None) once, or every
    ``settings.every`` seconds until a signal; ``say`` gets each language's outcome line.
    Returns the exit code."""
    client, stop = connect(redis_url), StopFlag()
    keys = layout(client, prefix)  # hash-tagged names on a Redis Cluster

    def first(name: str) -> None:
        log.info("%s: stopping after the current run (again to stop now)", name)
        stop.set()

    restore = on_stop_signals(first, stop_at_once)
    try:
        if not settings.every:
            return run_round(client, keys, lang, settings, True, stop, say)[0]
        return repeat(client, keys, lang, settings, stop, say)
    except redis.ConnectionError as exc:
        raise RecsError(f"cannot reach Redis at {redis_url}: {exc}") from None
    finally:
        restore()
        client.close()


def with_tuned(client: redis.Redis, keys: Keys, lang: str,
               settings: RetrainConfig) -> RetrainConfig:
    """``settings`` with the language's tuned settings hash applied (under the options
    given), logged when it changes what is fitted."""
    stored = read_settings(client, keys, lang)
    if not stored:
        return settings
    tuned = for_language(settings, stored, keys.settings(lang))
    if tuned is not settings:
        log.info("%s: tuned settings from %s: %s", lang, keys.settings(lang),
                 tuned.spec.describe())
    return tuned


def run_round(client: redis.Redis, keys: Keys, lang: str | None, settings: RetrainConfig,
              strict: bool, stop: StopFlag, say: Callable[[str], None],
              metrics: TrainMetrics | None = None) -> tuple[int, int]:
    """One pass over the languages; returns (exit code, languages published or skipped for
    another trainer). ``strict`` (a single run): a language asked for by name with nothing
    to train on is an error. ``stop`` set (a signal) ends the pass after the language in
    progress."""
    langs = [lang] if lang else read_languages(client, keys)
    if not langs:
        message = (f"no counts in Redis ({keys.langs} is empty): run `recs consume` or "
                   "`recs backfill` first")
        if strict:
            raise InputError(message)
        log.warning(message)
        return 0, 0
    failed = busy = 0
    for one in langs:
        if stop.is_set():
            log.info("stopping before %s", one)
            break
        try:
            result = train_language(client, keys, one, with_tuned(client, keys, one, settings))
        except InputError as exc:  # e.g. nothing left to train on
            if strict and lang:
                raise
            log.error("%s: %s", one, exc)
            failed += 1
            _record(metrics, one, "failed", {})
            continue
        except LockLost:
            failed += 1
            _record(metrics, one, "failed", {})
            continue
        _record(metrics, one, result.outcome, result.fields)
        if result.outcome == "empty":
            if strict and lang:
                raise InputError(result.message)
            log.warning(result.message)
        else:
            busy += 1
        say(result.message)
    return (1 if failed else 0), busy


def _record(metrics: TrainMetrics | None, lang: str, outcome: str, fields: dict) -> None:
    if metrics is not None:
        metrics.record(lang, outcome, fields, time.time())


def repeat(client: redis.Redis, keys: Keys, lang: str | None, settings: RetrainConfig,
           stop: StopFlag, say: Callable[[str], None]) -> int:
    """Rounds every ``settings.every`` seconds (jittered) until ``stop``."""
    every = float(settings.every)
    metrics = TrainMetrics()
    metrics.serve(settings.metrics_port, settings.metrics_address)
    rng = random.Random()
    runs = 0
    while not stop.is_set():
        started = time.monotonic()
        busy = 0
        try:
            _, busy = run_round(client, keys, lang, settings, False, stop, say, metrics)
        except Exception:  # a long-running service logs and tries again next round
            log.exception("run failed; trying again in about %s s", every)
        runs += 1
        pause = every * rng.uniform(0.9, 1.1)
        if not busy:
            # Nothing trained (no counts yet, Redis away): a fresh deployment should not
            # wait a whole period for its first model.
            pause = min(pause, NOTHING_YET_RETRY)
        pause -= time.monotonic() - started
        if pause > 0:
            stop.wait(pause)
    log.info("stopped", extra={"fields": {"runs": runs}})
    return 0
