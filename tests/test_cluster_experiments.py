"""A/B experiments on a real Redis Cluster (tests/redis_cluster.py: 3 primaries + 3
replicas) against one Redis with the same counts: ``recs experiment start``, a retrain
publishing every arm (per slot group; the arm's model on the item side with a copy in every
group), ``recs update`` folding users into their arm, the readers tagging each user's list
with its arm and the version read with it, the readout, and ``stop`` freeing the arms.

Both stores get the same counts, the same experiment id and the same training settings, so
assignment, lists, factors and the readout must agree (model versions are random: each
side's are checked against its own published hashes)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest

from consumers.config import UpdaterConfig
from consumers.updater import Updater
from recs.cli import main
from store.aclient import AsyncRecsClient
from store.aconnect import connect_async
from store.client import RecsClient
from store.cluster_keys import layout
from store.connection import connect
from store.experiments import running
from tests.helpers import load_counts
from tests.test_cluster_train import cluster_counts
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.synth import generate
from trainer.pipeline.retrain import train_language
from trainer.settings import RetrainConfig

pytestmark = pytest.mark.integration

LANG = "en"
N = 10
SETTINGS = RetrainConfig(filters=FilterConfig(min_item_views=20, max_item_views=0,
                                              min_user_views=3),
                         spec=ModelSpec(als=AlsConfig(factors=8, iterations=5)), top_n=N,
                         threads=1)
VARYING = {"version", "trained_at", "train_seconds", "publish_seconds", "experiment", "seq"}
"""Model hash fields that differ between two runs of the same training (time, randomness,
the seq summed over slot groups; ``experiment`` is checked apart)."""


@pytest.fixture(scope="module")
def data():
    return generate(n_users=400, n_resources=80, langs=(LANG,), seed=11)


@pytest.fixture
def both(cluster, redis_server, data, tmp_path):
    """The same counts and experiment on the cluster and on one Redis, trained:
    [(url, client, keys)] cluster first."""
    out = []
    for url in (cluster.url, redis_server.url):
        client = connect(url)
        keys = layout(client)
        if keys.cluster:
            cluster_counts(client, keys, data.views_for(LANG), LANG)
        else:
            load_counts(client, data.views_for(LANG), LANG)
        assert main(["experiment", "--redis-url", url, "start", "--lang", LANG, "--arms",
                     "a=als:1,b=ease:1", "--id", "exp1"]) == 0
        config = replace(SETTINGS, model_dir=str(tmp_path / str(len(out))))
        assert train_language(client, keys, LANG, config).outcome == "published"
        out.append((url, client, keys))
    yield out
    for _, client, _ in out:
        client.close()


def users_of(client, keys) -> list[str]:
    return sorted(u.decode() for g in keys.slot_groups()
                  for u in client.smembers(g.published_users(LANG)))


def lists(client, keys, users) -> dict[str, list[tuple[int, float]]]:
    return {u: [(int(m), round(s, 4)) for m, s in
                client.zrevrange(keys.recs(LANG, u), 0, -1, withscores=True)] for u in users}


def model(client, keys) -> dict:
    return {k.decode(): v.decode() for k, v in client.hgetall(keys.model(LANG)).items()
            if k.decode() not in VARYING}


def tags(client, users) -> dict[str, tuple]:
    reader = RecsClient(client)
    return {u: (lambda r: ([x for x, _ in r[0]], r[1], r[2].arm, r[2].experiment))(
        reader.for_user_tagged(LANG, u, 5)) for u in users}


def test_an_experiment_trains_and_serves_on_a_cluster_as_on_one_redis(both):
    (_, cl, ck), (_, one, ok) = both
    users = users_of(one, ok)
    assert users == users_of(cl, ck) and len(users) > 100
    experiment = running(cl, ck, LANG)
    assert replace(experiment, started_at=0) == replace(running(one, ok, LANG), started_at=0)
    assert experiment.id == "exp1"
    assert lists(cl, ck, users) == lists(one, ok, users)
    for arm in ("a", "b"):
        keys_c, keys_o = (ck, ok) if arm == "a" else (ck.arm("b"), ok.arm("b"))
        assert model(cl, keys_c) == model(one, keys_o)
        version = cl.hget(keys_c.model(LANG), "version")
        assert version  # every group's copy holds the arm's live version
        assert {cl.hget(g.group_model(LANG), "version") for g in keys_c.slot_groups()} == {
            version}
    assert ck.arm("b").model(LANG) == "recs:{en}:_arm:b:model"
    assert all(cl.hget(g.group_experiment(LANG), "status") == b"running"
               for g in ck.slot_groups())
    got, want = tags(cl, users), tags(one, users)
    assert got == want
    assert {t[2] for t in got.values()} == {"a", "b"}
    reader = RecsClient(cl)
    for user in users[:40]:  # the version is the one of the arm that wrote the list
        arm = experiment.arm_of(user).name
        keys = ck if arm == "a" else ck.arm(arm)
        tag = reader.for_user_tagged(LANG, user, 5)[2]
        assert tag.model_version == cl.hget(keys.model(LANG), "version").decode()


def test_serve_reads_the_arm_with_the_list_on_a_cluster(both):
    (url_c, cl, ck), (url_o, one, ok) = both
    users = users_of(one, ok)[:60]

    async def read(url):
        client = AsyncRecsClient(connect_async(url))
        try:
            return {u: (lambda x: ([s.resource_id for s in x.items], x.source, x.tag.arm,
                                   x.tag.experiment, x.tag.model_version))(
                await client.recommend(LANG, u, 5)) for u in users}
        finally:
            await client.redis.aclose()

    got, want = asyncio.run(read(url_c)), asyncio.run(read(url_o))
    assert {u: v[:4] for u, v in got.items()} == {u: v[:4] for u, v in want.items()}
    versions = {"a": cl.hget(ck.model(LANG), "version").decode(),
                "b": cl.hget(ck.arm("b").model(LANG), "version").decode()}
    assert all(v[4] == versions[v[2]] for v in got.values())


def test_update_folds_users_into_their_arm_on_a_cluster(both):
    (_, cl, ck), (_, one, ok) = both
    experiment = running(one, ok, LANG)
    users = users_of(one, ok)
    chosen = [next(u for u in users if experiment.arm_of(u).name == arm) for arm in "ab"]
    item = int(cl.zrevrange(ck.recs(LANG, chosen[0]), 0, 0)[0])
    for client, keys in ((cl, ck), (one, ok)):
        for user in chosen:
            client.hincrby(keys.views(LANG, user), item, 5)
            client.zadd(keys.for_user(user).dirty(LANG), {user: 10_000})
        config = UpdaterConfig(langs=(LANG,), top_n=N, metrics_port=0)
        assert Updater(client, config).drain() >= 2
    assert lists(cl, ck, chosen) == lists(one, ok, chosen)
    for user in chosen:
        assert item not in [x for x, _ in lists(cl, ck, [user])[user]]
        assert cl.get(ck.factors(LANG, user)) == one.get(ok.factors(LANG, user))
        assert not cl.zscore(ck.for_user(user).dirty(LANG), user)


def report(url, action="report") -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["experiment", "--redis-url", url, action, "--lang", LANG, "--json"]) == 0
    return json.loads(out.getvalue())


def comparable(r: dict) -> dict:
    r = json.loads(json.dumps(r))
    r.pop("generated_at", None)
    for key in ("started_at", "ended_at"):
        r["experiment"].pop(key, None)
    for arm in r["arms"]:
        arm.pop("model_version")
    return _rounded(r)


def _rounded(value):
    """Floats to 9 places: the cluster sums each arm's users group by group, so a bootstrap
    statistic can differ from one Redis's in the last bits."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _experiment_users(keys, user: str, arm: str) -> str:
    """Where the click path counts ``user``'s impressions and clicks of ``arm``: on a cluster
    the user's slot group's share (store/ctr.py ``read_user_counts`` sums the groups)."""
    return keys.for_user(user).group_experiment_users(LANG, "exp1", arm)


