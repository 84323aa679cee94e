"""The blend of ALS and EASE: each user's two score rows z-scored, then mixed with ALS weight w.

score = w * z(ALS scores) + (1 - w) * z(EASE scores), where z standardises each user's score
row over all resources (mean 0, standard deviation 1; a constant row becomes 0). The two
models' raw scores live on unrelated scales (dot products vs EASE weights), so mixing them
unnormalised would let one drown the other. ``w`` is chosen on a validation split carved from
the training data (``trainer.quality.choose``), never on the test split; a fit here takes it
given.

Similar lists under the blend are the ALS part's (cosine of item factors): the blend mixes
per-user rankings, and a resource has no user row to z-score. The fold-in is the ALS part's
fold-in and EASE's rows of B, mixed per user exactly as the trainer mixed them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from trainer.config import ModelSpec
from trainer.data.matrix import UtilityMatrix
from trainer.models import memory
from trainer.models.als import ALSModel, PublishedALS, fit
from trainer.models.base import ListsById
from trainer.models.ease import EASEModel, PublishedEASE, fit_ease, published_slots
from trainer.models.rank import mask_seen, top_n_filled


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (float32; constant rows -> 0)."""
    scores = np.asarray(scores, dtype=np.float32)
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return ((scores - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def mix(als: np.ndarray, ease: np.ndarray, weight: float) -> np.ndarray:
    """The blend of two raw score blocks of the same users."""
    return weight * zscore_rows(als) + (1.0 - weight) * zscore_rows(ease)


@dataclass
class BlendModel(ListsById):
    """ALS and EASE fitted on the same matrix, and the weight of ALS in the mix."""

    family: ClassVar[str] = "blend"
    scores_by_factors: ClassVar[bool] = False

    als: ALSModel
    ease: EASEModel
    weight: float

    @classmethod
    def fit(cls, matrix: UtilityMatrix, spec: ModelSpec, lang: str, *, threads: int = 0,
            stats: dict | None = None) -> BlendModel:
        """Both parts on ``matrix`` at the given weight (``spec.blend.weight``: a weight
        left to choose is ``trainer.quality.choose``'s)."""
        if spec.blend.weight is None:
            raise ValueError("a blend is fitted at a given weight: choose it first")
        users, items = matrix.shape
        memory.check_fits(f"the blend on {users} users x {items} resources",
                          cls.fit_bytes(users, items, matrix.nnz, spec), spec.memory_limit,
                          "use --model als (auto falls back to ALS)")
        als = fit(matrix, spec.als, lang, num_threads=threads, stats=stats)
        return cls(als=als, ease=fit_ease(matrix, spec.ease, lang), weight=spec.blend.weight)

    @staticmethod
    def fit_bytes(users: int, items: int, nnz: int, spec: ModelSpec) -> int:
        """Both parts: the ALS model is kept while the partner fits."""
        return (ALSModel.fit_bytes(users, items, nnz, spec)
                + EASEModel.fit_bytes(users, items, nnz, spec))

    @classmethod
    def published(cls, meta, items, fetch) -> PublishedBlend:
        return PublishedBlend(als=ALSModel.published(meta, items), ease=EASEModel.published(
            meta, items, fetch), weight=float(meta["blend_weight"]))

    @property
    def users(self):
        return self.als.users

    @property
    def items(self):
        return self.als.items

    @property
    def lang(self) -> str:
        return self.als.lang

    @property
    def trained_at(self) -> str:
        return self.als.trained_at

    @property
    def stats(self) -> dict:
        return self.als.stats

    @property
    def seen(self):
        return self.als.seen

    @property
    def user_factors(self) -> np.ndarray:
        """The ALS part's: what the updater folds the ALS part of a user in from."""
        return self.als.user_factors

    @property
    def item_factors(self) -> np.ndarray:
        return self.als.item_factors

    @property
    def item_rows(self) -> np.ndarray:
        return self.ease.weights

    @property
    def similar_factors(self) -> np.ndarray:
        return self.als.item_factors

    def score_rows(self, rows) -> np.ndarray:
        return mix(self.als.score_rows(rows), self.ease.score_rows(rows), self.weight)

    def recommend_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n unviewed columns of users by row number."""
        scores = mask_seen(self.score_rows(rows), self.seen[rows])
        return top_n_filled(scores, min(n, scores.shape[1]))

    def similar_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ALS part's cosine neighbours (see the module docstring)."""
        return self.als.similar_rows(rows, n)

    def settings_fields(self) -> dict:
        ease = self.ease.config
        return {**self.als.settings_fields(), "ease_l2": ease.l2, "ease_scaling": ease.scaling,
                "blend_weight": self.weight}


@dataclass
class PublishedBlend:
    """``recs update`` under a blend: the ALS fold-in for the ALS part, B's rows for EASE,
    mixed per user exactly as the trainer mixed them."""

    als: PublishedALS
    ease: PublishedEASE
    weight: float

    @property
    def version(self) -> str:
        return self.als.version

    @property
    def items(self) -> int:
        return self.als.items

    @property
    def factors(self) -> int:
        return self.als.factors

    def views_from_arrays(self, lengths, resource_ids, values) -> sp.csr_matrix:
        return self.als.views_from_arrays(lengths, resource_ids, values)

    def views_matrix(self, counts) -> sp.csr_matrix:
        return self.als.views_matrix(counts)

    def fold_in(self, views: sp.csr_matrix) -> np.ndarray:
        return self.als.fold_in(views)

    def recommend(self, user_factors, views: sp.csr_matrix, n: int):
        x, ease_scores = self.ease.scores(views)
        als_scores = np.asarray(user_factors, dtype=np.float32) @ self.als.item_factors.T
        scores = mix(als_scores.reshape(x.shape[0], -1), ease_scores, self.weight)
        idx, vals = top_n_filled(mask_seen(scores, views), min(n, self.items))
        return published_slots(self.als.item_ids, idx, vals, x)
