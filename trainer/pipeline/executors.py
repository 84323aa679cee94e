"""``recs train --engine spark --spark-io executors``: the counts never gather on the driver.

1. The driver lists the language's user ids (``users(lang)`` by SSCAN, ids only) and hands
   slices of them to the executors, which read those users' count hashes from Redis with the
   trainer's own read script (``store.snapshot.READ_VIEWS``). Hidden resources' views are
   left out, as the ``implicit`` path leaves them out.
2. Filters, id numbering and the confidence (every ``--scaling``) run as Spark SQL. Ids
   are numbered as the ``implicit`` path numbers them (sorted ids,
   ``trainer.data.matrix.Vocabulary``); resources and users are never cast to Spark's int32,
   only their row numbers are used.
3. Spark's ALS fits (``trainer.models.spark_als``).
4. The driver collects the item factors (resources x factors, small) and writes the similar
   lists. Executors score their users against broadcast item factors (``trainer.scoring``)
   and write each user's list and factors with the publisher's whole-list-replace script
   (``store.publish.Publisher.write_users``); they return the ids they wrote. Before each
   round trip an executor checks that the driver's lock still holds the driver's token
   (``store.train_lock.LockFence``): once the lock changes hands, no executor writes another
   round trip, and the driver raises ``LockLost`` before the switch, as the ``implicit``
   path's writer does.
5. The driver does the one switch, the removal of what the new model no longer covers, and
   the hand-over to the updater, as ``trainer.pipeline.retrain`` does.

On a Redis Cluster (docs/CLUSTER.md) the same steps run per slot group, with the functions
the driver path uses: the driver reads each group's ``seq`` S_g, then its pending users,
then its user ids (``store.snapshot.read_user_ids``) before any executor reads a count;
executors name keys by ``store.cluster_keys.layout`` of their own client (a cluster client
for a ``redis+cluster://`` URL), read a slice's users split by group (one group's keys per
script call), and write users' lists per group, each with its S_g (``Publisher``); the
lock they check is the item side's ``train_lock``, which the switch WATCHes. The switch,
its copies into every group, the removal and the hand-over (per group, each with its S_g:
``store.handover.hand_over_groups``) are the driver path's. On one Redis there is one
group and these are the single-node reads and writes.

What the driver still holds (ids and factors, never counts): the user ids (for the
vocabulary, the list removal and the hand-over) and, for the model file ``recs
similar/recommend --model`` read, the user factors and the viewed-resource lists (collected
once the lists are published).

Executors import ``store`` and ``trainer``: on a cluster, install this package on them (or
ship it with ``spark.submit.pyFiles``), and let them reach Redis.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.errors import InputError
from store.cluster_keys import layout
from store.connection import connect
from store.control import read_hidden
from store.groups import GroupSeqs
from store.handover import hand_over_groups
from store.keys import Keys
from store.publish import Lists, Publisher
from store.snapshot import read_user_ids, views_reader
from store.train_lock import LockFence, LockLost, TrainLock
from trainer.config import SCALINGS, AlsConfig
from trainer.data.spark import distributed, session
from trainer.data.vocabulary import Vocabulary
from trainer.models.als import ALSModel
from trainer.models.base import utc_now
from trainer.models.confidence import BM25_B, BM25_K1
from trainer.models.file import save_model
from trainer.models.spark_als import factors_array, fit_frame
from trainer.pipeline.publish import model_info
from trainer.pipeline.run import RunResult
from trainer.pipeline.timing import timed
from trainer.scoring.lists import resource_ids, scorer_for, similar_batches
from trainer.scoring.search import Scorer
from trainer.scoring_config import ScoringConfig
from trainer.settings import RetrainConfig

SLICE_USERS = 2000
"""Users per executor task when reading counts (each read in script calls of 250)."""

COUNTS_SCHEMA = "user_id string, resource_id long, views long"


def read_counts(spark, redis_url: str, prefix: str, lang: str, user_ids: list[str],
                slice_users: int = SLICE_USERS):
    """A Spark DataFrame (user_id, resource_id, views) of ``user_ids``' counts, read by the
    executors in slices of ``slice_users`` (Arrow batches in and out: no Python object per
    count)."""
    slices = max(1, -(-len(user_ids) // slice_users))
    ids = distributed(spark, pd.DataFrame({"user_id": pd.Series(user_ids, dtype=object)}))
    return ids.repartition(slices).mapInPandas(
        lambda frames: _read_frames(redis_url, prefix, lang, frames), COUNTS_SCHEMA)


def _read_frames(redis_url: str, prefix: str, lang: str, frames, chunk: int = 250):
    """On an executor: the counts of the users in ``frames`` (pandas batches of user ids)
    as (user_id, resource_id, views) frames, one per batch (read a script call per
    ``chunk`` users of one slot group, pipelined: ``store.snapshot.views_reader``)."""
    client = connect(redis_url)
    try:
        read = views_reader(client, layout(client, prefix), lang, chunk)
        for frame in frames:
            users, sizes, pairs = read(frame["user_id"].tolist())
            owners = np.repeat(np.asarray(users, dtype=object), sizes)
            yield pd.DataFrame({"user_id": owners, "resource_id": pairs[:, 0],
                                "views": pairs[:, 1]})
    finally:
        client.close()


def apply_filters(df, filters):
    """The platform's three filters (``trainer.data.matrix.apply_filters``), in Spark."""
    from pyspark.sql import functions as F

    if filters.min_item_views or filters.max_item_views:
        totals = df.groupBy("resource_id").agg(F.sum("views").alias("t"))
        keep = totals
        if filters.min_item_views:
            keep = keep.where(F.col("t") >= filters.min_item_views)
        if filters.max_item_views:
            keep = keep.where(F.col("t") < filters.max_item_views)
        df = df.join(keep.select("resource_id"), "resource_id")
    if filters.min_user_views:
        users = df.groupBy("user_id").agg(F.sum("views").alias("t"))
        df = df.join(users.where(F.col("t") >= filters.min_user_views).select("user_id"),
                     "user_id")
    return df


