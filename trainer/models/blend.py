"""The blend of ALS and an item-item partner (EASE or RP3beta, ``--blend-partner``): each
user's two score rows z-scored, then mixed with ALS weight w.

score = w * z(ALS scores) + (1 - w) * z(partner scores), where z standardises each user's
score row over all resources (mean 0, standard deviation 1; a constant row becomes 0). The
two models' raw scores live on unrelated scales (dot products vs item-item weights), so
mixing them unnormalised would let one drown the other. ``w`` is chosen on a validation split
carved from the training data (``trainer.quality.choose``), never on the test split; a fit
here takes it given.

Similar lists under the blend are the ALS part's (cosine of item factors): the blend mixes
per-user rankings, and a resource has no user row to z-score. Every user keeps the ALS
part's factors (the contract's ``factors`` key), whichever the partner. The fold-in is the
ALS part's fold-in and the partner's published rows, mixed per user exactly as the trainer
mixed them.
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
from trainer.models.rp3beta import PublishedRP3beta, RP3betaModel, fit_rp3beta

PARTNERS: dict[str, type] = {"ease": EASEModel, "rp3beta": RP3betaModel}
"""The partner families by ``--blend-partner`` (``trainer.config.BLEND_PARTNERS``)."""


def fit_partner(matrix: UtilityMatrix, spec: ModelSpec, lang: str):
    """The partner model ``spec.blend.partner`` fitted on ``matrix`` with its settings."""
    if spec.blend.partner == "rp3beta":
        return fit_rp3beta(matrix, spec.rp3beta, lang)
    return fit_ease(matrix, spec.ease, lang, memory_limit=spec.memory_limit)


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
    """ALS and its partner fitted on the same matrix, and the weight of ALS in the mix."""

    family: ClassVar[str] = "blend"
    scores_by_factors: ClassVar[bool] = False

    als: ALSModel
    partner: EASEModel | RP3betaModel
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
        return cls(als=als, partner=fit_partner(matrix, spec, lang), weight=spec.blend.weight)

    @staticmethod
    def fit_bytes(users: int, items: int, nnz: int, spec: ModelSpec) -> int:
        """Both parts: the ALS model is kept while the partner fits."""
        return (ALSModel.fit_bytes(users, items, nnz, spec)
                + PARTNERS[spec.blend.partner].fit_bytes(users, items, nnz, spec))

    @classmethod
    def published(cls, meta, items, fetch) -> PublishedBlend:
        """A hash without ``blend_partner`` was published before there was a choice: EASE."""
        partner = PARTNERS[meta.get("blend_partner", "ease")]
        return PublishedBlend(als=ALSModel.published(meta, items),
                              partner=partner.published(meta, items, fetch),
                              weight=float(meta["blend_weight"]))

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
    def item_rows(self):
        """The partner's item-item weights (dense B or sparse W)."""
        return self.partner.weights

    @property
    def similar_factors(self) -> np.ndarray:
        return self.als.item_factors

    def score_rows(self, rows) -> np.ndarray:
        return mix(self.als.score_rows(rows), self.partner.score_rows(rows), self.weight)

    def recommend_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n unviewed columns of users by row number (with RP3beta: from candidates,
        see :func:`sparse_blend_lists`; the same lists as the dense mix)."""
        if isinstance(self.partner, RP3betaModel):
            return sparse_blend_lists(self, np.asarray(rows), n)
        scores = mask_seen(self.score_rows(rows), self.seen[rows])
        return top_n_filled(scores, min(n, scores.shape[1]))

    def similar_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ALS part's cosine neighbours (see the module docstring)."""
        return self.als.similar_rows(rows, n)

    def settings_fields(self) -> dict:
        """The ALS part's fields (``factors`` > 0), the partner's own settings, the weight."""
        partner = {k: v for k, v in self.partner.settings_fields().items() if k != "factors"}
        return {**self.als.settings_fields(), **partner, "blend_weight": self.weight,
                "blend_partner": self.partner.family}


PAIRS = 1 << 16
"""(user, resource) candidate pairs whose ALS scores are computed at once."""


