"""``recs update``: fold users with new views into the current model between retrains.

A learner who just opened three Spanish vocabulary resources should see Spanish in their
recommendations now, not after the next retrain. The consumer queues every (language, user)
with new views in ``dirty(lang)``; this loop takes them in leased batches
(store/updates.py), reads their counts, solves their factors against the published item
factors (trainer/foldin.py: exactly ``implicit``'s ``recalculate_user``), and writes factors
and recommendations with a script that refuses if the model version changed meanwhile.

Several updaters may run at once (the leases split the work); one that dies mid-batch, even
by SIGKILL, only delays its users until the lease expires. Item factors are cached per model
version and reloaded when the trainer publishes a new one, so one batch is always solved and
scored against one model. Users whose views are all on resources the model does not know
(new since the last retrain) get no factors and no recommendations until a retrain covers
those resources: apps fall back to their own popular list, as for any user without recs.

First SIGTERM/SIGINT: finish the batch in hand, exit 0. Second: exit at once (its users'
leases expire, as after a crash).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain

import numpy as np
import redis
import scipy.sparse as sp

from recs.errors import InputError, RecsError
from recs.signals import StopFlag, on_stop_signals
from store.connection import connect, transient
from store.keys import Keys
from store.snapshot import read_languages
from store.updates import (
    BatchWrite,
    Claim,
    UpdateQueue,
    model_version,
    read_published_items,
    read_views,
)
from trainer.foldin import FoldIn

log = logging.getLogger("recs.updater")


@dataclass(frozen=True)
class UpdaterConfig:
    """Settings of one ``recs update`` process (flags / ``RECS_*`` environment)."""

    redis_url: str = "redis://localhost:6379/0"
    """Where the counts, the queue and the published model live."""
    prefix: str = "recs"
    """Key prefix (store/keys.py)."""
    langs: tuple[str, ...] = ()
    """Languages to update; empty means every language in ``recs:langs``."""
    batch_size: int = 500
    """Users claimed, solved and written together; bigger batches amortise the round trips,
    smaller ones cut the latency of a single view."""
    poll_interval: float = 0.02
    """Seconds to sleep when no language has pending users (the latency floor when idle)."""
    top_n: int = 20
    """Recommendations kept per user (N of the contract)."""
    lease_seconds: float = 30.0
    """How long a claim holds a user; must exceed a batch's time by far. It is how long the
    users of an updater that died mid-batch wait before another updater takes them."""
    metrics_port: int = 9101
    """Prometheus endpoint port; 0 turns it off."""
    langs_refresh_seconds: float = 5.0
    """How often ``recs:langs`` is re-read to find languages that appeared."""
    progress_log_seconds: float = 30.0
    """How often a progress line (users updated, pending backlog) is logged at INFO."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError("--batch-size must be at least 1")
        if self.top_n < 1:
            raise InputError("--top-n must be at least 1")
        if not self.poll_interval >= 0:
            raise InputError("--poll-interval must be 0 or more seconds")
        if not self.lease_seconds > 0:
            raise InputError("--lease-seconds must be positive")
        if not 0 <= self.metrics_port <= 65535:
            raise InputError("--metrics-port must be 0 (off) or a TCP port")

    @classmethod
    def from_args(cls, args) -> UpdaterConfig:
        return cls(
            redis_url=args.redis_url, prefix=args.prefix, langs=tuple(args.lang or ()),
            batch_size=args.batch_size, poll_interval=args.poll_interval, top_n=args.top_n,
            lease_seconds=args.lease_seconds, metrics_port=args.metrics_port,
        )


