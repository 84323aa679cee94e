"""``recs train --engine spark``: the same ALS fitted by Spark MLlib (``pyspark.ml``).

What is the same as the ``implicit`` engine: the filters, the utility matrix and its id
vocabularies, the confidence c = 1 + alpha * f(views) (``trainer.config.scale_confidence``),
the model file and the published keys. Spark gets rating = c - 1 with its own alpha = 1, so
its confidence 1 + alpha * |rating| is exactly c.

What differs, and why the engine is part of the model: Spark's implicit ALS adds
``regParam * (number of views of the row)`` to each user's (and resource's) system where
``implicit`` adds ``regParam`` alone. The updater's fold-in therefore solves Spark's objective
for a Spark-trained model (``trainer.models.foldin``, ``engine="spark"``).

Ids: Spark's ALS takes int32 ids. Users (strings) and resources (up to 4294967295) are never
cast: Spark sees the row and column numbers of the matrix's vocabularies, and the factors
come back by those numbers.

Where the work happens (this version): the driver reads the counts (Redis or the extract),
builds the matrix and hands Spark the (user, resource, rating) triples; executors fit; the
factors come back to the driver, which scores and publishes as for the other engines.

One SparkSession per process (Spark's own rule): :func:`configure` sets the master and
settings before the first fit; later fits reuse the session.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from core.errors import InputError
from trainer.config import TrainConfig

log = logging.getLogger(__name__)

INSTALL_HINT = ("--engine spark needs pyspark and Java 17+: pip install 'recs[spark]' and a "
                "Java runtime (e.g. apt-get install openjdk-17-jre-headless, or set JAVA_HOME)")

DEFAULT_CONF = {
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
"""Settings a ``--spark-conf`` of the same key replaces: no web UI or console bars from a
batch job; Arrow for pandas transfers (factors and vocabularies back to the driver, the
executors' reads and writes), which ships them as columns, not a Python object per row
(except :func:`distributed`)."""


@dataclass(frozen=True)
class SparkSettings:
    """Where and how Spark runs."""

    master: str = "local[*]"
    """Spark master URL: ``local[*]`` (every core of this machine), ``spark://host:7077``,
    ``yarn``, ``k8s://...``."""
    conf: dict = field(default_factory=dict)
    """Any Spark setting, ``--spark-conf KEY=VALUE`` (repeatable)."""

    @classmethod
    def from_args(cls, args) -> SparkSettings:
        conf = {}
        for item in getattr(args, "spark_conf", None) or []:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise InputError(f"--spark-conf {item!r}: expected KEY=VALUE")
            conf[key.strip()] = value.strip()
        return cls(master=getattr(args, "spark_master", None) or cls.master, conf=conf)


_settings = SparkSettings()


def configure(settings: SparkSettings) -> None:
    """Master and settings for the session this process creates (before the first fit)."""
    global _settings
    _settings = settings


def java_available() -> bool:
    home = os.environ.get("JAVA_HOME")
    return bool((home and os.path.exists(os.path.join(home, "bin", "java")))
                or shutil.which("java"))


def require_spark() -> None:
    """One line saying what to install when pyspark or Java is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise InputError(INSTALL_HINT + " (pyspark is not installed)") from None
    try:
        import pyarrow  # noqa: F401  (the extra's; Arrow transfers, the executors' batches)
    except ImportError:
        raise InputError(INSTALL_HINT + " (pyarrow is not installed)") from None
    if not java_available():
        raise InputError(INSTALL_HINT + " (no java found on PATH or in JAVA_HOME)")


def session():
    """The process' SparkSession, created with :func:`configure`'s settings on first use."""
    require_spark()
    from pyspark.sql import SparkSession

    # Python workers run this interpreter (its packages: store, trainer, redis, faiss)
    # unless PYSPARK_PYTHON or --spark-conf spark.pyspark.python says otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(_settings.master).appName("recs-train")
    for key, value in {**DEFAULT_CONF, **_settings.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    if sc.getCheckpointDir() is None:
        # ALS cuts its lineage every 10 iterations only with a checkpoint dir; without one,
        # 50 iterations build a plan deep enough to overflow the driver's stack.
        sc.setCheckpointDir(tempfile.mkdtemp(prefix="recs-spark-checkpoint-"))
    return spark


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


def fit_factors(confidence: sp.csr_matrix, config: TrainConfig
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


def distributed(spark, frame):
    """A large pandas frame as a Spark DataFrame split over the executors. Not through
    Arrow: Spark turns an Arrow-converted frame into one local relation held whole in the
    driver JVM's heap (at 2.9M ratings it ran out of the default 1 GB); without it the rows
    are parallelized as an RDD."""
    key = "spark.sql.execution.arrow.pyspark.enabled"
    before = spark.conf.get(key)
    spark.conf.set(key, "false")
    try:
        return spark.createDataFrame(frame)
    finally:
        spark.conf.set(key, before)


def fit_frame(frame, config: TrainConfig):
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
