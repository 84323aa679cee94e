"""`recs train --engine spark --spark-io executors` on a real Redis Cluster
(tests/redis_cluster.py: 3 primaries + 3 replicas), against the same path on one Redis with
the same counts: the same similar lists, user lists and factors (Spark's ALS, same seed,
same blocks), the same model hash but for the seq (on a cluster the sum of the groups'),
every slot group's copy of the model on the published version, every group's queue settled.
And the executors' lock fence holds on a cluster: once the lock changes hands no executor
writes a list in any group.

Spark in ``local[2]`` (tests/test_spark.py's session); the counts written as the consumer
writes them per slot group (tests/test_cluster_train.py's ``cluster_counts``)."""

from __future__ import annotations

import numpy as np
import pytest

from recs.cli import main
from store.cluster_keys import ClusterKeys, layout
from store.connection import connect
from store.keys import Keys
from tests.helpers import load_counts
from tests.test_cluster_train import FLAGS, cluster_counts, lists_of, published_users
from tests.test_spark import needs_spark, spark  # noqa: F401 (the module's session)
from trainer.data.synth import generate

pytestmark = [pytest.mark.integration, needs_spark, pytest.mark.usefixtures("spark")]

EXECUTORS = ["--engine", "spark", "--spark-io", "executors", "--spark-master", "local[2]",
             "--iterations", "5"]


@pytest.fixture(scope="module")
def views():
    return generate(n_users=600, n_resources=120, langs=("en",), seed=6).views_for("en")


@pytest.fixture
def cl(cluster):
    client = connect(cluster.url)
    yield client
    client.close()


def train(url: str, models) -> int:
    return main(["train", "--redis-url", url, "--model-dir", str(models), *FLAGS, *EXECUTORS,
                 "--lang", "en"])


def assert_same_lists(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name, expected in want.items():
        if name.startswith("factors:"):
            np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-5,
                                       err_msg=name)
        else:
            assert got[name].keys() == expected.keys(), name
            np.testing.assert_allclose([got[name][m] for m in expected],
                                       list(expected.values()), rtol=1e-4, atol=1e-5,
                                       err_msg=name)


def test_executors_on_a_cluster_publish_what_they_publish_on_one_redis(
        cluster, cl, redis_server, redis_client, tmp_path, views, capsys):
    ck = layout(cl)
    assert isinstance(ck, ClusterKeys)
    cluster_counts(cl, ck, views, "en")
    load_counts(redis_client, views, "en")
    assert train(cluster.url, tmp_path / "c") == 0
    assert train(redis_server.url, tmp_path / "s") == 0
    assert capsys.readouterr().out.count("(Spark executors;") == 2

    one = Keys()
    items = {m.decode() for m in redis_client.smembers(one.published_items("en"))}
    users = {m.decode() for m in redis_client.smembers(one.published_users("en"))}
    assert items and users
    assert {m.decode() for m in cl.smembers(ck.published_items("en"))} == items
    assert published_users(cl, ck, "en") == users
    assert_same_lists(lists_of(cl, ck, "en", users, items),
                      lists_of(redis_client, one, "en", users, items))
    assert np.array_equal(np.frombuffer(cl.get(ck.item_ids("en")), "<u4"),
                          np.frombuffer(redis_client.get(one.item_ids("en")), "<u4"))
    np.testing.assert_allclose(np.frombuffer(cl.get(ck.item_factors("en")), "<f4"),
                               np.frombuffer(redis_client.get(one.item_factors("en")), "<f4"),
                               rtol=1e-4, atol=1e-5)
    model = cl.hgetall(ck.model("en"))
    ignore = {b"version", b"trained_at", b"seq"}
    assert {k: v for k, v in model.items() if k not in ignore} == {
        k: v for k, v in redis_client.hgetall(one.model("en")).items() if k not in ignore}
    # The model hash's seq on a cluster: the sum of the groups' seqs read before the counts.
    assert int(model[b"seq"]) == sum(int(cl.get(g.seq("en")) or 0) for g in ck.slot_groups())
    for group in ck.slot_groups():
        assert cl.hgetall(group.group_model("en")) == model
    # The hand-over ran per group: touched trimmed everywhere, covered users off the queue.
    assert all(cl.zcard(g.touched("en")) == 0 for g in ck.slot_groups())
    pending = {m.decode() for g in ck.slot_groups() for m in cl.zrange(g.dirty("en"), 0, -1)}
    assert pending == set(views["user_id"]) - users
    assert not cl.exists(ck.train_lock("en"))
    (path,) = (tmp_path / "c").glob("*_spark_en.dump")
    assert main(["recommend", sorted(users)[0], "--model", str(path), "-n", "3"]) == 0


def test_executors_stop_writing_in_every_group_once_the_lock_changes_hands(
        cluster, cl, views):
    from store.train_lock import LockLost
    from trainer.config import AlsConfig, ModelSpec
    from trainer.models.spark_als import factors_array, fit_frame
    from trainer.pipeline.executors import ListTarget, read_frame, write_user_lists
    from trainer.scoring_config import ScoringConfig
    from trainer.settings import RetrainConfig

    ck = layout(cl)
    cluster_counts(cl, ck, views, "en")
    settings = RetrainConfig(redis_url=cluster.url,
                             spec=ModelSpec("als", als=AlsConfig(factors=8, iterations=2)))
    everyone = sorted(views["user_id"].unique().astype(str))
    raw, frame, users, items = read_frame(ck, "en", settings, everyone, [])
    assert raw.count() == len(views)  # every user's counts, read from their own groups
    als = fit_frame(frame.select("user", "item", "rating"), settings.spec.als)
    item_factors = factors_array(als.itemFactors, len(items), 8)
    lock = ck.train_lock("en")
    target = ListTarget(cluster.url, ck.prefix, "en", lock, "driver-token", 0, 5,
                        ScoringConfig())
    cl.set(lock, "another-trainer")
    with pytest.raises(LockLost):
        write_user_lists(frame, als, items.ids, item_factors, target)
    assert published_users(cl, ck, "en") == set()
    assert not any(cl.exists(ck.recs("en", u)) for u in everyone)
    cl.set(lock, "driver-token")
    written = write_user_lists(frame, als, items.ids, item_factors, target)
    assert sorted(written) == sorted(users.ids)
    assert published_users(cl, ck, "en") == set(users.ids)
    raw.unpersist()
