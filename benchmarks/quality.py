"""The README's quality tables: held-out NDCG@10 and fit time of every model, against plain
``implicit`` ALS in the same run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/quality.py movielens RATINGS_CSV
    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/quality.py synthetic --users 40000 \\
        --resources 14000

``movielens``: MovieLens ``ratings.csv`` (userId,movieId,rating,timestamp) as views (each
rating one view, ``ts`` its time), the README's filters (``--min-item-views 10
--max-item-views 0 --min-user-views 5``), a random split (seed 42; the times are dropped
there, so the tune's validation split is random too) and a split by time (each user's
latest 20 %; validation by time). ``synthetic``: ``trainer.data.synth.generate`` (no times: random
split only) with the filters given.

Rows: popularity; plain ``implicit`` ALS (library defaults: 100 factors, regularization 0.01,
alpha 1, 15 iterations) on log1p counts; the project default (``ModelSpec()``); every other
family of the registry at its defaults (a blend's weight chosen on validation); ``auto``
choosing at fit time; and ``auto`` after ``recs tune`` (``--trials`` trials on the training
part only), whose fit is the chosen family's alone (the tune's time is printed apart). Fit
seconds are single-threaded (``--threads 1``) and given as a ratio to plain ALS's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.errors import InputError  # noqa: E402
from trainer.config import FilterConfig, ModelSpec  # noqa: E402
from trainer.data.matrix import (  # noqa: E402
    UtilityMatrix,
    apply_filters,
    build_matrix,
    holdout_split,
    time_split,
)
from trainer.models.registry import FAMILIES  # noqa: E402
from trainer.quality.choose import fit_model  # noqa: E402
from trainer.quality.evaluate import ScoreRanker, evaluate_popularity, ranking_metrics  # noqa: E402

ML_FILTERS = FilterConfig(min_item_views=10, max_item_views=0, min_user_views=5)


def movielens_views(path: Path) -> pd.DataFrame:
    """ratings.csv as a views table with ``ts`` (epoch ms): one view per rating."""
    raw = pd.read_csv(path)
    return pd.DataFrame({"user_id": raw["userId"].astype(str),
                         "resource_id": raw["movieId"].astype(np.int64),
                         "views": np.ones(len(raw), dtype=np.int64),
                         "ts": raw["timestamp"].astype(np.int64) * 1000})


def plain_als(train: UtilityMatrix, test, threads: int, seed: int) -> tuple[float, float]:
    """(NDCG@10, fit seconds) of implicit's ALS at its defaults on log1p counts."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.evaluation import ranking_metrics_at_k

    x = train.views.copy()
    x.data = np.log1p(x.data)
    model = AlternatingLeastSquares(random_state=seed, num_threads=threads)
    started = time.perf_counter()
    model.fit(x, show_progress=False)
    seconds = time.perf_counter() - started
    got = ranking_metrics_at_k(model, x, test, K=10, show_progress=False, num_threads=1)
    return float(got["ndcg"]), seconds


def scored(train: UtilityMatrix, test, spec: ModelSpec, threads: int) -> tuple[float, float, str]:
    """(NDCG@10, fit seconds, what was fitted) of one spec through ``fit_model``."""
    started = time.perf_counter()
    model, kind = fit_model(train, spec, "xx", threads=threads)
    seconds = time.perf_counter() - started
    ndcg = ranking_metrics(ScoreRanker(model.score_rows), train.views, test, 10)["ndcg"]
    if kind == "blend":
        kind = f"blend w{model.weight:g}"
    return ndcg, seconds, kind


def sansa_row(train: UtilityMatrix, test, l2: float, per_item: int):
    """(NDCG@10, fit seconds) of sansa (Spisak et al. 2023: sparse approximate EASE) on
    binary views, CHOLMOD factorisation, about ``per_item`` weights per resource; None when
    the package is not installed (it is not a dependency: README)."""
    try:
        from sansa import (
            SANSA,
            CHOLMODGramianFactorizerConfig,
            SANSAConfig,
            UMRUnitLowerTriangleInverterConfig,
        )
    except ImportError:
        return None
    import logging

    logging.getLogger("sansa").setLevel(logging.WARNING)
    x = train.views.copy()
    x.data[:] = 1.0
    config = SANSAConfig(l2=l2, weight_matrix_density=min(1.0, per_item / x.shape[1]),
                         gramian_factorizer_config=CHOLMODGramianFactorizerConfig(),
                         lower_triangle_inverter_config=UMRUnitLowerTriangleInverterConfig(
                             scans=1, finetune_steps=5))
    started = time.perf_counter()
    model = SANSA(config).fit(x)
    seconds = time.perf_counter() - started

    def score_rows(rows):
        return model.forward(x[np.asarray(rows)]).toarray()

    return ranking_metrics(ScoreRanker(score_rows), train.views, test, 10)["ndcg"], seconds


