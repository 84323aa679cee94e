"""``--engine spark``: the same ALS fitted by Spark MLlib (``pyspark.ml``).

What is the same as the ``implicit`` engine: the filters, the utility matrix and its id
vocabularies, the confidence c = 1 + alpha * f(views) (``trainer.models.confidence``), the
model file and the published keys. Spark gets rating = c - 1 with its own alpha = 1, so its
confidence 1 + alpha * |rating| is exactly c.

What differs, and why the engine is part of the model: Spark's implicit ALS adds
``regParam * (number of views of the row)`` to each user's (and resource's) system where
``implicit`` adds ``regParam`` alone. The updater's fold-in therefore solves Spark's objective
for a Spark-trained model (``trainer.models.als.PublishedALS``, ``engine="spark"``).

Ids: Spark's ALS takes int32 ids. Users (strings) and resources (up to 4294967295) are never
cast: Spark sees the row and column numbers of the matrix's vocabularies, and the factors
come back by those numbers.

Where the work happens: here the driver holds the matrix and hands Spark the (user,
resource, rating) triples; executors fit; the factors come back to the driver, which scores
and publishes as for the other engines (``--spark-io executors``: trainer.pipeline.executors).
The session is ``trainer.data.spark``'s.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from core.errors import InputError
from trainer.config import AlsConfig
from trainer.data.spark import distributed, session

log = logging.getLogger(__name__)

def triples(confidence: sp.csr_matrix):
    """The (user, item, rating) pandas frame Spark fits: int32 row/column numbers and
    rating = c - 1 (Spark's confidence is 1 + alpha * rating with alpha = 1)."""
    import pandas as pd

    coo = confidence.tocoo()
    if max(coo.shape) >= 2**31:
        raise InputError(f"{coo.shape[0]} users x {coo.shape[1]} resources: Spark's ALS "
                         "numbers rows with int32")
    return pd.DataFrame({"user": coo.row.astype(np.int32), "item": coo.col.astype(np.int32),
                         "rating": (coo.data - 1.0).astype(np.float32)})


def fit_factors(confidence: sp.csr_matrix, config: AlsConfig
                ) -> tuple[np.ndarray, np.ndarray]:
    """Spark MLlib implicit ALS on a users x resources confidence matrix (c, as ``implicit``
    takes it); returns (user factors, item factors) in the matrix's row/column order."""
    spark = session()
    model = fit_frame(distributed(spark, triples(confidence)), config)
    users, items = confidence.shape
    user_factors = factors_array(model.userFactors, users, config.factors)
    item_factors = factors_array(model.itemFactors, items, config.factors)
    log.info("spark fit done", extra={"fields": {"master": spark.sparkContext.master,
                                                 "users": users, "items": items}})
    return user_factors, item_factors


def fit_frame(frame, config: AlsConfig):
    """Spark's ALS on a (user int, item int, rating = c - 1) DataFrame; the fitted model.

    Users and resources are cut into as many blocks as Spark has task slots
    (``defaultParallelism``: the cores of ``local[*]``, the executors' cores on a cluster,
    or ``--spark-conf spark.default.parallelism=N``), not ALS's fixed 10: every iteration
    shuffles between the blocks, and more blocks than slots only add tasks (measured:
    ``benchmarks/spark_blocks.py``)."""
    from pyspark.ml.recommendation import ALS

    blocks = max(1, frame.sparkSession.sparkContext.defaultParallelism)
    als = ALS(rank=config.factors, maxIter=config.iterations, regParam=config.regularization,
              implicitPrefs=True, alpha=1.0, userCol="user", itemCol="item",
              ratingCol="rating", seed=config.seed, nonnegative=False,
              numUserBlocks=blocks, numItemBlocks=blocks)
    return als.fit(frame)


def factors_array(frame, rows: int, factors: int) -> np.ndarray:
    """Spark's (id, features) frame as a rows x factors array; ids it does not list (no
    views) stay zero, as in ``implicit``."""
    pdf = frame.toPandas()
    out = np.zeros((rows, factors), dtype=np.float32)
    if len(pdf):
        out[pdf["id"].to_numpy()] = np.stack(pdf["features"].to_numpy()).astype(np.float32)
    return out
