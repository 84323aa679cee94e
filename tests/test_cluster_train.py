"""`recs train`, `recs resources load`, `recs trending`, `recs history` and `recs tune` on a
real Redis Cluster (tests/redis_cluster.py: 3 primaries + 3 replicas), against one Redis
with the same counts: the same lists, factors and similar lists (same data, same seed), every
slot group's copy of the model on the published version, users touched after their group's
seq re-queued in that group, ``--every`` doing rounds.

The counts are written as the consumer writes them per slot group (store/counts.py: per
batch and group ``seq`` INCR, ``views`` HINCRBY, ``users`` SADD, ``dirty``/``touched`` ZADD
at the group's seq; item totals on the item side; ``langs``), by :func:`cluster_counts`,
so these tests do not depend on the cluster ingest path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import pytest

from recs.cli import main
from store.cluster_keys import ClusterKeys, layout
from store.connection import connect
from store.keys import Keys
from tests.helpers import load_counts, views_by_user
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.synth import generate
from trainer.pipeline.retrain import train_language
from trainer.settings import RetrainConfig

pytestmark = pytest.mark.integration

N = 10
FLAGS = ["--model", "als", "--min-item-views", "20", "--min-user-views", "3", "--factors", "16",
         "--iterations", "8", "--top-n", str(N), "--threads", "1"]
LOW = FilterConfig(min_item_views=20, max_item_views=20000, min_user_views=3)


@pytest.fixture(scope="module")
def data():
    return generate(n_users=1200, n_resources=200, langs=("en",), seed=5)


@pytest.fixture
def cl(cluster):
    client = connect(cluster.url)
    yield client
    client.close()


def cluster_counts(client, keys: ClusterKeys, views, lang: str, batch: int = 400) -> None:
    """``views`` as the consumer's per-group writes, ``batch`` users per batch."""
    users = list(views_by_user(views).items())
    pipe = client.pipeline(transaction=False)
    for s in range(0, len(users), batch):
        by_group = defaultdict(list)
        totals: dict[int, int] = defaultdict(int)
        for user, counts in users[s:s + batch]:
            by_group[keys.group_of(user)].append((user, counts))
        for g, part in by_group.items():
            seq = int(client.incr(keys.in_group(g).seq(lang)))
            write_group(pipe, keys.in_group(g), lang, part, seq)
            for _, counts in part:
                for rid, n in counts.items():
                    totals[rid] += n
        for rid, n in totals.items():
            pipe.hincrby(keys.item_views(lang), rid, n)
        pipe.sadd(keys.langs, lang)
        pipe.execute()


def write_group(pipe, group: ClusterKeys, lang: str, part, seq: int) -> None:
    for user, counts in part:
        for rid, n in counts.items():
            pipe.hincrby(group.views(lang, user), rid, n)
        pipe.sadd(group.users(lang), user)
        pipe.zadd(group.dirty(lang), {user: seq})
        pipe.zadd(group.touched(lang), {user: seq})


def train(url: str, tmp_path, *extra) -> int:
    return main(["train", "--redis-url", url, "--model-dir", str(tmp_path / "models"),
                 *FLAGS, *extra])


def lists_of(client, keys: Keys, lang: str, users: set[str], items: set[str]) -> dict:
    """Every published list as {key name: {member: score}} and factors as arrays."""
    out = {}
    for rid in items:
        out[f"similar:{rid}"] = dict(client.zrange(keys.similar(lang, rid), 0, -1,
                                                   withscores=True))
    for user in users:
        out[f"recs:{user}"] = dict(client.zrange(keys.recs(lang, user), 0, -1,
                                                 withscores=True))
        out[f"factors:{user}"] = np.frombuffer(client.get(keys.factors(lang, user)), "<f4")
    return out


def published_users(client, keys: Keys, lang: str) -> set[str]:
    return {m.decode() for g in keys.slot_groups()
            for m in client.smembers(g.published_users(lang))}


