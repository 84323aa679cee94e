"""Which model to fit (``--model als|ease|blend|auto``), and the validation split that decides.

- ``validation_split(matrix, seed)``: hides ``VALIDATION_FRACTION`` of the pairs of the matrix
  it is given: each user's latest where the matrix carries times (``time_split``), random
  ones otherwise. Callers give it the TRAINING part only (``recs evaluate`` passes the
  training side of its test split), so a choice made on validation never sees a test pair.
- ``fit_model(matrix, spec, lang)``: a family with all its settings given is fitted directly
  (``trainer.models.registry``); so is ``auto`` with a stored decision (``spec.auto.choice``,
  taken by ``recs tune``), which fits only the chosen family. ``blend`` without a fixed
  weight and ``auto`` without a decision fit ALS and
  EASE on the validation split, score every ALS weight in ``WEIGHTS`` on it, and refit the
  winner on the whole matrix. ``auto`` counts weight 1 as ALS and 0 as EASE, so it picks
  ALS, EASE or the blend; it falls back to ALS (with a log line) where the catalogue is too
  big for EASE.
- ``evaluate_spec(train, test, spec, k)``: the ``recs evaluate`` object for any kind;
  ``holdout_metrics`` the same on a seeded hold-out split.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from trainer.config import ModelSpec
from trainer.data.matrix import Split, UtilityMatrix, holdout_split, time_split
from trainer.models import ease as ease_module
from trainer.models.als import fit
from trainer.models.blend import fit_partner, mix
from trainer.models.registry import FAMILIES
from trainer.quality.evaluate import (
    ScoreRanker,
    evaluate,
    evaluate_popularity,
    ranking_metrics,
)

log = logging.getLogger(__name__)


VALIDATION_FRACTION = 0.2
WEIGHTS = tuple(round(w, 1) for w in np.linspace(0.0, 1.0, 11))
"""ALS weights tried by ``blend``/``auto`` on the validation split."""


def validation_split(matrix: UtilityMatrix, seed: int) -> Split:
    """Hide VALIDATION_FRACTION of ``matrix``'s pairs (give it the training part only): by
    time where it has times (a random split overrates models on temporal data)."""
    if matrix.times is not None:
        return time_split(matrix, VALIDATION_FRACTION)
    return holdout_split(matrix, VALIDATION_FRACTION, seed + 1)


def test_split(matrix: UtilityMatrix, fraction: float, seed: int, by_time: bool = False
               ) -> Split:
    """The held-out test split of ``recs evaluate``: seeded random pairs, or with
    ``by_time`` each user's latest (``time_split``)."""
    return time_split(matrix, fraction) if by_time else holdout_split(matrix, fraction, seed)


def validation_ndcg(score_rows, split: Split, k: int = 10) -> float:
    """NDCG@k on ``split``'s held-out pairs of a model's dense ``score_rows``."""
    return ranking_metrics(ScoreRanker(score_rows), split.train.views, split.test, k)["ndcg"]


def weigh(matrix: UtilityMatrix, spec: ModelSpec, lang: str, weights=WEIGHTS,
          threads: int = 0) -> dict:
    """Validation NDCG@10 of each ALS weight in ``weights`` (1 = ALS alone, 0 = the partner
    alone), both models fitted on the validation split's training side."""
    split = validation_split(matrix, spec.als.seed)
    als = fit(split.train, spec.als, lang, num_threads=threads)
    ease = fit_partner(split.train, spec, lang)  # EASE or RP3beta (--blend-partner)
    cache: dict[tuple, tuple] = {}

    def scores(w: float):
        def score_rows(rows):
            key = (int(rows[0]) if len(rows) else -1, len(rows))
            if key not in cache:
                cache.clear()
                cache[key] = (als.score_rows(rows), ease.score_rows(rows))
            a, e = cache[key]
            return mix(a, e, w)
        return score_rows

    return {w: validation_ndcg(scores(w), split) for w in weights}


def fit_model(matrix: UtilityMatrix, spec: ModelSpec, lang: str, threads: int = 0,
              stats: dict | None = None):
    """The model ``spec`` asks for, fitted on ``matrix`` (see the module docstring).
    Returns (model, kind) where kind is what was fitted: als, ease or blend."""
    stats = dict(stats or {})
    kind = spec.model
    if kind == "auto" and spec.auto.choice is not None:
        log.info("auto: %s, as chosen by recs tune on validation", spec.auto.choice)
        kind = spec.auto.choice
    if (kind == "auto" and spec.blend.partner == "ease"
            and not ease_module.fits(matrix.shape[1], spec.memory_limit)):
        log.warning("auto: EASE on %d resources would not fit in memory (at most %s); "
                    "using ALS", matrix.shape[1], ease_module.max_resources(spec.memory_limit))
        kind = "als"
    weight = spec.blend.weight
    if kind == "auto" or (kind == "blend" and weight is None):
        tried = weigh(matrix, spec, lang, WEIGHTS if kind == "auto" else WEIGHTS[1:-1],
                      threads)
        weight = max(tried, key=lambda w: (tried[w], -abs(w - 0.5)))
        stats["validation_ndcg"] = {f"{w:g}": round(v, 5) for w, v in tried.items()}
        if kind == "auto":
            kind = {1.0: "als", 0.0: spec.blend.partner}.get(weight, "blend")
        log.info("%s: ALS weight %g on validation (NDCG@10 %.4f): %s", spec.model, weight,
                 tried[weight], kind)
    stats["model"] = kind
    chosen = replace(spec, blend=replace(spec.blend,
                                         weight=None if weight is None else float(weight)))
    return FAMILIES[kind].fit(matrix, chosen, lang, threads=threads, stats=stats), kind


def holdout_metrics(matrix: UtilityMatrix, spec: ModelSpec, fraction: float, *, k: int = 10,
                    lang: str = "xx", threads: int = 0, by_time: bool = False
                    ) -> tuple[dict, Split]:
    """``evaluate_spec`` on a seeded hold-out split of ``matrix`` (``spec.als.seed``; by time
    with ``by_time``): the one evaluate-on-split path of ``recs train --evaluate`` (from an
    extract and from Redis) and ``recs evaluate``. Returns the metrics and the split."""
    split = test_split(matrix, fraction, spec.als.seed, by_time)
    return evaluate_spec(split.train, split.test, spec, k=k, lang=lang, threads=threads), split


def evaluate_spec(train: UtilityMatrix, test: sp.csr_matrix, spec: ModelSpec, k: int = 10,
                  lang: str = "xx", threads: int = 0) -> dict:
    """Like ``trainer.quality.evaluate.evaluate`` for any model kind; adds ``"model_kind"``
    (and ``"blend_weight"``) for kinds other than ``als``."""
    if spec.model == "als":  # the historical path and JSON shape, number for number
        return evaluate(train, test, spec.als, k, lang, threads)
    if test.shape != train.shape:
        raise ValueError(f"test shape {test.shape} differs from train {train.shape}")
    model, kind = fit_model(train, spec, lang, threads)
    return {
        "k": k,
        "model": ranking_metrics(ScoreRanker(model.score_rows, model.recommend_rows),
                                 train.views, test, k),  # the model's own rows: train's
        "popularity": evaluate_popularity(train.views, test, k),
        "users": int((np.diff(test.tocsr().indptr) > 0).sum()),
        "items": int(train.shape[1]),
        "model_kind": kind,
        **({"blend_weight": model.weight} if kind == "blend" else {}),
    }
