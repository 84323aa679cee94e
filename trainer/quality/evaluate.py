"""Held-out ranking metrics for a model and for a popularity baseline.

Both go through ``implicit.evaluation.ranking_metrics_at_k`` (precision@k, MAP@k, NDCG@k, AUC,
as that function defines them), so the two rows of a report are computed by the same code:
the ALS model as an ``implicit`` model object, the baseline as ``PopularityRanker``, a tiny
object with the one method ``ranking_metrics_at_k`` calls (``recommend``).

- ``ranking_metrics(ranker, train, test, k)``: the metrics of any such ranker;
  ``ScoreRanker(score_rows)`` makes one of any model's dense ``score_rows``.
- ``evaluate(train, test, config, k, lang) -> dict``: fit on ``train`` (a ``UtilityMatrix``),
  score on ``test`` (binary CSR, same shape), return the ``recs evaluate --json`` object:
  ``{"k", "model": {precision, map, ndcg, auc}, "popularity": {...}, "users", "items"}``
  where users = users with held-out views (the ones scored), items = resources in the matrix.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from core.errors import InputError
from trainer.config import AlsConfig
from trainer.data.matrix import UtilityMatrix
from trainer.models.als import ALSModel, fit
from trainer.models.rank import mask_seen, top_n

METRICS = ("precision", "map", "ndcg", "auc")


class PopularityRanker:
    """Ranks every resource by how many training users viewed it (ties: lower column first),
    skipping what the user already viewed. Quacks like an ``implicit`` model for
    ``ranking_metrics_at_k``."""

    def __init__(self, train_views: sp.csr_matrix) -> None:
        users_per_item = np.bincount(train_views.tocsr().indices, minlength=train_views.shape[1])
        order = np.lexsort((np.arange(len(users_per_item)), -users_per_item))
        # Distinct scores (rank-based) make the top-N independent of argpartition's tie order.
        self.scores = np.empty(len(users_per_item), dtype=np.float32)
        self.scores[order] = np.arange(len(order), 0, -1, dtype=np.float32)
        self.popularity = users_per_item

    def recommend(self, userid, user_items, N=10, filter_already_liked_items=True, **_ignored):
        userid = np.atleast_1d(userid)
        scores = np.broadcast_to(self.scores, (len(userid), len(self.scores))).copy()
        return ranked(scores, user_items, N, filter_already_liked_items)


def ranked(scores: np.ndarray, user_items, n: int, filter_seen: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    """A ranker's ``recommend`` answer from a block of scores (changed in place): the
    already-viewed cells of ``user_items`` set to -inf when ``filter_seen``, then the top
    ``n`` (column numbers int32, scores), as ``ranking_metrics_at_k`` expects."""
    if filter_seen:
        mask_seen(scores, user_items)
    ids, vals = top_n(scores, n)
    return ids.astype(np.int32), vals


class ScoreRanker:
    """Any model with ``score_rows(rows)`` as the ``recommend`` that implicit's
    ``ranking_metrics_at_k`` calls (train rows excluded, like implicit's own)."""

    def __init__(self, score_rows, rank_rows=None) -> None:
        self.score_rows = score_rows
        self.rank_rows = rank_rows
        """The model's own ``recommend_rows`` (its training rows excluded), when ``user_items``
        are those rows: a sparse model then ranks without a dense row per user."""

    def recommend(self, userid, user_items, N=10, filter_already_liked_items=True, **_ignored):
        if self.rank_rows is not None and filter_already_liked_items:
            ids, vals = self.rank_rows(np.atleast_1d(userid), N)
            return ids.astype(np.int32), vals
        scores = np.array(self.score_rows(np.atleast_1d(userid)), dtype=np.float32)
        return ranked(scores, user_items, N, filter_already_liked_items)


def as_implicit(model: ALSModel, num_threads: int = 0):
    """An ``implicit`` ALS object carrying the model's factors (for its scoring code)."""
    from implicit.cpu.als import AlternatingLeastSquares

    als = AlternatingLeastSquares(factors=model.config.factors, num_threads=num_threads)
    als.user_factors = model.user_factors
    als.item_factors = model.item_factors
    return als


def ranking_metrics(ranker, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10,
                    num_threads: int = 1) -> dict[str, float]:
    """``implicit``'s ranking_metrics_at_k for users with held-out views; plain floats."""
    from implicit.evaluation import ranking_metrics_at_k

    if test.nnz == 0:
        raise InputError("no held-out views to evaluate on")
    got = ranking_metrics_at_k(ranker, train.tocsr(), test.tocsr(), K=k, show_progress=False,
                               num_threads=num_threads)
    return {m: float(got[m]) for m in METRICS}


def evaluate_model(model: ALSModel, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10,
                   num_threads: int = 0) -> dict[str, float]:
    return ranking_metrics(as_implicit(model, num_threads), train, test, k)


def evaluate_popularity(train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10
                        ) -> dict[str, float]:
    return ranking_metrics(PopularityRanker(train), train, test, k)


def evaluate(train: UtilityMatrix, test: sp.csr_matrix, config: AlsConfig, k: int = 10,
             lang: str = "xx", num_threads: int = 0) -> dict:
    """Fit on ``train``, score model and popularity on ``test``; see the module docstring."""
    if test.shape != train.shape:
        raise ValueError(f"test shape {test.shape} differs from train {train.shape}")
    if k < 1:
        raise InputError("--k must be at least 1")
    model = fit(train, config, lang, num_threads=num_threads)
    return {
        "k": k,
        "model": evaluate_model(model, train.views, test, k, num_threads),
        "popularity": evaluate_popularity(train.views, test, k),
        "users": int((np.diff(test.tocsr().indptr) > 0).sum()),
        "items": int(train.shape[1]),
    }
