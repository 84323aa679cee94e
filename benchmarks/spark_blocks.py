"""Spark ALS fit time by number of user/item blocks, in one session, against ALS's own
default of 10 blocks (the baseline, fitted in the same run).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/spark_blocks.py [--users 20000] \
        [--blocks 10,2,4] [--master local[2]]

``trainer.models.spark_als.fit_frame`` uses ``defaultParallelism`` blocks (the task slots);
this shows what that choice is worth against 10 on this machine. Same synthetic language
as ``benchmarks/scale.py`` (about 15 users per resource, platform filters, 40 factors,
50 iterations); the ratings frame is built and cached, and a short fit warms the JVM,
outside the clock.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=20000)
    p.add_argument("--blocks", default="10,2,4", help="comma-separated; the first is the "
                   "baseline the others are compared with")
    p.add_argument("--master", default="local[2]")
    args = p.parse_args()

    from pyspark.ml.recommendation import ALS

    from trainer.config import AlsConfig, FilterConfig
    from trainer.data import spark as spark_engine
    from trainer.data.matrix import filtered_matrix
    from trainer.data.synth import generate
    from trainer.models.confidence import scale_confidence
    from trainer.models.spark_als import triples
    from trainer.settings import SparkConfig

    spark_engine.configure(SparkConfig(master=args.master))
    views = generate(args.users, max(50, args.users // 15), ["en"], seed=1).views_for("en")
    matrix, _ = filtered_matrix(views, FilterConfig(), lambda line: None)
    config = AlsConfig(factors=40, iterations=50)
    confidence = scale_confidence(matrix.views, config.scaling, config.alpha)
    spark = spark_engine.session()
    frame = spark_engine.distributed(spark, triples(confidence)).cache()
    frame.count()
    print(f"{confidence.shape[0]} users x {confidence.shape[1]} resources, "
          f"{confidence.nnz} ratings, {args.master}", flush=True)
    def fit_seconds(blocks: int, iterations: int) -> float:
        als = ALS(rank=config.factors, maxIter=iterations, regParam=config.regularization,
                  implicitPrefs=True, alpha=1.0, userCol="user", itemCol="item",
                  ratingCol="rating", seed=config.seed, numUserBlocks=blocks,
                  numItemBlocks=blocks)
        started = time.perf_counter()
        als.fit(frame).itemFactors.count()
        return time.perf_counter() - started

    fit_seconds(2, 5)  # the JVM's JIT warms up outside the clock: the first fit runs slower
    baseline = None
    for blocks in [int(b) for b in args.blocks.split(",")]:
        seconds = fit_seconds(blocks, config.iterations)
        baseline = baseline or seconds
        print(f"blocks {blocks:3d}: fit {seconds:6.1f} s  ({baseline / seconds:.2f}x the "
              f"first), load {os.getloadavg()[0]:.2f}", flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
