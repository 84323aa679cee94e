"""``recs update``: fold users with new views into the current model between retrains.

A learner who just opened three Spanish vocabulary resources should see Spanish in their
recommendations now, not after the next retrain. The consumer queues every (language, user)
with new views in ``dirty(lang)``; this loop takes them in leased batches
(store/updates.py), reads their counts, folds them into the published model (the model
family's fold-in, ``trainer.models``: for ALS exactly ``implicit``'s ``recalculate_user``),
and writes factors and recommendations with a script that refuses if the model version
changed meanwhile.

Several updaters may run at once (the leases split the work); one that dies mid-batch, even
by SIGKILL, only delays its users until the lease expires; a batch cut short by an error
releases its users at once. Solving a batch against one model (cached per version) is
consumers/fold_in.py's; this loop claims, splits a claim by experiment arm
(consumers/arms.py) and commits, one commit in flight while the next batch is solved.

On a Redis Cluster (docs/CLUSTER.md) users are queued per slot group: each batch is claimed
from one group, round-robin over the groups whose ``dirty`` is non-empty (so no group
starves), solved with the item side's model (read from the language's own slot) and
committed in that group's slot, against the group's copy of the model version and of the
take-downs. The trending refresh is item side only. On one Redis there is one group.

First SIGTERM/SIGINT: finish the batch in hand, exit 0. Second: exit at once (its users'
leases expire, as after a crash).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import redis

from consumers.arms import split_claim
from consumers.config import UpdaterConfig
from consumers.fold_in import Prepared, PublishedModels, solve
from consumers.metrics import UpdaterMetrics
from consumers.retry import backoff
from core.signals import StopFlag
from store.cluster_keys import layout
from store.connection import transient
from store.experiments import running as running_experiment
from store.keys import Keys
from store.snapshot import read_languages
from store.trending import Trending
from store.updates import (
    Claim,
    UpdateQueue,
)
from trainer.models.base import FoldIn

log = logging.getLogger("recs.updater")


@dataclass
class _Progress:
    """When the last progress line was logged, and ``Updater.updated`` then."""

    at: float
    updated: int


class Updater:
    """The update loop over one Redis; :meth:`run_once` is one batch per language."""

    def __init__(self, client: redis.Redis, config: UpdaterConfig,
                 metrics: UpdaterMetrics | None = None) -> None:
        self.client = client
        self.config = config
        self.keys: Keys = layout(client, config.prefix)
        self.queue = UpdateQueue(client, self.keys)
        self.trending = Trending(client, self.keys, config.trending)
        self.metrics = metrics or UpdaterMetrics()
        self.models = PublishedModels(client, self.keys, self.metrics)
        self._arm_queues: dict[str, UpdateQueue] = {}
        self._langs: list[str] = list(config.langs)
        self._langs_read_at = -float("inf")
        self._pending_read_at = -float("inf")
        self._todo: dict[str, list[Keys]] = {}
        """Per language, the slot groups still to visit in this round-robin pass."""
        self.updated = 0
        """Users written since start (all languages)."""
        self._in_flight: Future | None = None  # the commit running in run()'s helper thread

    # -- one batch -----------------------------------------------------------------------

    def update_batch(self, lang: str) -> int:
        """Claim up to ``batch_size`` pending users of ``lang``, solve, write; returns the
        users claimed (0: nothing to do)."""
        prepared = self.prepare(lang)
        if prepared is None:
            return 0
        self.commit(prepared)
        return prepared.users()

    def prepare(self, lang: str) -> Prepared | None:
        """Claim and solve a batch of ``lang`` (None: nothing pending or no model)."""
        model = self.models.get(lang)
        if model is None:
            return None
        claim = self._claim(lang)
        if claim is None:
            return None
        started = time.perf_counter()
        try:
            parts = []
            for part_model, queue, part in self._by_arm(lang, model, claim):
                batch, no_factors = solve(self.client, self.keys, part_model, part,
                                          self.config.top_n, self.metrics)
                parts.append(Prepared(part, part_model.version, batch, no_factors, started,
                                      queue))
        except BaseException:
            self._release(claim)
            raise
        return replace(parts[0], more=tuple(parts[1:]))

    def _claim(self, lang: str) -> Claim | None:
        """A claim from the next slot group with pending users (round-robin: each group
        with a non-empty ``dirty`` gets one batch per pass); None when every group's
        pending users are held by others or none are pending. On one Redis: the one queue."""
        lease = int(self.config.lease_seconds * 1000)
        if not self.keys.cluster:
            claim = self.queue.claim(lang, self.config.batch_size, lease)
            return claim if claim.users else None
        rescanned = False
        while True:
            todo = self._todo.get(lang)
            if not todo:
                if rescanned:
                    return None
                todo = self._todo[lang] = self.queue.pending_groups(lang)
                rescanned = True
                if not todo:
                    return None
            group = todo.pop(0)
            claim = self.queue.claim(lang, self.config.batch_size, lease, group)
            if claim.users:
                return claim

    def _by_arm(self, lang: str, model: FoldIn, claim: Claim
                ) -> list[tuple[FoldIn, UpdateQueue | None, Claim]]:
        """The claim split by experiment arm (consumers/arms.py), each part with its arm's
        model and queue."""
        experiment = running_experiment(self.client, self.keys, lang)
        models = {"": model}

        def live(arm: str) -> bool:
            models[arm] = self.models.get(lang, arm)
            return models[arm] is not None

        return [(models[arm], self._arm_queue(arm) if arm else None, part)
                for arm, part in split_claim(experiment, claim, live)]

    def _arm_queue(self, arm: str) -> UpdateQueue:
        if arm not in self._arm_queues:
            self._arm_queues[arm] = UpdateQueue(self.client, self.keys.arm(arm))
        return self._arm_queues[arm]

    def commit(self, p: Prepared) -> None:
        """Write a prepared batch (refused whole if the model changed since), account for it;
        then its other arms' parts."""
        self._commit_part(p)
        for part in p.more:
            self._commit_part(part)

    def _commit_part(self, p: Prepared) -> None:
        lang, users = p.claim.lang, len(p.claim.users)
        queue = p.queue or self.queue
        try:
            result = queue.commit(p.claim, p.version, p.batch, top_n=self.config.top_n)
        except BaseException:
            for claim in p.claims():
                self._release(claim)
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
        skipped = int(p.batch.skip.sum()) if p.batch.skip is not None else 0
        m.users.labels(lang, "updated").inc(max(result.written - p.no_factors - skipped, 0))
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
        replies, per = [int(n) for n in pipe.execute()], self.queue.groups()
        counts = {lang: sum(replies[i * per:(i + 1) * per]) for i, lang in enumerate(langs)}
        for lang, n in counts.items():
            self.metrics.pending.labels(lang).set(n)
        return counts

    def run(self, stop: StopFlag | threading.Event) -> None:
        """Update until ``stop`` is set; batches in hand are always finished first.

        A commit runs in a helper thread while the next batch is claimed and solved: Redis
        executes the write script (about 40% of a batch's time) while numpy solves, so one
        process clears a backlog faster. One commit is in flight at most. While Redis is
        unavailable every cycle is retried after the consumers' backoff (consumers/retry.py)."""
        waits = None
        progress = _Progress(time.monotonic(), 0)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") as pool:
            self._in_flight = None
            while not stop.is_set():
                try:
                    claimed = self._cycle(pool)
                except redis.RedisError as exc:
                    if not transient(exc):
                        raise
                    self._drop_in_flight()
                    waits = waits or backoff(0.2, 5.0)
                    delay = next(waits)
                    log.warning("redis unavailable; retrying", extra={"fields": {
                        "error": str(exc), "retry_in": delay}})
                    stop.wait(delay)
                    continue
                waits = None
                self._log_progress(progress)
                if claimed == 0:
                    stop.wait(self.config.poll_interval)
            if self._in_flight is not None:
                self._in_flight.result()

    def _cycle(self, pool: ThreadPoolExecutor) -> int:
        """One batch per language (each solved while the previous one's commit runs), the
        backlog gauge and the trending tick; returns the users claimed."""
        claimed = 0
        for lang in self.languages():
            prepared = self.prepare(lang)
            if self._in_flight is not None:
                self._in_flight, done = None, self._in_flight
                try:
                    done.result()
                except BaseException:
                    if prepared is not None:
                        for claim in prepared.claims():
                            self._release(claim)
                    raise
            if prepared is not None:
                claimed += prepared.users()
                self._in_flight = pool.submit(self.commit, prepared)
        self.refresh_pending()
        self.trending.tick(self.languages())
        return claimed

    def _drop_in_flight(self) -> None:
        """Redis failed: wait for the commit in flight (its own error is Redis's too)."""
        if self._in_flight is not None:
            with contextlib.suppress(redis.RedisError):
                self._in_flight.result()
            self._in_flight = None

    def _log_progress(self, progress: _Progress) -> None:
        """An INFO line every ``progress_log_seconds`` while there is work."""
        now = time.monotonic()
        if now - progress.at < self.config.progress_log_seconds:
            return
        pending = self.refresh_pending(force=True)
        done = self.updated - progress.updated
        if done > 0 or any(pending.values()):
            log.info("progress", extra={"fields": {
                "updated": done, "per_second": round(done / (now - progress.at), 1),
                "pending": pending}})
        progress.at, progress.updated = now, self.updated

    def drain(self, timeout: float = 30.0) -> int:
        """Update until no language has pending users that can be claimed (for tests and
        scripts); returns users written. Raises TimeoutError past ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        before = self.updated
        while self.run_once():
            if time.monotonic() > deadline:
                raise TimeoutError(f"users still pending after {timeout}s")
        return self.updated - before

