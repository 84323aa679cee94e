"""The fold-in step of ``recs update`` (consumers/updater.py): a claimed batch of users
solved against the published model, ready to be written (:class:`Prepared`).

Invariants:

- One batch is solved and scored against one model: ``Prepared.version`` is the version it
  was solved with, and the commit refuses the batch if the language's model changed since.
- Item sides are cached per (language, experiment arm) and reloaded when the trainer
  publishes a new version (:class:`PublishedModels`); a version that cannot be used is
  reported once and skipped (its users stay pending) until the next publish.
- Users whose views are all on resources the model does not know (new since the last
  retrain) get no factors and no recommendations until a retrain covers those resources:
  apps fall back to their own popular list, as for any user without recs.
- A user whose views key is not a hash is reported once and skipped: factors and
  recommendations stay as they are, and the user leaves the queue.
- ``SPARE_CANDIDATES`` beyond ``top_n`` are scored, so a list stays ``top_n`` long when the
  commit drops resources hidden since the model was trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

import numpy as np
import redis

from consumers.metrics import UpdaterMetrics
from store.item_rows import read_rows
from store.keys import Keys
from store.published_model import model_version, read_published_items
from store.updates import BatchWrite, Claim, UpdateQueue
from store.user_reads import read_views, views_arrays
from trainer.models.base import FoldIn
from trainer.models.registry import published_model

log = logging.getLogger("recs.updater")

SPARE_CANDIDATES = 5
"""Candidates scored beyond --top-n, so a list stays --top-n long when the commit drops
resources hidden since the model was trained (a retrain leaves hidden resources out)."""


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
    queue: UpdateQueue | None = None
    """The queue bound to the keys of the arm ``version`` belongs to (None: the language's
    own model)."""
    more: tuple[Prepared, ...] = ()
    """The same claim's users of other experiment arms, each solved with its arm's model."""

    def claims(self) -> list[Claim]:
        return [self.claim, *(p.claim for p in self.more)]

    def users(self) -> int:
        return sum(len(c.users) for c in self.claims())


class PublishedModels:
    """The item side of every language's published model (and of each experiment arm's),
    cached per version."""

    def __init__(self, client: redis.Redis, keys: Keys, metrics: UpdaterMetrics) -> None:
        self.client, self.keys, self.metrics = client, keys, metrics
        self._models: dict[tuple[str, str], FoldIn] = {}
        self._bad_versions: set[tuple[str, str]] = set()

    def get(self, lang: str, arm: str = "") -> FoldIn | None:
        """The item side of ``lang``'s published model (``arm``: of that experiment arm's
        model), reloaded when its version changed; None when nothing (usable) is
        published."""
        keys = self.keys.arm(arm) if arm else self.keys
        version = model_version(self.client, keys, lang)
        cached = self._models.get((lang, arm))
        if version is None:
            return None
        if cached is not None and cached.version == version:
            return cached
        if (lang, version) in self._bad_versions:
            return None
        try:
            published = read_published_items(self.client, keys, lang)
            if published is None:
                return None
            model = published_model(published.meta, published, partial(
                read_rows, self.client, keys, lang, published.version))
        except (KeyError, ValueError) as exc:
            self._bad_versions.add((lang, version))
            log.error("unusable published model; users stay pending until the next publish",
                      extra={"fields": {"lang": lang, "version": version, "error": str(exc)}})
            return None
        self._models[(lang, arm)] = model
        self.metrics.model_switches.labels(lang).inc()
        if not arm:  # the language's own model (an experiment arm's has the same items)
            self.metrics.model_items.labels(lang).set(model.items)
        log.info("model loaded", extra={"fields": {
            "lang": lang, "arm": arm or None, "version": model.version, "items": model.items,
            "factors": model.factors, "previous": cached.version if cached else None}})
        return model


def solve(client: redis.Redis, keys: Keys, model: FoldIn, claim: Claim, top_n: int,
          metrics: UpdaterMetrics) -> tuple[BatchWrite, int]:
    """``claim``'s users folded into ``model`` and scored; returns the batch to write and
    the number of users with no known views."""
    raw = read_views(client, keys, claim.lang, claim.users)
    skip = _unreadable(claim, raw, metrics)
    views = model.views_from_arrays(*views_arrays(raw))
    factors = model.fold_in(views)
    # Spare candidates: the commit drops resources hidden since the model was trained.
    members, scores = model.recommend(factors, views, top_n + SPARE_CANDIDATES)
    known = np.diff(views.indptr) > 0
    no_factors = int((~known).sum())
    if skip is not None:
        known &= ~skip
        no_factors -= int(skip.sum())
    return BatchWrite(factors, known, members, scores, skip), no_factors


def _unreadable(claim: Claim, raw: list, metrics: UpdaterMetrics) -> np.ndarray | None:
    """Users whose views key is not a hash: reported once each and skipped; ``raw`` gets
    ``{}`` for them. None when every key was readable (the usual case)."""
    bad = [i for i, h in enumerate(raw) if isinstance(h, Exception)]
    if not bad:
        return None
    skip = np.zeros(len(raw), dtype=bool)
    for i in bad:
        if not isinstance(raw[i], redis.ResponseError):
            raise raw[i]
        log.error("skipping a user whose views key cannot be read; fix or delete the key",
                  extra={"fields": {"lang": claim.lang, "user": claim.users[i],
                                    "error": str(raw[i])}})
        raw[i] = {}
        skip[i] = True
    metrics.skipped.labels(claim.lang, "bad_views_key").inc(len(bad))
    return skip
