"""Which model to fit (``--model als|ease|blend|auto``), and the validation split that decides.

- ``ModelSpec``: the model kind plus each model's settings.
- ``validation_split(matrix, seed)``: hides ``VALIDATION_FRACTION`` of the pairs of the matrix
  it is given. Callers give it the TRAINING part only (``recs evaluate`` passes the training
  side of its test split), so a choice made on validation never sees a test pair.
- ``fit_model(matrix, spec, lang)``: ``als``/``ease`` fit directly; ``blend`` (without a fixed
  weight) and ``auto`` fit ALS and EASE on the validation split, score every ALS weight in
  ``WEIGHTS`` on it, and refit the winner on the whole matrix. ``auto`` counts weight 1 as
  ALS and 0 as EASE, so it picks ALS, EASE or the blend; it falls back to ALS (with a log
  line) where the catalogue is too big for EASE.
- ``evaluate_spec(train, test, spec, k)``: the ``recs evaluate`` object for any kind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from core.errors import InputError
from trainer.config import MODELS, EaseConfig, TrainConfig
from trainer.data.matrix import Split, UtilityMatrix, holdout_split
from trainer.models import ease as ease_module
from trainer.models.als import fit
from trainer.models.blend import BlendModel, als_scores, mix
from trainer.models.ease import fit_ease
from trainer.quality.evaluate import ranked

log = logging.getLogger(__name__)


VALIDATION_FRACTION = 0.2
WEIGHTS = tuple(round(w, 1) for w in np.linspace(0.0, 1.0, 11))
"""ALS weights tried by ``blend``/``auto`` on the validation split."""


@dataclass(frozen=True)
class ModelSpec:
    """What ``recs train``/``evaluate`` fit."""

    model: str = "als"
    """``als``, ``ease``, ``blend`` or ``auto`` (the best of the three on validation)."""
    als: TrainConfig = field(default_factory=TrainConfig)
    ease: EaseConfig = field(default_factory=EaseConfig)
    blend_weight: float | None = None
    """ALS's weight in the blend; None: chosen on the validation split."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        if self.blend_weight is not None and not 0.0 <= self.blend_weight <= 1.0:
            raise InputError("--blend-weight must be between 0 and 1")


class ScoreRanker:
    """Any model with ``score_rows(rows)`` as the ``recommend`` that implicit's
    ``ranking_metrics_at_k`` calls (train rows excluded, like implicit's own)."""

    def __init__(self, score_rows) -> None:
        self.score_rows = score_rows

    def recommend(self, userid, user_items, N=10, filter_already_liked_items=True, **_ignored):
        scores = np.array(self.score_rows(np.atleast_1d(userid)), dtype=np.float32)
        return ranked(scores, user_items, N, filter_already_liked_items)


def validation_split(matrix: UtilityMatrix, seed: int) -> Split:
    """Hide VALIDATION_FRACTION of ``matrix``'s pairs (give it the training part only)."""
    return holdout_split(matrix, VALIDATION_FRACTION, seed + 1)


def _ndcg(score_rows, split: Split, k: int = 10) -> float:
    from trainer.quality.evaluate import ranking_metrics

    return ranking_metrics(ScoreRanker(score_rows), split.train.views, split.test, k)["ndcg"]


def weigh(matrix: UtilityMatrix, spec: ModelSpec, lang: str, weights=WEIGHTS,
          threads: int = 0) -> dict:
    """Validation NDCG@10 of each ALS weight in ``weights`` (1 = ALS alone, 0 = EASE alone),
    both models fitted on the validation split's training side."""
    split = validation_split(matrix, spec.als.seed)
    als = fit(split.train, spec.als, lang, num_threads=threads)
    ease = fit_ease(split.train, spec.ease, lang)
    cache: dict[tuple, tuple] = {}

    def scores(w: float):
        def score_rows(rows):
            key = (int(rows[0]) if len(rows) else -1, len(rows))
            if key not in cache:
                cache.clear()
                cache[key] = (als_scores(als, rows), ease.score_rows(rows))
            a, e = cache[key]
            return mix(a, e, w)
        return score_rows

    return {w: _ndcg(scores(w), split) for w in weights}