def test_the_readout_and_stop_on_a_cluster_as_on_one_redis(both):
    for _, client, keys in both:
        experiment = running(client, keys, LANG)
        for i, user in enumerate(users_of(client, keys)[:80]):
            arm = experiment.arm_of(user).name
            client.hset(_experiment_users(keys, user, arm),
                        mapping={f"i:{user}": 4, f"c:{user}": i % 3})
    (url_c, cl, ck), (url_o, _, _) = both
    got, want = report(url_c), report(url_o)
    assert comparable(got) == comparable(want)
    assert [a["users"] for a in got["arms"]] == [a["users"] for a in want["arms"]]
    assert all(a["model_version"] for a in got["arms"])
    stopped = report(url_c, "stop")
    assert stopped["status"] == "stopped"
    assert not cl.exists(*ck.arm("b").arm_keys_of(LANG))
    assert not any(cl.exists(g.group_model(LANG)) for g in ck.arm("b").slot_groups())
    assert all(cl.hget(g.group_experiment(LANG), "status") == b"stopped"
               for g in ck.slot_groups())
    user = users_of(cl, ck)[0]
    assert RecsClient(cl).for_user_tagged(LANG, user, 5)[2].arm == "default"
    assert report(url_c, "status")["status"] == "stopped"


def test_a_hide_during_an_experiment_refills_each_arm_as_on_one_redis(both):
    (_, cl, ck), (_, one, ok) = both
    users = users_of(one, ok)
    before = lists(one, ok, users)
    counts: dict[int, int] = {}
    for rows in before.values():
        for rid, _ in rows:
            counts[rid] = counts.get(rid, 0) + 1
    rid = max(counts, key=counts.get)
    for url, _, _ in both:
        assert main(["hide", str(rid), "--lang", LANG, "--redis-url", url]) == 0
    got, want = lists(cl, ck, users), lists(one, ok, users)
    assert got == want
    assert all(rid not in [x for x, _ in rows] for rows in got.values())
    assert got != before  # the holders were refilled (each from their arm's model)
