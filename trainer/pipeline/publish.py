"""Publishing EASE and blend models to Redis, and their side of ``recs update``.

ALS is published by ``trainer.pipeline.retrain`` itself; this module covers the other kinds with the
same publisher (``store.publish.Publisher``: lists, then one switch, then removal), so every
contract key keeps its meaning (docs/CONTRACT.md):

- ``ease``: similar lists are rows of B (score: the weight B[j, i]); a user's list is their
  scaled view row times B; there are no user factors, so the model hash says ``factors`` 0
  and users' ``factors`` keys are deleted (the updater writes them as empty strings, 4 x 0
  bytes). B's rows go to ``store.ease_rows`` before the switch.
- ``blend``: similar lists are the ALS part's (cosine); a user's list is the blend of their
  z-scored ALS and EASE scores; the factors key holds the ALS part's factors, and the item
  factors and B's rows are both published.

``updater_model(meta, published, fetch)`` builds what ``recs update`` solves with for each
kind: ``trainer.models.foldin.FoldIn`` (ALS), ``trainer.models.ease.EaseRows`` (EASE) or
``BlendRows``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from store.ease_rows import drop_factors, drop_stale, write_rows
from store.publish import Lists
from trainer.models.als import slot_ids, top_n
from trainer.models.blend import BlendModel, mix
from trainer.models.ease import EASEModel, EaseRows, ease_input, recommend_rows, similar_rows
from trainer.models.foldin import FoldIn
from trainer.scoring.search import Scorer, resource_ids, similar_batches

ITEM_BATCH = 1024
USER_BATCH = 2048


def ease_similar_batches(model: EASEModel, n: int, batch: int = ITEM_BATCH
                         ) -> Iterator[Lists]:
    ids = model.items.ids
    for start in range(0, len(ids), batch):
        rows = np.arange(start, min(start + batch, len(ids)))
        idx, scores = similar_rows(model.weights, rows, n)
        yield Lists(ids=ids[rows], members=resource_ids(ids, idx, scores), scores=scores)


def ease_user_batches(model: EASEModel, n: int, batch: int = USER_BATCH) -> Iterator[Lists]:
    ids, users = model.items.ids, model.users.ids
    for start in range(0, len(users), batch):
        part = slice(start, min(start + batch, len(users)))
        idx, scores = recommend_rows(model.rows[part], model.weights, n)
        yield Lists(ids=users[part].tolist(), members=resource_ids(ids, idx, scores),
                    scores=scores)


def blend_user_batches(model: BlendModel, n: int, batch: int = USER_BATCH) -> Iterator[Lists]:
    ids, users = model.items.ids, model.users.ids
    seen = model.seen.tocsr()
    for start in range(0, len(users), batch):
        rows = np.arange(start, min(start + batch, len(users)))
        scores = model.score_rows(rows)
        block = seen[rows]
        scores[np.repeat(np.arange(len(rows)), np.diff(block.indptr)), block.indices] = -np.inf
        idx, vals = top_n(scores, n)
        idx[~np.isfinite(vals)] = -1
        yield Lists(ids=users[rows].tolist(), members=resource_ids(ids, idx, vals),
                    scores=vals, factors=model.als.user_factors[rows])


def model_info(model, kind: str, settings, seq: int, metrics: dict | None) -> dict:
    """The model hash of an EASE or blend model (docs/CONTRACT.md)."""
    from trainer.pipeline.retrain import model_info as als_info

    ease = model if kind == "ease" else model.ease
    if kind == "blend":
        info = als_info(model.als, settings, seq, metrics)
        info.update(model="blend", blend_weight=model.weight)
    else:
        f = settings.filters
        info = {"model": "ease", "trained_at": ease.trained_at, "factors": 0,
                "users": len(ease.users), "items": len(ease.items), "nnz": int(ease.rows.nnz),
                "top_n": settings.top_n, "seq": seq, "min_item_views": f.min_item_views,
                "max_item_views": f.max_item_views, "min_user_views": f.min_user_views,
                "train_seconds": ease.stats.get("train_seconds", 0.0)}
        if metrics is not None:
            info["metrics"] = json.dumps(metrics, sort_keys=True)
    info.update(ease_l2=ease.config.l2, ease_scaling=ease.config.scaling)
    return info


def publish(client, keys, lang: str, publisher, model, kind: str, settings, seq: int,
            metrics: dict | None, item_totals: np.ndarray) -> tuple[dict, str]:
    """Lists, B's rows, then the switch, of an EASE or blend model; (info, version)."""
    n = settings.top_n
    ease = model if kind == "ease" else model.ease
    if kind == "ease":
        publisher.write_similar(ease_similar_batches(model, n))
        publisher.write_users(ease_user_batches(model, n))
        factors = np.zeros((len(model.items), 0), dtype=np.float32)
        totals = None
    else:
        scorer = Scorer(model.als.item_factors, settings.scoring)
        publisher.write_similar(similar_batches(model.als, n, scorer))
        publisher.write_users(blend_user_batches(model, n))
        factors, totals = model.als.item_factors, item_totals
    write_rows(client, keys, lang, publisher.version, ease.items.ids, ease.weights)
    info = model_info(model, kind, settings, seq, metrics)
    version = publisher.switch(info, ease.items.ids, factors, totals)
    if kind == "ease":
        drop_factors(client, keys, lang, sorted(publisher.users_written))
    return info, version