def test_a_retrain_on_a_cluster_publishes_what_one_redis_does(cluster, cl, redis_server,
                                                              redis_client, tmp_path, data,
                                                              capsys):
    views = data.views_for("en")
    ck = layout(cl)
    assert isinstance(ck, ClusterKeys)
    cluster_counts(cl, ck, views, "en")
    load_counts(redis_client, views, "en")
    assert train(cluster.url, tmp_path / "c") == 0
    assert train(redis_server.url, tmp_path / "s") == 0
    assert capsys.readouterr().out.count("en: published") == 2

    one = Keys()
    items = {m.decode() for m in redis_client.smembers(one.published_items("en"))}
    users = {m.decode() for m in redis_client.smembers(one.published_users("en"))}
    assert items and users
    assert {m.decode() for m in cl.smembers(ck.published_items("en"))} == items
    assert published_users(cl, ck, "en") == users
    got, want = lists_of(cl, ck, "en", users, items), lists_of(redis_client, one, "en",
                                                               users, items)
    assert got.keys() == want.keys()
    for name, expected in want.items():
        if name.startswith("factors:"):
            np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-6)
        else:
            assert got[name].keys() == expected.keys(), name
            np.testing.assert_allclose([got[name][m] for m in expected], list(expected.values()),
                                       rtol=1e-5, atol=1e-6)
    # The item side is one slot (the switch's MULTI), and every group holds the model whole.
    assert np.array_equal(np.frombuffer(cl.get(ck.item_ids("en")), "<u4"),
                          np.frombuffer(redis_client.get(one.item_ids("en")), "<u4"))
    model = cl.hgetall(ck.model("en"))
    assert model[b"users"] == redis_client.hget(one.model("en"), "users")
    for group in ck.slot_groups():
        assert cl.hgetall(group.group_model("en")) == model
    # Everything was in the counts read: touched is trimmed in every group, and the users
    # pending since the load that the model covers left every group's queue.
    assert all(cl.zcard(g.touched("en")) == 0 for g in ck.slot_groups())
    pending = {m.decode() for g in ck.slot_groups() for m in cl.zrange(g.dirty("en"), 0, -1)}
    assert pending == set(views["user_id"]) - users
    assert not cl.exists(ck.train_lock("en"))


def settings(tmp_path) -> RetrainConfig:
    return RetrainConfig(filters=LOW, spec=ModelSpec("als", als=AlsConfig(factors=16,
                                                                          iterations=8)),
                         top_n=N, model_dir=str(tmp_path / "models"), threads=1)


def test_users_touched_after_their_groups_seq_are_requeued_in_their_group(cl, tmp_path, data):
    views = data.views_for("en")
    ck = layout(cl)
    cluster_counts(cl, ck, views, "en")
    everyone = sorted(set(views["user_id"]))
    # Two users of different groups get views while the lists are written; a third, pending
    # since the load, is finished by the updater meanwhile.
    first = everyone[0]
    second = next(u for u in everyone if ck.group_of(u) != ck.group_of(first))
    finished = next(u for u in everyone if ck.group_of(u) not in
                    (ck.group_of(first), ck.group_of(second)))
    before = {g: int(cl.get(g.seq("en"))) for g in (ck.for_user(u) for u in everyone)}
    rid = int(views["resource_id"].iloc[0])
    hooked = []

    def during_publish(kind, done):
        if hooked:
            return
        hooked.append(kind)
        pipe = cl.pipeline(transaction=False)
        for user in (first, second, "brand-new"):
            group = ck.for_user(user)
            write_group(pipe, group, "en", [(user, {rid: 1})], int(cl.incr(group.seq("en"))))
        pipe.execute()
        cl.zrem(ck.for_user(finished).dirty("en"), finished)

    result = train_language(cl, ck, "en", settings(tmp_path),
                            publish_options={"after_chunk": during_publish})
    assert result.outcome == "published" and hooked
    assert result.fields["requeued"] == 3 and result.fields["pending_requeued"] == 1
    for user in (first, second, "brand-new"):
        group = ck.for_user(user)
        # Queued at the seq of the new views in their own group, and only those stay touched.
        assert cl.zscore(group.dirty("en"), user) == int(cl.get(group.seq("en")))
        assert {m.decode() for m in cl.zrange(group.touched("en"), 0, -1)} == {
            u for u in (first, second, "brand-new") if ck.for_user(u) == group}
    group = ck.for_user(finished)
    assert cl.zscore(group.dirty("en"), finished) == before[group]  # again, at its group's S_g
    assert cl.exists(ck.for_user(first).recs("en", first))


