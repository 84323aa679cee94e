"""``recs train --engine spark``: Spark MLlib ALS in ``local[2]``, one SparkSession for the
module. Folding a training user into a Spark-trained model reproduces Spark's own user
factors (the fold-in solves Spark's objective); an offline run from a folder holding a CSV
and a Parquet file writes a model file ``recs similar/recommend --model`` read; bad rows are
named; without pyspark or Java, ``--engine spark`` is one line saying what to install.

Skipped, with the reason, where pyspark or Java is missing (CI installs both: .ci/run)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from trainer.config import ModelSpec
from trainer.data.spark import java_available
from trainer.models.file import model_filename

try:
    import pyspark  # noqa: F401
    HAVE_PYSPARK = True
except ImportError:
    HAVE_PYSPARK = False

needs_spark = pytest.mark.skipif(
    not (HAVE_PYSPARK and java_available()),
    reason="Spark tests need pyspark (pip install 'recs[spark]') and Java 17+ (none found)")


@pytest.fixture(scope="module")
def spark():
    from trainer.data import spark as spark_engine
    from trainer.settings import SparkConfig

    spark_engine.configure(SparkConfig(
        master="local[2]", conf={"spark.sql.shuffle.partitions": "4",
                                 "spark.default.parallelism": "4"}))
    session = spark_engine.session()
    yield session
    session.stop()
    # py4j logs "Closing down" from finalizers at exit, after pytest closed its streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def small():
    from trainer.data.synth import generate

    return generate(n_users=300, n_resources=60, langs=("en",), seed=3).views_for("en")


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@needs_spark
def test_fold_in_reproduces_spark_user_factors(spark, small):
    from trainer.config import AlsConfig, FilterConfig
    from trainer.data.matrix import apply_filters, build_matrix
    from trainer.models.als import PublishedALS, fit

    df, _ = apply_filters(small, FilterConfig(0, 0, 2))
    matrix = build_matrix(df)
    # A strong penalty makes the two objectives far apart, so the check can fail.
    config = AlsConfig(factors=8, iterations=10, regularization=1.0, engine="spark")
    model = fit(matrix, config, "en")
    assert model.stats["engine"] == "spark" and "_spark_" in model_filename(model)

    def folded(engine: str) -> np.ndarray:
        return PublishedALS(item_ids=model.items.ids, item_factors=model.item_factors,
                            regularization=config.regularization, alpha=config.alpha,
                            scaling=config.scaling, engine=engine).fold_in(matrix.views)

    spark_cos = cosines(folded("spark"), model.user_factors)
    assert spark_cos.min() >= 0.99, spark_cos.min()
    # implicit's objective (unscaled penalty) would not reproduce them.
    assert cosines(folded("implicit"), model.user_factors).min() < 0.99


@needs_spark
def test_offline_spark_run_from_a_folder(spark, small, tmp_path, capsys):
    from recs.cli import main

    folder = tmp_path / "extract"
    folder.mkdir()
    views = small.rename(columns={"views": "view_count"})
    half = len(views) // 2
    views.iloc[:half].to_csv(folder / "part-0.csv", index=False)
    # The Parquet half repeats the CSV's first pair with another count: the CSV's row,
    # first in name order, wins.
    dup = views.iloc[[0]].assign(view_count=999)
    rest = pd.concat([dup, views.iloc[half:]], ignore_index=True)
    spark.createDataFrame(rest).coalesce(1).write.parquet(str(folder / "part-1.parquet"))
    models = tmp_path / "models"
    args = ["train", "--views", str(folder), "--lang", "en", "--model-dir", str(models),
            "--engine", "spark", "--spark-master", "local[2]", "--min-item-views", "0",
            "--max-item-views", "0", "--min-user-views", "2", "--factors", "8",
            "--iterations", "5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 duplicate" in out
    (path,) = models.glob("*_spark_en.dump")
    user = str(views["user_id"].iloc[0])
    assert main(["recommend", user, "--model", str(path), "-n", "5", "--json"]) == 0
    assert main(["similar", str(views["resource_id"].iloc[0]), "--model", str(path)]) == 0

    bad = tmp_path / "bad"
    bad.mkdir()
    spark.createDataFrame(pd.DataFrame({"user_id": ["u1", "u2"], "resource_id": [5, 0],
                                        "view_count": [1, 1]})
                          ).coalesce(1).write.parquet(str(bad / "v.parquet"))
    assert main([*args[:2], str(bad), *args[3:]]) == 2
    err = capsys.readouterr().err
    assert "row 2: resource_id outside" in err and ".parquet" in err


def spark_train_error(tmp_path, env: dict) -> str:
    """``recs train --engine spark`` on a one-row extract under ``env``: it must exit 2 with
    one line on stderr, returned."""
    views = tmp_path / "v.csv"
    views.write_text("user_id,resource_id,view_count\nu,1,1\n")
    proc = subprocess.run([sys.executable, "-m", "recs.cli", "train", "--views", str(views),
                           "--lang", "en", "--engine", "spark"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "recs[spark]" in lines[0]
    return lines[0]


def test_spark_engine_without_java_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JAVA_HOME"}
    env["PATH"] = str(tmp_path)  # no java on it
    assert "java" in spark_train_error(tmp_path, env).lower()


def test_spark_engine_without_pyarrow_is_one_line(tmp_path):
    (tmp_path / "pyarrow.py").write_text("raise ImportError('no pyarrow here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    assert "pyarrow" in spark_train_error(tmp_path, env)


@needs_spark
@pytest.mark.integration
def test_executors_read_counts_and_write_user_lists(spark, redis_server, tmp_path):
    from recs.cli import main
    from store.client import RecsClient
    from tests.helpers import load_counts
    from tests.test_train_online import FLAGS, KEYS, LOW, N
    from trainer.data.matrix import apply_filters
    from trainer.data.synth import generate

    views = generate(n_users=500, n_resources=120, langs=("en",), seed=6).views_for("en")
    client = redis_server.client()
    load_counts(client, views, "en")
    taken_down = int(views["resource_id"].value_counts().index[0])  # the most viewed
    assert main(["hide", "--redis-url", redis_server.url, "--lang", "en",
                 str(taken_down)]) == 0
    models = tmp_path / "models"
    assert main(["train", "--redis-url", redis_server.url, "--model-dir", str(models), *FLAGS,
                 "--lang", "en", "--engine", "spark", "--spark-io", "executors",
                 "--spark-master", "local[2]", "--iterations", "5"]) == 0
    views = views[views["resource_id"] != taken_down]  # its views stay out of the model
    kept, _ = apply_filters(views, LOW)  # the implicit path's filters, in pandas
    assert client.exists(KEYS.similar("en", taken_down)) == 0
    published = {m.decode() for m in client.smembers(KEYS.published_users("en"))}
    assert published == set(kept["user_id"])
    info = {k.decode(): v.decode() for k, v in client.hgetall(KEYS.model("en")).items()}
    assert info["engine"] == "spark" and int(info["items"]) == kept["resource_id"].nunique()
    reader = RecsClient(client)
    for user in sorted(published)[:100]:
        listed = [rid for rid, _ in reader.recommend("en", user, N)]
        viewed = set(kept.loc[kept["user_id"] == user, "resource_id"])
        assert len(listed) == min(N, int(info["items"]) - len(viewed))
        assert not set(listed) & viewed and taken_down not in listed
        assert len(client.get(KEYS.factors("en", user))) == 4 * 16
    (path,) = models.glob("*_spark_en.dump")
    user = sorted(published)[0]
    assert main(["recommend", user, "--model", str(path), "-n", "3"]) == 0
    client.close()


@needs_spark
@pytest.mark.parametrize("scaling", ["linear", "log", "logshare", "bm25"])
def test_executor_confidence_is_the_implicit_paths(spark, small, scaling):
    import scipy.sparse as sp

    from trainer.models.confidence import scale_confidence
    from trainer.pipeline.executors import ratings

    got = ratings(spark.createDataFrame(small), scaling, alpha=7.0).toPandas()
    users, u = np.unique(small["user_id"], return_inverse=True)
    items, i = np.unique(small["resource_id"], return_inverse=True)
    views = sp.csr_matrix((small["views"].to_numpy(np.float32), (u, i)),
                          shape=(len(users), len(items)))
    want = scale_confidence(views, scaling, alpha=7.0).tocoo()
    want = pd.DataFrame({"user_id": users[want.row], "resource_id": items[want.col],
                         "want": want.data - 1.0})
    both = want.merge(got, on=["user_id", "resource_id"], validate="1:1")
    assert len(both) == len(small) == len(got)
    np.testing.assert_allclose(both["rating"], both["want"], rtol=2e-5, atol=1e-4)


@needs_spark
@pytest.mark.integration
def test_executors_stop_writing_once_the_lock_changes_hands(spark, redis_server):
    from store.train_lock import LockLost
    from tests.helpers import load_counts
    from tests.test_train_online import KEYS
    from trainer.config import AlsConfig
    from trainer.data.synth import generate
    from trainer.models.spark_als import factors_array, fit_frame
    from trainer.pipeline.executors import ListTarget, read_frame, write_user_lists
    from trainer.scoring_config import ScoringConfig
    from trainer.settings import RetrainConfig

    views = generate(n_users=200, n_resources=50, langs=("en",), seed=8).views_for("en")
    client = redis_server.client()
    client.flushdb()
    load_counts(client, views, "en")
    settings = RetrainConfig(redis_url=redis_server.url,
                             spec=ModelSpec("als", als=AlsConfig(factors=8, iterations=2)))
    raw, frame, users, items = read_frame(KEYS, "en", settings, sorted(views["user_id"].unique()
                                                                         .astype(str)), [])
    als = fit_frame(frame.select("user", "item", "rating"), settings.spec.als)
    item_factors = factors_array(als.itemFactors, len(items), 8)
    lock = KEYS.train_lock("en")
    target = ListTarget(redis_server.url, KEYS.prefix, "en", lock, "driver-token", 0, 5,
                        ScoringConfig())
    client.set(lock, "another-trainer")
    with pytest.raises(LockLost):
        write_user_lists(frame, als, items.ids, item_factors, target)
    assert client.scard(KEYS.published_users("en")) == 0
    assert not list(client.scan_iter(KEYS.recs("en", "*")))
    client.set(lock, "driver-token")
    written = write_user_lists(frame, als, items.ids, item_factors, target)
    assert sorted(written) == sorted(users.ids) and client.scard(KEYS.published_users("en")) \
        == len(users)
    raw.unpersist()
    client.close()
