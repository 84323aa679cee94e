"""CLI glue for the trainer's commands: each picks the offline (model file) or the online
(Redis) path, so neither path's imports load unless used."""

from __future__ import annotations

import argparse

from core.errors import InputError
from core.options import writable_dir


def _engine(args) -> None:
    """Fail early, in one line, when the chosen engine cannot run here; configure Spark."""
    engine = getattr(args, "engine", "implicit")
    if engine == "spark":
        from trainer.models import spark_als as spark_engine

        spark_engine.require_spark()
        spark_engine.configure(spark_engine.SparkSettings.from_args(args))
    elif engine == "implicit-gpu":
        import implicit.gpu

        from trainer.models.als import GPU_HINT

        if not implicit.gpu.HAS_CUDA:
            raise InputError(GPU_HINT)


def cmd_train(args) -> int:
    try:  # before any work: a fit must never end with nowhere to write its model
        writable_dir(args.model_dir)
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"--model-dir: {exc}") from None
    _engine(args)
    if args.views:
        from trainer.commands.evaluate import train_offline

        return train_offline(args)
    from trainer.pipeline.retrain import train_online

    return train_online(args)


def cmd_evaluate(args) -> int:
    _engine(args)
    from trainer.commands.evaluate import evaluate_offline

    return evaluate_offline(args)


def _source(args) -> str:
    if args.model and args.lang:
        raise InputError("give either --model FILE or --lang L, not both")
    if args.model:
        return "model"
    if args.lang:
        return "redis"
    raise InputError("say where to read from: --model FILE or --lang L (published in Redis)")


def cmd_similar(args) -> int:
    if _source(args) == "model":
        from trainer.commands.evaluate import similar_offline

        return similar_offline(args)
    from trainer.pipeline.retrain import similar_online

    return similar_online(args)


def cmd_recommend(args) -> int:
    if _source(args) == "model":
        from trainer.commands.evaluate import recommend_offline

        return recommend_offline(args)
    from trainer.pipeline.retrain import recommend_online

    return recommend_online(args)


def _redis_errors_as_one_line(run, args) -> int:
    import redis

    from core.errors import RecsError

    try:
        return run(args)
    except redis.ConnectionError as exc:
        raise RecsError(f"cannot reach Redis: {exc}") from None


def cmd_tune(args) -> int:
    from trainer.quality.gate import tune_command

    return _redis_errors_as_one_line(tune_command, args)


def cmd_history(args) -> int:
    from trainer.commands.history import history_command

    return _redis_errors_as_one_line(history_command, args)
