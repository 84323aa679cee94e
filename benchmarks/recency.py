"""Does weighting views by their age help? MovieLens-small, split by time, NDCG@10.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/recency.py [RATINGS_CSV]

Each training pair's views are multiplied by 0.5 ** (age / half_life), age measured from the
latest training view of all users (``global``) or of the pair's own user (``user``), for a
few half-lives; the model is fitted on the weighted counts and scored on the same held-out
pairs (each user's latest 20 %) as the unweighted model. Models: the default ALS (logshare:
the weights shift each user's confidence toward recent views), EASE on log counts (binary
EASE would ignore the weights; the unweighted log row is its baseline) and every other
registry family with a ``scaling``-free fit (rp3beta when present). Two gains are printed: the
best half-life picked on the test split itself (an upper bound), and the one picked on a
validation split by time of the training part ("none": unweighted won there).
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.quality import ML_FILTERS, movielens_views  # noqa: E402
from trainer.config import EaseConfig, ModelSpec  # noqa: E402
from trainer.data.matrix import UtilityMatrix, apply_filters, build_matrix, time_split  # noqa: E402
from trainer.models.registry import FAMILIES  # noqa: E402
from trainer.quality.choose import validation_split  # noqa: E402
from trainer.quality.evaluate import ScoreRanker, ranking_metrics  # noqa: E402

DAY_MS = 86_400_000
HALF_LIVES_DAYS = (7, 30, 90, 365, 1000)


def weighted(train: UtilityMatrix, half_life_days: float, reference: str) -> UtilityMatrix:
    times = train.times
    if reference == "global":
        ref = np.full(times.nnz, times.data.max())
    else:  # each user's own latest training view
        lengths = np.diff(times.indptr)
        latest = np.maximum.reduceat(times.data, times.indptr[:-1]) if times.nnz else []
        ref = np.repeat(np.where(lengths > 0, latest, 0), lengths)
    age = (ref - times.data) / DAY_MS
    views = train.views.copy()
    views.data = (views.data * np.maximum(0.5 ** (age / half_life_days), 1e-6)).astype(
        np.float32)
    return replace(train, views=views)


def ndcg(train: UtilityMatrix, seen, test, spec: ModelSpec, kind: str) -> float:
    model = FAMILIES[kind].fit(train, spec, "xx", threads=1)
    return ranking_metrics(ScoreRanker(model.score_rows), seen, test, 10)["ndcg"]


def picked_on_validation(train: UtilityMatrix, spec: ModelSpec, kind: str) -> tuple:
    """The (reference, half-life) that does best on the validation split (by time) of the
    training part: what a trainer could choose without seeing the test pairs."""
    val = validation_split(train, 42)
    scores = {(ref, hl): ndcg(weighted(val.train, hl, ref), val.train.views, val.test, spec,
                              kind) for ref in ("global", "user") for hl in HALF_LIVES_DAYS}
    scores[("none", 0)] = ndcg(val.train, val.train.views, val.test, spec, kind)
    return max(scores, key=scores.get)


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/movielens-small/ratings.csv")
    df, _ = apply_filters(movielens_views(path), ML_FILTERS)
    split = time_split(build_matrix(df), 0.2)
    train, test = split.train, split.test
    models = {"als": ModelSpec(), "ease": ModelSpec(ease=EaseConfig(scaling="log"))}
    models.update({k: ModelSpec() for k in FAMILIES if k not in ("als", "ease", "blend")})
    print("| model | unweighted | best weighted on test (reference, half-life days) | gain | "
          "picked on validation | its test gain | all |")
    print("|---|---|---|---|---|---|---|")
    for kind, spec in models.items():
        base = ndcg(train, train.views, test, spec, kind)
        tried = {(ref, hl): ndcg(weighted(train, hl, ref), train.views, test, spec, kind)
                 for ref in ("global", "user") for hl in HALF_LIVES_DAYS}
        tried[("none", 0)] = base
        best = max(tried, key=tried.get)
        every = " ".join(f"{r[0]}{h}:{v:.4f}" for (r, h), v in tried.items())
        picked = picked_on_validation(train, spec, kind)
        print(f"| {kind} | {base:.4f} | {tried[best]:.4f} ({best[0]}, {best[1]}) | "
              f"{100 * (tried[best] / base - 1):+.1f} % | {picked} | "
              f"{100 * (tried[picked] / base - 1):+.1f} % | {every} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
