"""``recs train``: from the Redis counts and publish (``trainer.pipeline.rounds``), or from an
extract to a model file (``--views FILE``), with what each prints.

Before any work: ``--model-dir`` must exist or be creatable and writable (a fit must never
end with nowhere to write its model), and the chosen engine must be able to run here.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import orjson

from core.errors import InputError
from core.options import writable_dir
from trainer.commands.prepare import check_engine, prepared_matrix
from trainer.config import ModelSpec, check_lang
from trainer.models.file import save_model
from trainer.pipeline.rounds import train_from_redis
from trainer.quality.choose import fit_model, holdout_metrics
from trainer.settings import EvaluateConfig, RetrainConfig, with_settings_file

log = logging.getLogger(__name__)


def cmd_train(args) -> int:
    try:
        writable_dir(args.model_dir)
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"--model-dir: {exc}") from None
    check_engine(args)
    if args.views:
        return train_extract(args)
    if args.lang:
        check_lang(args.lang)
    return train_from_redis(args.redis_url, args.prefix, args.lang, RetrainConfig.from_args(args),
                            lambda line: print(line, flush=True))


def train_extract(args) -> int:
    """``recs train --views FILE --lang L --model-dir DIR [--model KIND] [--settings FILE]``."""
    if not args.lang:
        raise InputError("say which language the extract is in: --lang L (e.g. en)")
    lang = check_lang(args.lang)
    args = with_settings_file(args)
    spec = ModelSpec.from_values(vars(args))
    matrix, stats = prepared_matrix(args, sys.stdout)
    if args.evaluate:
        metrics, _ = holdout_metrics(matrix, spec, args.test_fraction, k=EvaluateConfig.k,
                                     lang=lang, threads=args.threads)
        stats["metrics"] = metrics
        print("held-out metrics (fit on a split): " + orjson.dumps(metrics).decode())
    started = time.perf_counter()
    model, kind = fit_model(matrix, spec, lang, threads=args.threads, stats=stats)
    path = save_model(model, args.model_dir)
    print(f"trained {kind}: {spec.describe(kind, getattr(model, 'weight', None))} in "
          f"{time.perf_counter() - started:.1f} s")
    print(f"model: {path}")
    log.info("model written", extra={"fields": {"path": str(path), "lang": lang}})
    return 0