def test_train_every_does_rounds_on_a_cluster(cluster, cl, tmp_path, data):
    ck = layout(cl)
    cluster_counts(cl, ck, data.views_for("en"), "en")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RECS_REDIS_URL": cluster.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recs.cli", "train", "--every", "0.2", "--model-dir",
         str(tmp_path / "models"), "--metrics-port", "0", *FLAGS], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        versions = set()
        deadline = time.monotonic() + 50
        while len(versions) < 2 and time.monotonic() < deadline and proc.poll() is None:
            v = cl.hget(ck.model("en"), "version")
            if v:
                versions.add(v)
            time.sleep(0.05)
        assert len(versions) >= 2, proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=50)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    live = cl.hget(ck.model("en"), "version")
    assert all(cl.hget(g.group_model("en"), "version") == live for g in ck.slot_groups())
    assert not cl.exists(ck.train_lock("en"))


def test_resources_load_trending_and_history_on_a_cluster(cluster, cl, tmp_path, data,
                                                          capsys):
    ck = layout(cl)
    paths = data.write(tmp_path / "csv")
    assert main(["resources", "load", str(paths["en"]["resources"]), "--lang", "en",
                 "--redis-url", cluster.url]) == 0
    held = len(data.resources_for("en"))
    assert f"{held} resources" in capsys.readouterr().out
    assert cl.hlen(ck.resources("en")) == held and cl.exists(ck.titles("en"))
    # Trending: the first refresh records the totals, views applied after it trend.
    cl.hset(ck.item_views("en"), mapping={"5": 3, "6": 1})
    cl.sadd(ck.langs, "en")
    assert main(["trending", "--redis-url", cluster.url]) == 0
    cl.hincrby(ck.item_views("en"), "6", 4)
    cl.hincrby(ck.item_views("en"), "7", 2)
    assert main(["trending", "--redis-url", cluster.url, "--lang", "en"]) == 0
    assert "en: 2 resources trending" in capsys.readouterr().out
    assert [m.decode() for m in cl.zrevrange(ck.trending("en"), 0, -1)] == ["6", "7"]
    # history: what --evaluate appended, read back on the cluster.
    cluster_counts(cl, ck, data.views_for("en"), "en")
    assert train(cluster.url, tmp_path, "--evaluate", "--test-fraction", "0.2") == 0
    capsys.readouterr()
    assert main(["history", "--lang", "en", "--json", "--redis-url", cluster.url]) == 0
    history = json.loads(capsys.readouterr().out)
    assert len(history) == 1 and history[0]["version"] == cl.hget(ck.model("en"),
                                                                  "version").decode()


def test_tune_on_a_cluster_stores_its_settings(cluster, cl, data, capsys):
    ck = layout(cl)
    cluster_counts(cl, ck, data.views_for("en"), "en")
    assert main(["tune", "--lang", "en", "--redis-url", cluster.url, "--trials", "2",
                 "--search", "als", "--min-item-views", "20", "--min-user-views", "3",
                 "--threads", "1"]) == 0
    assert "settings stored in recs:{en}:settings" in capsys.readouterr().out
    assert cl.hgetall(ck.settings("en"))


def test_a_retrain_copies_the_experiment_into_every_group_first(cluster, cl, tmp_path, data):
    """An experiment hash with no group copies (a start that died before them): the
    retrain copies it into every slot group before it writes any arm's list."""
    ck = layout(cl)
    cluster_counts(cl, ck, data.views_for("en"), "en")
    arms = [{"name": name, "spec": "als", "weight": 1, "settings": {}} for name in "ab"]
    cl.hset(ck.experiment("en"), mapping={"id": "x", "status": "running", "started_at": 1,
                                          "arms": json.dumps(arms)})
    assert train(cluster.url, tmp_path, "--lang", "en") == 0
    assert all(cl.hget(g.group_experiment("en"), "id") == b"x" for g in ck.slot_groups())
    version = cl.hget(ck.arm("b").model("en"), "version")
    assert version and all(cl.hget(g.group_model("en"), "version") == version
                           for g in ck.arm("b").slot_groups())
