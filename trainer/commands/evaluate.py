"""``recs evaluate --views FILE [--test FILE] [--k 10] [--json] [--tune]``: held-out
precision@k, MAP@k, NDCG@k and AUC of the model and of a popularity baseline, as a table or
the JSON object.

Without ``--test`` a seeded ``--test-fraction`` of the pairs is held out, or with ``--split
time`` the latest ``--test-fraction`` of each user's pairs (the extract's ``ts`` column; an
extract without one is refused in one line). ``--tune`` runs the
search on the training part only (``trainer.commands.tune``: the test split is never seen by
the search) and reports the tuned model's metrics beside the default's.
"""

from __future__ import annotations

import sys
from typing import TextIO

import numpy as np
import orjson
import scipy.sparse as sp

from core.errors import InputError
from trainer.commands.prepare import check_engine, prepared_matrix
from trainer.commands.tune import run_search
from trainer.config import ModelSpec
from trainer.data.extracts import load_views
from trainer.data.matrix import UtilityMatrix, build_matrix
from trainer.quality.choose import evaluate_spec, holdout_metrics
from trainer.quality.evaluate import METRICS
from trainer.settings import with_settings_file


def cmd_evaluate(args) -> int:
    check_engine(args)
    # With --json, stdout carries only the JSON object; the step report goes to stderr.
    out = sys.stderr if args.json else sys.stdout
    args = with_settings_file(args)
    spec = ModelSpec.from_values(vars(args))
    if args.test and args.split == "time":
        raise InputError("--split time holds out part of --views; it does not apply with --test")
    matrix, _ = prepared_matrix(args, out)
    by_time = args.split == "time"
    if by_time and matrix.times is None:
        raise InputError(f"--split time: {args.views} has no ts column (the time of each "
                         "pair's last view, epoch milliseconds)")
    if args.k < 1 or args.k >= matrix.shape[1]:
        raise InputError(f"--k {args.k}: must be at least 1 and below the number of resources "
                         f"({matrix.shape[1]})")
    if args.test:
        train, test = matrix, _test_matrix(args, matrix, out)
        result = evaluate_spec(train, test, spec, k=args.k, threads=args.threads)
    else:
        result, split = holdout_metrics(matrix, spec, args.test_fraction, k=args.k,
                                        threads=args.threads, by_time=by_time)
        train, test = split.train, split.test
        how = "each user's latest" if by_time else f"seed {spec.als.seed}"
        print(f"split: {test.nnz} pairs of {len(split.users)} users held out "
              f"(fraction {args.test_fraction}, {how})", file=out)
        if by_time:
            result["split"] = "time"
    if args.tune:
        result["tuned"] = tuned_evaluation(args, train, test, spec, out)
    if args.json:
        print(orjson.dumps(result).decode())
    else:
        print_table(result, spec)
    return 0


def _test_matrix(args, train: UtilityMatrix, out: TextIO) -> sp.csr_matrix:
    """A --test extract on the training matrix's rows/columns, binary, minus training pairs."""
    df, report = load_views(args.test, skip_bad_rows=args.skip_bad_rows)
    for line in report.lines():
        print(line, file=out)
    mapped = build_matrix(df, users=train.users, items=train.items)
    test = mapped.views
    test.data[:] = 1.0
    seen = train.views.copy()
    seen.data[:] = 1.0
    fresh = (test - test.multiply(seen)).tocsr()
    fresh.eliminate_zeros()
    print(f"test: {len(df) - mapped.nnz} pairs outside the trained users/resources and "
          f"{mapped.nnz - fresh.nnz} pairs already in training left out; {fresh.nnz} kept",
          file=out)
    return fresh.astype(np.float32)


def tuned_evaluation(args, train: UtilityMatrix, test: sp.csr_matrix, spec: ModelSpec,
                     out: TextIO) -> dict:
    """``recs evaluate --tune``: search on ``train`` only, then score the best on ``test``."""
    result = run_search(args, train, spec, "xx", out)
    tuned = spec.with_settings(result.settings)
    metrics = evaluate_spec(train, test, tuned, k=args.k, threads=args.threads)
    print(f"tuned in {result.seconds:.1f} s ({result.trials} trials): {result.settings}",
          file=out)
    return {"settings": result.settings, "validation_ndcg": round(result.ndcg, 5),
            "trials": result.trials, "seconds": round(result.seconds, 1),
            "model": metrics["model"], "model_kind": metrics.get("model_kind", "als")}


def print_table(result: dict, spec: ModelSpec) -> None:
    """The metrics as a table: the model, the tuned model (with ``--tune``), popularity."""
    k, kind = result["k"], result.get("model_kind", "als")
    print(f"\n{result['users']} users with held-out views, {result['items']} resources, "
          f"{kind}: {spec.describe(kind)}")
    tuned = result.get("tuned", {}).get("model")
    print(f"{'metric':<14}{'model':>10}" + (f"{'tuned':>10}" if tuned else "")
          + f"{'popularity':>12}")
    for m in METRICS:
        label = f"{m}@{k}" if m != "auc" else "auc"
        print(f"{label:<14}{result['model'][m]:>10.4f}" + (f"{tuned[m]:>10.4f}" if tuned else "")
              + f"{result['popularity'][m]:>12.4f}")