def ratings(df, scaling: str, alpha: float):
    """(user_id, resource_id, rating) with rating = alpha * f(views): Spark's confidence
    1 + rating is ``trainer.models.confidence.scale_confidence``'s c, for every scaling it
    offers."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if scaling == "linear":
        f = F.col("views").cast("double")
    elif scaling == "log":
        f = F.log1p("views")
    elif scaling == "logshare":
        f = F.log1p("views") / F.sum(F.log1p("views")).over(Window.partitionBy("user_id"))
    elif scaling == "bm25":
        df, f = _bm25(df)
    else:
        raise InputError(f"unknown --scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
    return df.select("user_id", "resource_id", (F.lit(float(alpha)) * f).alias("rating"))


def _bm25(df):
    """``scale_confidence``'s bm25 in Spark SQL: (the frame with each resource's total
    views, the weight column). Two numbers reach the driver: resources and their mean
    total."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    totals = df.groupBy("resource_id").agg(F.sum("views").alias("total"))
    items, mean = totals.agg(F.count("*"), F.avg("total")).first()
    mean = float(mean) if mean and mean > 0 else 1.0
    df = df.join(totals, "resource_id")
    norm = (1.0 - BM25_B) + BM25_B * F.col("total") / F.lit(mean)
    idf = F.lit(math.log(float(items))) - F.log1p(
        F.count("*").over(Window.partitionBy("user_id")).cast("double"))
    views = F.col("views").cast("double")
    return df, views * (BM25_K1 + 1.0) / (BM25_K1 * norm + views) * idf


def numbered(spark, df):
    """(user, item, rating) with int32 row numbers from sorted-id vocabularies, plus the two
    ``Vocabulary`` objects (ids only reach the driver, never counts)."""
    from pyspark.sql import functions as F

    items = Vocabulary.from_values(
        df.select("resource_id").distinct().toPandas()["resource_id"].to_numpy(np.int64),
        name="resource")
    users = Vocabulary.from_values(
        df.select("user_id").distinct().toPandas()["user_id"].to_numpy(str), name="user")
    item_map = spark.createDataFrame(pd.DataFrame({
        "resource_id": items.ids, "item": np.arange(len(items), dtype=np.int32)}))
    user_map = distributed(spark, pd.DataFrame({  # one row per user: as large as it gets
        "user_id": users.ids.astype(object), "user": np.arange(len(users), dtype=np.int32)}))
    out = (df.join(F.broadcast(item_map), "resource_id").join(user_map, "user_id")
           .select("user", "item", "rating", "user_id"))
    return out, users, items