def factor_row_stats(user: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each row of ``user @ items.T`` without forming it:
    mean = u . mean(y), E[s^2] = u^T (Y^T Y / n) u (float64; a constant row's deviation 1,
    as :func:`zscore_rows` has it)."""
    y = items.astype(np.float64)
    u = user.astype(np.float64)
    mean = u @ y.mean(axis=0)
    var = np.einsum("uf,fg,ug->u", u, y.T @ y / len(y), u) - mean**2
    return mean, np.where(var > 0, np.sqrt(np.maximum(var, 0)), 1.0)


def sparse_row_stats(scores: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each full row of a sparse matrix (absent = 0)."""
    n = scores.shape[1]
    mean = np.asarray(scores.sum(axis=1), dtype=np.float64).ravel() / n
    var = np.asarray(scores.multiply(scores).sum(axis=1), dtype=np.float64).ravel() / n - mean**2
    return mean, np.where(var > 0, np.sqrt(np.maximum(var, 0)), 1.0)


def sparse_blend_lists(model: BlendModel, rows: np.ndarray, n: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The blend's top-n with an RP3beta partner, from candidates instead of every resource.

    Per user the blend is a * ALS_i + b * RP3_i + c with a, b >= 0 (the weights over each
    part's row deviation) and RP3_i >= 0, 0 where no walk reaches i. So a resource no walk
    reaches scores a * ALS_i + c, no more than any of ALS's own top n: the blend's top n lie
    in ALS's top n (unviewed) plus the resources RP3beta reaches. Only those are scored, with
    each part's row mean and deviation over all resources (``factor_row_stats``,
    ``sparse_row_stats``), so scores are the dense mix's."""
    from trainer.models.rank import recommend_by_factors, sparse_top_n

    u, y, w = model.als.user_factors[rows], model.als.item_factors, model.weight
    seen = model.seen[rows]
    partner = (model.partner.rows[rows] @ model.partner.weights).tocsr()
    partner.sort_indices()
    width = y.shape[0]
    als_top, _ = recommend_by_factors(u, y, n, exclude=seen)
    top_keys = (np.repeat(np.arange(len(rows)), als_top.shape[1]) * width + als_top.ravel())
    p_keys = np.repeat(np.arange(len(rows)), np.diff(partner.indptr)) * width + partner.indices
    keys = np.sort(np.concatenate([top_keys[als_top.ravel() >= 0], p_keys]))
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]  # np.union1d's hashing was 2/3 of it
    r, c = keys // width, keys % width
    p_vals = np.zeros(len(keys))
    p_vals[np.searchsorted(keys, p_keys)] = partner.data
    a_mean, a_std = factor_row_stats(u, y)
    p_mean, p_std = sparse_row_stats(partner)
    als = np.empty(len(keys))
    for s in range(0, len(keys), PAIRS):  # a block of pairs at a time: 2 x PAIRS x f floats
        als[s:s + PAIRS] = np.einsum("kf,kf->k", u[r[s:s + PAIRS]], y[c[s:s + PAIRS]])
    mixed = (w * (als - a_mean[r]) / a_std[r] + (1 - w) * (p_vals - p_mean[r]) / p_std[r])
    indptr = np.searchsorted(r, np.arange(len(rows) + 1))
    candidates = sp.csr_matrix((mixed.astype(np.float32), c, indptr), shape=(len(rows), width))
    return sparse_top_n(candidates, min(n, width), seen)


@dataclass
class PublishedBlend:
    """``recs update`` under a blend: the ALS fold-in for the ALS part, the partner's rows for
    the partner, mixed per user exactly as the trainer mixed them."""

    als: PublishedALS
    partner: PublishedEASE | PublishedRP3beta
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
        x, partner_scores = self.partner.scores(views)
        als_scores = np.asarray(user_factors, dtype=np.float32) @ self.als.item_factors.T
        scores = mix(als_scores.reshape(x.shape[0], -1), partner_scores, self.weight)
        idx, vals = top_n_filled(mask_seen(scores, views), min(n, self.items))
        return published_slots(self.als.item_ids, idx, vals, x)