class UpdaterMetrics:
    """Prometheus metrics of one updater, in their own registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.users = Counter(
            "recs_update_users", "Users whose factors and recs were written, by outcome "
            "(updated; no_factors: views only on resources the model does not know)",
            ["lang", "outcome"], registry=self.registry)
        self.skipped = Counter(
            "recs_update_skipped_users", "Claimed users not written, by reason (stale_model: "
            "a new model was published during the solve; lease_lost: another updater took "
            "them over)", ["lang", "reason"], registry=self.registry)
        self.batch_seconds = Histogram(
            "recs_update_batch_seconds", "Claim to commit time of one batch", ["lang"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.pending = Gauge(
            "recs_update_pending_users", "Users waiting for an update (dirty backlog)",
            ["lang"], registry=self.registry)
        self.model_switches = Counter(
            "recs_update_model_switches", "Times a newly published model version was loaded",
            ["lang"], registry=self.registry)
        self.model_items = Gauge(
            "recs_update_model_items", "Resources in the model version in use", ["lang"],
            registry=self.registry)

    def serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        start_http_server(port, registry=self.registry)


@dataclass(frozen=True)
class Prepared:
    """A claimed and solved batch, ready to be written."""

    claim: Claim
    version: str
    """The model version ``batch`` was solved against."""
    batch: BatchWrite
    no_factors: int
    """Users in the batch with no known views."""
    started: float
    """perf_counter() when the claim was granted."""


class Updater:
    """The update loop over one Redis; :meth:`run_once` is one batch per language."""

    def __init__(self, client: redis.Redis, config: UpdaterConfig,
                 metrics: UpdaterMetrics | None = None) -> None:
        self.client = client
        self.config = config
        self.keys = Keys(config.prefix)
        self.queue = UpdateQueue(client, self.keys)
        self.metrics = metrics or UpdaterMetrics()
        self._models: dict[str, FoldIn] = {}
        self._bad_versions: set[tuple[str, str]] = set()
        self._langs: list[str] = list(config.langs)
        self._langs_read_at = -float("inf")
        self._pending_read_at = -float("inf")
        self.updated = 0
        """Users written since start (all languages)."""

    # -- models ------------------------------------------------------------------------

    def model(self, lang: str) -> FoldIn | None:
        """The item side of ``lang``'s published model, reloaded when its version changed;
        None when nothing (usable) is published."""
        version = model_version(self.client, self.keys, lang)
        cached = self._models.get(lang)
        if version is None:
            return None
        if cached is not None and cached.version == version:
            return cached
        if (lang, version) in self._bad_versions:
            return None
        try:
            published = read_published_items(self.client, self.keys, lang)
            if published is None:
                return None
            meta = published.meta
            model = FoldIn(
                item_ids=published.item_ids, item_factors=published.item_factors,
                regularization=float(meta["regularization"]), alpha=float(meta["alpha"]),
                scaling=meta["scaling"], version=published.version,
                item_totals=published.item_totals, engine=meta.get("engine", "implicit"),
            )
        except (KeyError, ValueError) as exc:
            self._bad_versions.add((lang, version))
            log.error("unusable published model; users stay pending until the next publish",
                      extra={"fields": {"lang": lang, "version": version, "error": str(exc)}})
            return None
        self._models[lang] = model
        self.metrics.model_switches.labels(lang).inc()
        self.metrics.model_items.labels(lang).set(model.items)
        log.info("model loaded", extra={"fields": {
            "lang": lang, "version": model.version, "items": model.items,
            "factors": model.factors, "previous": cached.version if cached else None}})
        return model

    # -- one batch -----------------------------------------------------------------------

    def update_batch(self, lang: str) -> int:
        """Claim up to ``batch_size`` pending users of ``lang``, solve, write; returns the
        users claimed (0: nothing to do)."""
        prepared = self.prepare(lang)
        if prepared is None:
            return 0
        self.commit(prepared)
        return len(prepared.claim.users)

    def prepare(self, lang: str) -> Prepared | None:
        """Claim and solve a batch of ``lang`` (None: nothing pending or no model)."""
        model = self.model(lang)
        if model is None:
            return None
        claim = self.queue.claim(lang, self.config.batch_size,
                                 int(self.config.lease_seconds * 1000))
        if not claim.users:
            return None
        started = time.perf_counter()
        try:
            batch, no_factors = self._solve(model, claim)
        except BaseException:
            self._release(claim)
            raise
        return Prepared(claim, model.version, batch, no_factors, started)

    def commit(self, p: Prepared) -> None:
        """Write a prepared batch (refused whole if the model changed since), account for it."""
        lang, users = p.claim.lang, len(p.claim.users)
        try:
            result = self.queue.commit(p.claim, p.version, p.batch)
        except BaseException:
            self._release(p.claim)
            raise
        elapsed = time.perf_counter() - p.started
        m = self.metrics
        if result.stale:
            # The next prepare() sees the new version and loads it; these users stay pending.
            m.skipped.labels(lang, "stale_model").inc(users)
            log.info("model changed during the batch; users stay pending for the new model",
                     extra={"fields": {"lang": lang, "users": users, "solved_with": p.version}})
            return
        m.batch_seconds.labels(lang).observe(elapsed)
        m.users.labels(lang, "no_factors").inc(min(p.no_factors, result.written))
        m.users.labels(lang, "updated").inc(max(result.written - p.no_factors, 0))
        if result.lost:
            m.skipped.labels(lang, "lease_lost").inc(result.lost)
            log.warning("lease lost for some users (batch slower than --lease-seconds?)",
                        extra={"fields": {"lang": lang, "users": result.lost,
                                          "batch_seconds": round(elapsed, 3)}})
        self.updated += result.written
        log.debug("batch written", extra={"fields": {
            "lang": lang, "users": users, "written": result.written,
            "still_pending": result.pending, "seconds": round(elapsed, 4),
            "version": p.version}})

    def _release(self, claim: Claim) -> None:
        # Whatever stopped this batch, let others take its users now rather than at expiry.
        with contextlib.suppress(redis.RedisError):
            self.queue.release(claim)

    def _solve(self, model: FoldIn, claim: Claim) -> tuple[BatchWrite, int]:
        raw = read_views(self.client, self.keys, claim.lang, claim.users)
        views = _views_matrix(model, raw)
        factors = model.solve(views)
        members, scores = model.recommend(factors, views, self.config.top_n)
        known = np.diff(views.indptr) > 0
        return BatchWrite(factors, known, members, scores), int((~known).sum())

    # -- the loop ------------------------------------------------------------------------

    def languages(self) -> list[str]:
        if self.config.langs:
            return list(self.config.langs)
        now = time.monotonic()
        if now - self._langs_read_at >= self.config.langs_refresh_seconds:
            self._langs = read_languages(self.client, self.keys)
            self._langs_read_at = now
        return self._langs

    def run_once(self) -> int:
        """One batch for every language; returns the users claimed (0: nothing to do)."""
        claimed = 0
        for lang in self.languages():
            claimed += self.update_batch(lang)
        return claimed

    def refresh_pending(self, force: bool = False) -> dict[str, int]:
        """Backlog per language into the gauge, at most once a second unless forced."""
        now = time.monotonic()
        if not force and now - self._pending_read_at < 1.0:
            return {}
        self._pending_read_at = now
        langs = self.languages()
        pipe = self.client.pipeline(transaction=False)
        for lang in langs:
            self.queue.pending(lang, pipeline=pipe)
        counts = dict(zip(langs, (int(n) for n in pipe.execute()), strict=True))
        for lang, n in counts.items():
            self.metrics.pending.labels(lang).set(n)
        return counts

    def run(self, stop: StopFlag | threading.Event) -> None:
        """Update until ``stop`` is set; batches in hand are always finished first.

        A commit runs in a helper thread while the next batch is claimed and solved: Redis
        executes the write script (about 40% of a batch's time) while numpy solves, so one
        process clears a backlog faster. One commit is in flight at most."""
        backoff = 0.0
        last_log, last_count = time.monotonic(), 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") as pool:
            in_flight: Future | None = None
            while not stop.is_set():
                try:
                    claimed = 0
                    for lang in self.languages():
                        prepared = self.prepare(lang)
                        if in_flight is not None:
                            in_flight, done = None, in_flight
                            try:
                                done.result()
                            except BaseException:
                                if prepared is not None:
                                    self._release(prepared.claim)
                                raise
                        if prepared is not None:
                            claimed += len(prepared.claim.users)
                            in_flight = pool.submit(self.commit, prepared)
                    self.refresh_pending()
                    backoff = 0.0
                except redis.RedisError as exc:
                    if not transient(exc):
                        raise
                    if in_flight is not None:
                        with contextlib.suppress(redis.RedisError):
                            in_flight.result()
                        in_flight = None
                    backoff = min(max(backoff * 2, 0.2), 5.0)
                    log.warning("redis unavailable; retrying", extra={"fields": {
                        "error": str(exc), "retry_in": backoff}})
                    stop.wait(backoff)
                    continue
                now = time.monotonic()
                if now - last_log >= self.config.progress_log_seconds:
                    pending = self.refresh_pending(force=True)
                    if self.updated > last_count or any(pending.values()):
                        log.info("progress", extra={"fields": {
                            "updated": self.updated - last_count,
                            "per_second": round((self.updated - last_count) / (now - last_log),
                                                1),
                            "pending": pending}})
                    last_log, last_count = now, self.updated
                if claimed == 0:
                    stop.wait(self.config.poll_interval)
            if in_flight is not None:
                in_flight.result()

    def drain(self, timeout: float = 30.0) -> int:
        """Update until no language has pending users that can be claimed (for tests and
        scripts); returns users written. Raises TimeoutError past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        before = self.updated
        while self.run_once():
            if time.monotonic() > deadline:
                raise TimeoutError(f"users still pending after {timeout}s")
        return self.updated - before


def _views_matrix(model: FoldIn, raw: list[dict[bytes, bytes]]) -> sp.csr_matrix:
    lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    try:
        ids = np.array(list(chain.from_iterable(raw)), dtype=np.bytes_).astype(np.int64)
        counts = np.array(list(chain.from_iterable(h.values() for h in raw)),
                          dtype=np.bytes_).astype(np.float32)
    except ValueError:
        # Only a hand-edited hash gets here: drop the fields that are not numbers.
        return model.views_matrix([_parse_slowly(h) for h in raw])
    return model.views_from_arrays(lengths, ids, counts)


def _parse_slowly(h: dict[bytes, bytes]) -> dict[int, float]:
    out = {}
    for k, v in h.items():
        try:
            out[int(k)] = float(v)
        except ValueError:
            log.warning("ignoring a views field that is not a number",
                        extra={"fields": {"field": k[:40], "value": v[:40]}})
    return out


def cmd_update(args) -> int:
    config = UpdaterConfig.from_args(args)
    client = connect(config.redis_url)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise RecsError(f"cannot reach Redis ({type(exc).__name__}: {exc})") from None
    metrics = UpdaterMetrics()
    if config.metrics_port:
        try:
            metrics.serve(config.metrics_port)
        except OSError as exc:
            raise InputError(f"--metrics-port {config.metrics_port}: {exc}") from None
    stop = StopFlag()

    def first(name: str) -> None:
        # The leases of a batch cut short by a second signal expire: nobody's update is lost.
        log.info("stopping after the current batch", extra={"fields": {"signal": name}})
        stop.set()

    on_stop_signals(first)
    updater = Updater(client, config, metrics)
    log.info("updater started", extra={"fields": {
        "langs": ",".join(config.langs) or "all", "batch_size": config.batch_size,
        "top_n": config.top_n, "lease_seconds": config.lease_seconds,
        "metrics_port": config.metrics_port}})
    updater.run(stop)
    log.info("updater stopped", extra={"fields": {"updated": updater.updated}})
    return 0