def tuned_auto(train: UtilityMatrix, test, trials: int, threads: int, seed: int):
    """``recs tune`` on ``train``, then ``--model auto`` with its settings."""
    from trainer.quality.tune import tune

    base = ModelSpec(als=replace(ModelSpec().als, seed=seed))
    result = tune(train, base, trials=trials, threads=threads, say=lambda _: None)
    spec = replace(base.with_settings(result.settings), model="auto")
    ndcg, seconds, kind = scored(train, test, spec, threads)
    evidence = ", ".join(f"{k} {v['validation_ndcg']:.4f}/{v['fit_seconds']:.1f}s"
                         for k, v in result.evidence.items())
    return ndcg, seconds, f"{kind}; tune {result.seconds:.0f} s; validation {evidence}"


def rows(train: UtilityMatrix, test, args) -> list[tuple[str, float, float | None, str]]:
    out: list[tuple[str, float, float | None, str]] = []
    out.append(("popularity", evaluate_popularity(train.views, test, 10)["ndcg"], None, ""))
    ndcg, seconds = plain_als(train, test, args.threads, args.seed)
    out.append(("plain implicit ALS (log1p, defaults)", ndcg, seconds, ""))
    default = ModelSpec(als=replace(ModelSpec().als, seed=args.seed))
    for kind in ("als", *[k for k in FAMILIES if k != "als"], "auto"):
        if args.kinds and kind not in args.kinds.split(","):
            continue
        label = "project default (als)" if kind == "als" else kind
        try:
            ndcg, seconds, fitted = scored(train, test, replace(default, model=kind),
                                           args.threads)
        except InputError as exc:
            out.append((label, float("nan"), None, f"refused: {exc}"))
            continue
        out.append((label, ndcg, seconds, fitted if fitted != kind else ""))
    got = sansa_row(train, test, args.sansa_l2, args.sansa_per_item) if args.sansa else None
    if got is not None:
        out.append((f"sansa (l2 {args.sansa_l2:g}, ~{args.sansa_per_item} weights a resource)",
                    got[0], got[1], "not a dependency"))
    if args.trials:
        ndcg, seconds, note = tuned_auto(train, test, args.trials, args.threads, args.seed)
        out.append((f"auto after recs tune ({args.trials} trials)", ndcg, seconds, note))
    return out


def table(title: str, matrix: UtilityMatrix, split, args) -> None:
    results = rows(split.train, split.test, args)
    base_ndcg, base_s = results[1][1], results[1][2]
    print(f"\n{title}: {matrix.shape[0]} users x {matrix.shape[1]} resources, {matrix.nnz} "
          f"pairs, {split.test.nnz} held out\n")
    print("| model | NDCG@10 | x plain ALS | fit s | fit x plain ALS | note |")
    print("|---|---|---|---|---|---|")
    for label, ndcg, seconds, note in results:
        fit = "" if seconds is None else f"{seconds:.2f} | {seconds / base_s:.2f}x"
        fit = fit or " | "
        print(f"| {label} | {ndcg:.4f} | {ndcg / base_ndcg:.2f}x | {fit} | {note} |",
              flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", choices=("movielens", "synthetic"))
    p.add_argument("ratings", nargs="?", type=Path,
                   default=Path("../shared/data/movielens-small/ratings.csv"))
    p.add_argument("--users", type=int, default=40_000)
    p.add_argument("--resources", type=int, default=14_000)
    p.add_argument("--mean-items", type=float, default=14.0)
    p.add_argument("--filters", type=int, nargs=3, default=(150, 20000, 5),
                   metavar=("MIN_ITEM", "MAX_ITEM", "MIN_USER"),
                   help="synthetic: the platform's filters (0 turns one off)")
    p.add_argument("--trials", type=int, default=30, help="recs tune trials (0: no row)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--splits", default="random,time")
    p.add_argument("--kinds", default="", help="only these --model rows (default: all)")
    p.add_argument("--sansa", action="store_true", help="add a sansa row (when installed)")
    p.add_argument("--sansa-l2", type=float, default=200.0)
    p.add_argument("--sansa-per-item", type=int, default=200)
    args = p.parse_args()
    splits = args.splits.split(",")
    if args.data == "movielens":
        df, _ = apply_filters(movielens_views(args.ratings), ML_FILTERS)
        title = "MovieLens-small"
    else:
        from trainer.data.synth import generate

        df = generate(n_users=args.users, n_resources=args.resources, langs=("en",),
                      seed=args.seed, mean_items=args.mean_items).views_for("en")
        df, _ = apply_filters(df, FilterConfig(*args.filters))
        title = f"synthetic (users {args.users}, resources {args.resources}, filters " \
                f"{' '.join(map(str, args.filters))})"
        splits = [s for s in splits if s == "random"]
    matrix = build_matrix(df)
    for name in splits:
        if name == "random":  # the times dropped: validation random too, like the test
            split = holdout_split(replace(matrix, times=None), 0.2, args.seed)
        else:
            split = time_split(matrix, 0.2)
        table(f"{title}, {name} split", matrix, split, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