def fit_model(matrix: UtilityMatrix, spec: ModelSpec, lang: str, threads: int = 0,
              stats: dict | None = None):
    """The model ``spec`` asks for, fitted on ``matrix`` (see the module docstring).
    Returns (model, kind) where kind is what was fitted: als, ease or blend."""
    stats = dict(stats or {})
    kind = spec.model
    if kind == "auto" and not ease_module.fits(matrix.shape[1]):
        log.warning("auto: %d resources is above EASE's limit of %d; using ALS",
                    matrix.shape[1], ease_module.EASE_MAX_RESOURCES)
        kind = "als"
    weight = spec.blend_weight
    if kind == "auto" or (kind == "blend" and weight is None):
        tried = weigh(matrix, spec, lang, WEIGHTS if kind == "auto" else WEIGHTS[1:-1],
                      threads)
        weight = max(tried, key=lambda w: (tried[w], -abs(w - 0.5)))
        stats["validation_ndcg"] = {f"{w:g}": round(v, 5) for w, v in tried.items()}
        if kind == "auto":
            kind = {1.0: "als", 0.0: "ease"}.get(weight, "blend")
        log.info("%s: ALS weight %g on validation (NDCG@10 %.4f): %s", spec.model, weight,
                 tried[weight], kind)
    stats["model"] = kind
    if kind == "als":
        return fit(matrix, spec.als, lang, num_threads=threads, stats=stats), kind
    if kind == "ease":
        return fit_ease(matrix, spec.ease, lang, stats=stats), kind
    als = fit(matrix, spec.als, lang, num_threads=threads, stats=stats)
    ease = fit_ease(matrix, spec.ease, lang)
    return BlendModel(als=als, ease=ease, weight=float(weight)), kind


def holdout_metrics(matrix: UtilityMatrix, spec: ModelSpec, fraction: float, *, k: int = 10,
                    lang: str = "xx", threads: int = 0) -> tuple[dict, Split]:
    """``evaluate_spec`` on a seeded hold-out split of ``matrix`` (``spec.als.seed``): the one
    evaluate-on-split path of ``recs train --evaluate`` (offline and online) and ``recs
    evaluate``. Returns the metrics and the split (for what it held out)."""
    split = holdout_split(matrix, fraction, spec.als.seed)
    return evaluate_spec(split.train, split.test, spec, k=k, lang=lang, threads=threads), split


def evaluate_spec(train: UtilityMatrix, test: sp.csr_matrix, spec: ModelSpec, k: int = 10,
                  lang: str = "xx", threads: int = 0) -> dict:
    """Like ``trainer.quality.evaluate.evaluate`` for any model kind; adds ``"model_kind"`` (and
    ``"blend_weight"``) for kinds other than ``als``."""
    from trainer.quality.evaluate import evaluate, evaluate_popularity, ranking_metrics

    if spec.model == "als":  # the historical path and JSON shape, number for number
        return evaluate(train, test, spec.als, k, lang, threads)
    if test.shape != train.shape:
        raise ValueError(f"test shape {test.shape} differs from train {train.shape}")
    model, kind = fit_model(train, spec, lang, threads)
    score_rows = (lambda rows: als_scores(model, rows)) if kind == "als" else model.score_rows
    return {
        "k": k,
        "model": ranking_metrics(ScoreRanker(score_rows), train.views, test, k),
        "popularity": evaluate_popularity(train.views, test, k),
        "users": int((np.diff(test.tocsr().indptr) > 0).sum()),
        "items": int(train.shape[1]),
        "model_kind": kind,
        **({"blend_weight": model.weight} if kind == "blend" else {}),
    }
