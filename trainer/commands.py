"""CLI glue for the trainer's commands: each picks the offline (model file) or the online
(Redis) path, so neither path's imports load unless used."""

from __future__ import annotations

from recs.errors import InputError


def _engine(args) -> None:
    """Fail early, in one line, when the chosen engine cannot run here; configure Spark."""
    engine = getattr(args, "engine", "implicit")
    if engine == "spark":
        from trainer import spark_engine

        spark_engine.require_spark()
        spark_engine.configure(spark_engine.SparkSettings.from_args(args))
    elif engine == "implicit-gpu":
        import implicit.gpu

        from trainer.model import GPU_HINT

        if not implicit.gpu.HAS_CUDA:
            raise InputError(GPU_HINT)


def cmd_train(args) -> int:
    _engine(args)
    if args.views:
        from trainer.offline import train_offline

        return train_offline(args)
    from trainer.online import train_online

    return train_online(args)


def cmd_evaluate(args) -> int:
    _engine(args)
    from trainer.offline import evaluate_offline

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
        from trainer.offline import similar_offline

        return similar_offline(args)
    from trainer.online import similar_online

    return similar_online(args)


def cmd_recommend(args) -> int:
    if _source(args) == "model":
        from trainer.offline import recommend_offline

        return recommend_offline(args)
    from trainer.online import recommend_online

    return recommend_online(args)
