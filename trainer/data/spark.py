"""The one SparkSession of a process, for ``--engine spark`` (Spark's own rule: one per
process): :func:`configure` sets its master and settings (``trainer.settings.SparkConfig``)
before the first use, :func:`session` creates it then and returns it after. Nothing here fits
a model (``trainer.models.spark_als``) or reads Redis (``trainer.pipeline.executors``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from core.errors import InputError
from trainer.settings import SparkConfig

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


_settings = SparkConfig()


def configure(settings: SparkConfig) -> None:
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