@dataclass(frozen=True)
class ListTarget:
    """Where and under what guard executors write users' lists (shipped to them whole)."""

    redis_url: str
    prefix: str
    lang: str
    lock_key: str
    """The trainer lock the driver holds; executors check it holds ``token`` before each
    round trip of writes (``store.train_lock.LockFence``), so a driver that lost it stops
    writing on every executor too."""
    token: str
    seq: int | GroupSeqs
    """The consumer seq read before the counts, per slot group (``store.groups.GroupSeqs``;
    one number holds for every group): users forgotten after it get no list."""
    n: int
    scoring: ScoringConfig


def write_user_lists(frame, model, item_ids: np.ndarray, item_factors: np.ndarray,
                     target: ListTarget) -> list[str]:
    """Executors score and write every user's list and factors; returns the ids written.
    ``store.train_lock.LockLost`` if the lock changed hands while they wrote."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    seen = frame.groupBy("user").agg(F.collect_list("item").alias("items"),
                                     F.first("user_id").alias("user_id"))
    rows = seen.join(model.userFactors.withColumnRenamed("id", "user"), "user")
    sc = frame.sparkSession.sparkContext
    shared = sc.broadcast((np.asarray(item_ids, dtype=np.int64),
                           np.ascontiguousarray(item_factors, dtype=np.float32)))
    written = rows.select("user_id", "features", "items").mapInPandas(
        lambda frames: _write_frames(frames, *shared.value, target), "user_id string")
    try:
        return written.toPandas()["user_id"].tolist()
    except (Py4JJavaError, PySparkException) as exc:
        if "LockLost" in str(exc):  # an executor's LockLost, wrapped by Spark
            raise LockLost(f"lost the lock {target.lock_key} while executors wrote user "
                           "lists; not switching the model") from None
        raise


def _write_frames(frames, item_ids, item_factors, target: ListTarget):
    """On an executor: one partition's users (pandas batches of user_id, features, items),
    scored and written a batch at a time; yields the ids written, once all are."""
    scorer = Scorer(item_factors, target.scoring)
    client = connect(target.redis_url)
    # The driver's layout: a cluster URL gives a cluster client, so the lists go per group.
    publisher = Publisher(client, layout(client, target.prefix), target.lang, seq=target.seq,
                          lock=LockFence(client, target.lock_key, target.token))
    written: list[str] = []

    def batches():
        for frame in frames:
            if frame.empty:
                continue
            ids = frame["user_id"].tolist()
            factors = np.stack(frame["features"].to_numpy()).astype(np.float32)
            lengths = frame["items"].map(len).to_numpy()
            cols = np.concatenate(frame["items"].to_numpy()).astype(np.int64)
            seen = sp.csr_matrix((np.ones(cols.size, np.float32), cols,
                                  np.concatenate([[0], np.cumsum(lengths)])),
                                 shape=(len(ids), len(item_factors)))
            idx, scores = scorer.user_lists(factors, seen, target.n)
            written.extend(ids)
            yield Lists(ids=ids, members=resource_ids(item_ids, idx, scores), scores=scores,
                        factors=factors)

    try:
        publisher.write_users(batches())
    finally:
        client.close()
    yield pd.DataFrame({"user_id": pd.Series(written, dtype=object)})


def steps(client, keys: Keys, lang: str, settings: RetrainConfig, lock: TrainLock
          ) -> RunResult:
    """The retrain of ``trainer.pipeline.retrain`` with the counts read and the user lists
    written by Spark executors (see the module docstring): same lock, same outcome."""
    times: dict[str, float] = {}
    with timed(times, "read"):
        ids = read_user_ids(client, keys, lang)  # per group: seq, pending, then the ids
        hidden = list(read_hidden(client, keys, lang))
        read = read_frame(keys, lang, settings, ids.users, hidden) if ids.users else None
    if read is None:
        return RunResult(lang, "empty", {}, f"{lang}: no counts in Redis for this language")
    raw, frame, users, items = read
    if len(users) == 0:
        return RunResult(lang, "empty", {}, f"{lang}: nothing to train on after the filters")
    with timed(times, "fit"):
        als = fit_frame(frame.select("user", "item", "rating"), settings.spec.als)
        item_factors = factors_array(als.itemFactors, len(items), settings.spec.als.factors)
    lock.check()
    with timed(times, "publish"):
        publisher, model, path, handover = _publish_executors(
            client, keys, lang, settings, lock, (frame, als, users, items, item_factors),
            ids.seqs, ids.pending)
    frame.unpersist()
    raw.unpersist()
    fields = {"lang": lang, "version": publisher.version, "seq": ids.seqs.total,
              "users": len(users), "resources": len(items), "nnz": int(model.seen.nnz),
              "model_file": str(path),
              "spark_io": "executors", "requeued": handover.newer,
              "publish_steps": publisher.report.seconds,
              **{f"{k}_seconds": v for k, v in times.items()}}
    return RunResult(lang, "published", fields,
                     f"{lang}: published {publisher.version}: {len(users)} users, {len(items)} "
                     f"resources (Spark executors; fit {times['fit']:.1f} s, publish "
                     f"{times['publish']:.1f} s)")


def read_frame(keys: Keys, lang: str, settings, user_ids: list[str], hidden: list[int]):
    """The executors' read of ``user_ids``' counts without the ``hidden`` resources' views
    (as ``trainer.pipeline.retrain.read_snapshot``), filtered and numbered: (the raw counts,
    the ratings frame, users, items), both frames persisted."""
    from pyspark.sql import functions as F

    spark = session()
    # Persisted: every later job (vocabularies, fit, lists, model file) sees one read of
    # the counts, not a fresh read each with the consumer's newer views in some of them.
    raw = read_counts(spark, settings.redis_url, keys.prefix, lang, user_ids)
    if hidden:
        gone = spark.createDataFrame([(int(h),) for h in hidden], "resource_id long")
        raw = raw.join(F.broadcast(gone), "resource_id", "left_anti")
    raw = raw.persist()
    counts = apply_filters(raw, settings.filters)
    frame, users, items = numbered(spark, ratings(counts, settings.spec.als.scaling,
                                                  settings.spec.als.alpha))
    return raw, frame.persist(), users, items


def _publish_executors(client, keys: Keys, lang: str, settings, lock, fitted,
                       seqs: GroupSeqs, pending):
    """User lists from the executors, then the model file and the rest on the driver, then
    the hand-over per slot group with each group's seq (``store.handover``, as the driver
    path); returns (publisher, model, model file path, hand-over counts)."""
    frame, als, users, items, item_factors = fitted
    publisher = Publisher(client, keys, lang, lock=lock, seq=seqs)
    target = ListTarget(settings.redis_url, keys.prefix, lang, lock.key, lock.token, seqs,
                        settings.top_n, settings.scoring)
    started = time.perf_counter()
    publisher.add_users_written(write_user_lists(frame, als, items.ids, item_factors, target))
    publisher.report.seconds["users"] = round(time.perf_counter() - started, 3)
    lock.check()
    model = _driver_model(frame, als, users, items, item_factors, settings.spec.als, lang)
    path = save_model(model, settings.model_dir)
    _publish_rest(publisher, model, settings, seqs)
    handover = hand_over_groups(client, keys, lang, seqs, pending, publisher.users_written)
    return publisher, model, path, handover


def _driver_model(frame, als, users, items, item_factors, config: AlsConfig, lang: str):
    """The model file's content: user factors and viewed resources collected to the driver
    (after the lists are out), so ``recs similar/recommend --model`` read it like any other."""
    pairs = frame.select("user", "item").toPandas()
    seen = sp.csr_matrix((np.ones(len(pairs), np.float32), (pairs["user"], pairs["item"])),
                         shape=(len(users), len(items)))
    return ALSModel(
        user_factors=factors_array(als.userFactors, len(users), config.factors),
        item_factors=item_factors, users=users, items=items, config=config, lang=lang,
        trained_at=utc_now(), seen=seen,
        stats={"engine": "spark", "spark_io": "executors", "users": len(users),
               "items": len(items), "nnz": int(seen.nnz)})


def _publish_rest(publisher: Publisher, model: ALSModel, settings: RetrainConfig,
                  seqs: GroupSeqs) -> None:
    """On the driver: similar lists, the switch (and on a cluster its copy into every slot
    group, ``store.switch``), the removal of what is no longer covered (per group)."""
    scorer = scorer_for(model, settings.scoring)
    publisher.write_similar(similar_batches(model, settings.top_n, scorer))
    publisher.switch(model_info(model, settings, seqs.total, None), model.items.ids,
                     model.item_factors)
    publisher.remove_uncovered(seqs)
