"""The offline commands: CSV extract -> model file, and lookups/metrics from files.

``recs train --views FILE --lang L --model-dir DIR`` (``train_offline``), ``recs similar|recommend
--model FILE`` (``similar_offline``/``recommend_offline``) and ``recs evaluate --views FILE``
(``evaluate_offline``). Each takes the parsed ``args`` and returns an exit code; user mistakes
raise ``RecsError`` subclasses, which the CLI prints as one line.
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import orjson
import scipy.sparse as sp

from core.errors import InputError
from trainer.commands.present import describe, list_length, render
from trainer.config import FilterConfig, check_lang
from trainer.data.extracts import load_resources, load_views
from trainer.data.matrix import UtilityMatrix, build_matrix, filtered_matrix
from trainer.models.als import as_rows, load_model
from trainer.quality.choose import evaluate_spec, fit_model, holdout_metrics
from trainer.quality.evaluate import METRICS
from trainer.quality.gate import describe_spec, score_meaning, tuned_evaluation, with_settings_file
from trainer.settings import spec_from_args

log = logging.getLogger(__name__)

def _lang(value: str | None) -> str:
    if not value:
        raise InputError("say which language the extract is in: --lang L (e.g. en)")
    return check_lang(value)


def _load(path, skip_bad_rows: bool):
    """One CSV extract (``load_views``), or a folder / Parquet file (``trainer.data.folders``)."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir() or p.suffix == ".parquet":
        from trainer.data.folders import load_views_any

        return load_views_any(p, skip_bad_rows)
    return load_views(p, skip_bad_rows=skip_bad_rows)


def _prepared(args, out) -> tuple[UtilityMatrix, dict]:
    """Load, filter and build the matrix, printing what each step did."""
    df, load_report = _load(args.views, args.skip_bad_rows)
    for line in load_report.lines():
        print(line, file=out)
    matrix, filter_report = filtered_matrix(df, FilterConfig.from_args(args),
                                            lambda line: print(line, file=out))
    print(f"matrix: {matrix.shape[0]} users x {matrix.shape[1]} resources, {matrix.nnz} "
          f"non-zeros, sparsity {100 * matrix.sparsity:.3f}%", file=out)
    stats = {"source": str(args.views), "filters": filter_report.as_dict(),
             "bad_rows": len(load_report.bad), "duplicates": load_report.duplicates}
    return matrix, stats


def train_offline(args) -> int:
    """``recs train --views FILE --lang L --model-dir DIR [--model KIND] [--settings FILE]``."""
    lang = _lang(args.lang)
    args = with_settings_file(args)
    spec = spec_from_args(args)
    matrix, stats = _prepared(args, sys.stdout)
    if args.evaluate:
        metrics, _ = holdout_metrics(matrix, spec, args.test_fraction, k=10, lang=lang,
                                     threads=args.threads)
        stats["metrics"] = metrics
        print("held-out metrics (fit on a split): " + orjson.dumps(metrics).decode())
    started = time.perf_counter()
    model, kind = fit_model(matrix, spec, lang, threads=args.threads, stats=stats)
    path = model.save(args.model_dir)
    print(f"trained {kind}: {describe_spec(spec, kind, model)} in "
          f"{time.perf_counter() - started:.1f} s")
    print(f"model: {path}")
    log.info("model written", extra={"fields": {"path": str(path), "lang": lang}})
    return 0


def similar_offline(args) -> int:
    """``recs similar RESOURCE_ID --model FILE``."""

    def heading(model, resources) -> str:
        rid = int(model.items.ids[model.items.number(args.resource_id)])
        return f"Similar to {describe(rid, resources)} ({score_meaning(model)}):"

    return _show(args, lambda model, n: model.similar_items([args.resource_id], n), heading)


def recommend_offline(args) -> int:
    """``recs recommend USER_ID --model FILE``."""
    return _show(args, lambda model, n: model.recommend([args.user_id], n),
                 lambda model, resources: f"For user {args.user_id} (not yet viewed):")


def _show(args, lookup, heading) -> int:
    """Print ``lookup(model, n)`` (one row of ids and scores) from the ``--model`` file, with
    titles when ``--resources`` is given, under ``heading(model, resources)``."""
    n = list_length(args)
    model = load_model(args.model)
    ids, scores = lookup(model, n)
    resources = load_resources(args.resources) if args.resources else None
    print(render(as_rows(ids[0], scores[0]), resources, as_json=args.json,
                 heading=heading(model, resources)))
    return 0


def _test_matrix(args, train: UtilityMatrix, out) -> sp.csr_matrix:
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


def evaluate_offline(args) -> int:
    """``recs evaluate --views FILE [--test FILE] --k 10 [--json]``."""
    # With --json, stdout carries only the JSON object; the step report goes to stderr.
    out = sys.stderr if args.json else sys.stdout
    args = with_settings_file(args)
    spec = spec_from_args(args)
    matrix, _ = _prepared(args, out)
    if args.k < 1 or args.k >= matrix.shape[1]:
        raise InputError(f"--k {args.k}: must be at least 1 and below the number of resources "
                         f"({matrix.shape[1]})")
    if args.test:
        train, test = matrix, _test_matrix(args, matrix, out)
        result = evaluate_spec(train, test, spec, k=args.k, threads=args.threads)
    else:
        result, split = holdout_metrics(matrix, spec, args.test_fraction, k=args.k,
                                        threads=args.threads)
        train, test = split.train, split.test
        print(f"split: {test.nnz} pairs of {len(split.users)} users held out "
              f"(fraction {args.test_fraction}, seed {spec.als.seed})", file=out)
    if args.tune:
        result["tuned"] = tuned_evaluation(args, train, test, spec, out)
    if args.json:
        print(orjson.dumps(result).decode())
        return 0
    k = result["k"]
    print(f"\n{result['users']} users with held-out views, {result['items']} resources, "
          f"{result.get('model_kind', 'als')}: "
          f"{describe_spec(spec, result.get('model_kind', 'als'))}")
    tuned = result.get("tuned", {}).get("model")
    print(f"{'metric':<14}{'model':>10}" + (f"{'tuned':>10}" if tuned else "")
          + f"{'popularity':>12}")
    for m in METRICS:
        label = f"{m}@{k}" if m != "auc" else "auc"
        print(f"{label:<14}{result['model'][m]:>10.4f}" + (f"{tuned[m]:>10.4f}" if tuned else "")
              + f"{result['popularity'][m]:>12.4f}")
    return 0