def after_switch(client, keys, lang: str, version: str) -> None:
    """Free B's rows of every version but the live one (all of them once ALS is live)."""
    drop_stale(client, keys, lang, version)


# -- the updater's side -----------------------------------------------------------------------


@dataclass
class BlendRows:
    """``recs update`` under a blend: the ALS fold-in for the ALS part, B's rows for EASE,
    mixed per user exactly as the trainer mixed them."""

    foldin: FoldIn
    ease: EaseRows
    weight: float

    @property
    def version(self) -> str:
        return self.foldin.version

    @property
    def items(self) -> int:
        return self.foldin.items

    @property
    def factors(self) -> int:
        return self.foldin.factors

    def views_from_arrays(self, lengths, resource_ids, values) -> sp.csr_matrix:
        return self.foldin.views_from_arrays(lengths, resource_ids, values)

    def views_matrix(self, counts) -> sp.csr_matrix:
        return self.foldin.views_matrix(counts)

    def solve(self, views: sp.csr_matrix) -> np.ndarray:
        return self.foldin.solve(views)

    def recommend(self, user_factors, views: sp.csr_matrix, n: int):
        x = ease_input(views, self.ease.scaling)
        columns = np.unique(x.indices)
        local = sp.csr_matrix((x.data, np.searchsorted(columns, x.indices), x.indptr),
                              shape=(x.shape[0], len(columns)))
        ease_scores = np.asarray(local @ self.ease.weights_of(columns), dtype=np.float32)
        als_scores = np.asarray(user_factors, dtype=np.float32) @ self.foldin.item_factors.T
        scores = mix(als_scores.reshape(x.shape[0], -1), ease_scores.reshape(x.shape[0], -1),
                     self.weight)
        block = views.tocsr()
        scores[np.repeat(np.arange(block.shape[0]), np.diff(block.indptr)), block.indices] = (
            -np.inf)
        idx, vals = top_n(scores, min(n, self.items))
        idx[~np.isfinite(vals)] = -1
        empty = (idx < 0) | (np.diff(x.indptr) == 0)[:, None]
        return (slot_ids(self.foldin.item_ids, idx, empty),
                np.where(empty, 0.0, vals).astype(np.float32))


def updater_model(meta: dict, published, fetch):
    """What ``recs update`` folds users in with, for the model kind in ``meta``."""
    kind = meta.get("model", "als")
    if kind == "ease":
        return EaseRows(item_ids=published.item_ids, scaling=meta["ease_scaling"], fetch=fetch,
                        version=published.version)
    foldin = FoldIn(item_ids=published.item_ids, item_factors=published.item_factors,
                    regularization=float(meta["regularization"]), alpha=float(meta["alpha"]),
                    scaling=meta["scaling"], version=published.version,
                    item_totals=published.item_totals, engine=meta.get("engine", "implicit"))
    if kind == "als":
        return foldin
    if kind != "blend":
        raise ValueError(f"unknown model kind {kind!r}")
    ease = EaseRows(item_ids=published.item_ids, scaling=meta["ease_scaling"], fetch=fetch,
                    version=published.version)
    return BlendRows(foldin=foldin, ease=ease, weight=float(meta["blend_weight"]))
