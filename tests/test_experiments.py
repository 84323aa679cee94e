"""A/B experiments against a real redis-server: assignment, the commands, every arm trained
and published, each user's list from their arm, fold-ins into the arm's model, take-downs
and forgets in every arm."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from consumers.updater import Updater, UpdaterConfig
from recs.cli import main
from store.control import Control
from store.control_op import ControlOp
from store.counts import Counts
from store.experiments import assign, read_experiment, running
from store.keys import Keys
from store.published_model import read_published_items
from tests.helpers import assert_top_k, load_counts
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.synth import generate
from trainer.pipeline.retrain import train_language
from trainer.pipeline.takedown import settle
from trainer.settings import RetrainConfig

KEYS = Keys()
N = 10
FILTERS = FilterConfig(min_item_views=20, max_item_views=0, min_user_views=3)


@pytest.fixture(scope="module")
def data():
    return generate(n_users=400, n_resources=80, langs=("en",), seed=11)


def settings(tmp_path, evaluate=False) -> RetrainConfig:
    return RetrainConfig(filters=FILTERS, spec=ModelSpec(als=AlsConfig(factors=8, iterations=5)),
                         top_n=N, model_dir=str(tmp_path / "models"), evaluate=evaluate)


def cli(server, *args) -> int:
    return main(["experiment", "--redis-url", server.url, *map(str, args)])


def start(server, arms="a=als:1,b=ease:1", *extra) -> int:
    return cli(server, "start", "--lang", "en", "--arms", arms, "--id", "exp1", *extra)


def members(client, key) -> list[int]:
    return [int(m) for m in client.zrevrange(key, 0, -1)]


# -- assignment -------------------------------------------------------------------------------


def test_assignment_is_the_documented_formula_stable_and_follows_the_weights():
    def formula(exp, user, weights):  # docs/CONTRACT.md, spelled out independently
        bucket = int(hashlib.sha1(f"{exp}:{user}".encode()).hexdigest()[:8], 16) % sum(weights)
        return int(np.searchsorted(np.cumsum(weights), bucket, side="right"))

    users = [f"user-{i}" for i in range(20000)]
    got = [assign("e1", u, [1, 3]) for u in users]
    assert got == [formula("e1", u, [1, 3]) for u in users]
    assert got == [assign("e1", u, [1, 3]) for u in users]  # stable
    share = Counter(got)[1] / len(users)
    assert abs(share - 0.75) < 0.02
    # Another experiment id shuffles users independently of the first.
    other = [assign("e2", u, [1, 3]) for u in users]
    both = sum(1 for a, b in zip(got, other, strict=True) if a == b == 1) / len(users)
    assert abs(both - 0.75 * 0.75) < 0.02


# -- the commands -----------------------------------------------------------------------------


def test_start_status_stop_promote_and_one_experiment_per_language(redis_server, redis_client,
                                                                   capsys, tmp_path):
    redis_client.hset(KEYS.settings("en"), mapping={"model": "als", "factors": "8"})
    assert start(redis_server, "a=als:1,b=ease:3") == 0
    e = running(redis_client, KEYS, "en")
    assert e.id == "exp1" and [a.name for a in e.arms] == ["a", "b"]
    assert e.arms[1].settings["model"] == "ease" and e.arms[1].weight == 3
    assert start(redis_server, "x=als:1,y=als:1") == 2
    assert "exp1 is running" in capsys.readouterr().err
    assert cli(redis_server, "status", "--lang", "en", "--json") == 0
    assert json.loads(capsys.readouterr().out)["status"] == "running"
    assert cli(redis_server, "promote", "nope", "--lang", "en") == 2
    assert "no arm 'nope'" in capsys.readouterr().err
    redis_client.hset(KEYS.settings("en"), "factors", "99")  # resolved at start: no effect
    assert cli(redis_server, "promote", "b", "--lang", "en") == 0
    assert read_experiment(redis_client, KEYS, "en").status == "promoted"
    stored = {k.decode(): v.decode() for k, v in redis_client.hgetall(KEYS.settings("en")).items()}
    assert stored["model"] == "ease" and stored["factors"] == "8"  # tuned rest kept
    assert stored["promoted_from"] == "exp1/b"
    assert cli(redis_server, "stop", "--lang", "en") == 2  # nothing runs now
    settings_file = tmp_path / "s.json"
    settings_file.write_text(json.dumps({"model": "als", "factors": 4}))
    assert start(redis_server, f"c=tuned:1,d={settings_file}:1") == 0
    assert running(redis_client, KEYS, "en").arms[1].settings == {"model": "als", "factors": 4}
    assert cli(redis_server, "stop", "--lang", "en") == 0
    assert read_experiment(redis_client, KEYS, "en").status == "stopped"


@pytest.mark.parametrize("arms, message", [
    ("", "at least two arms"),
    ("a=als:1", "1 arm(s)"),
    ("a=als:1,a=ease:1", "given twice"),
    ("a=als:0,b=ease:1", "weight '0'"),
    ("a=als:x,b=ease:1", "weight 'x'"),
    ("a=als,b=ease:1", "not NAME=SPEC:WEIGHT"),
    ("default=als:1,b=ease:1", "not 'default'"),
    ("A B=als:1,b=ease:1", "arm name"),
    ("a=nothing.json:1,b=ease:1", "no such file"),
    ("a=tuned:1,b=ease:1", "no tuned settings"),
])
def test_bad_arms_are_one_line_and_exit_2(redis_server, redis_client, capsys, arms, message):
    assert start(redis_server, arms) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert not redis_client.exists(KEYS.experiment("en"))


# -- training, updating, take-downs -------------------------------------------------------------


def trained(server, client, data, tmp_path, arms="a=als:1,b=ease:1", evaluate=False):
    load_counts(client, data.views_for("en"), "en")
    assert start(server, arms) == 0
    result = train_language(client, KEYS, "en", settings(tmp_path, evaluate))
    assert result.outcome == "published"
    return running(client, KEYS, "en")


def arm_users(client, experiment) -> dict[str, list[str]]:
    users = sorted(m.decode() for m in client.smembers(KEYS.published_users("en")))
    out: dict[str, list[str]] = {}
    for u in users:
        out.setdefault(experiment.arm_of(u).name, []).append(u)
    return out


def ease_scores(client, user: str, keys: Keys) -> dict[int, float]:
    """The user's exact EASE scores from the arm's published rows (viewed excluded)."""
    pub = read_published_items(client, keys, "en")
    version = pub.version
    ids = pub.item_ids.astype(np.int64)
    views = {int(k): float(v) for k, v in client.hgetall(KEYS.views("en", user)).items()}
    rows = {int(k): np.frombuffer(v, "<f4") for k, v in
            client.hgetall(keys.ease_rows("en", version)).items()}
    total = np.zeros(len(ids))
    for rid, count in views.items():
        if rid in rows:
            total += rows[rid] * (1.0 if pub.meta.get("ease_scaling") == "binary"
                                  else np.log1p(count))
    return {int(i): float(s) for i, s in zip(ids, total, strict=True) if int(i) not in views}


def test_train_publishes_each_arm_and_each_user_gets_their_arms_list(
        redis_server, redis_client, data, tmp_path):
    e = trained(redis_server, redis_client, data, tmp_path, evaluate=True)
    default = {k.decode(): v.decode() for k, v in redis_client.hgetall(KEYS.model("en")).items()}
    arm_b = {k.decode(): v.decode()
             for k, v in redis_client.hgetall(KEYS.arm("b").model("en")).items()}
    assert default["model"] == "als" and default["arm"] == "a" and default["experiment"] == "exp1"
    assert arm_b["model"] == "ease" and arm_b["arm"] == "b" and json.loads(arm_b["metrics"])
    groups = arm_users(redis_client, e)
    assert len(groups["a"]) > 100 and len(groups["b"]) > 100
    for user in groups["b"][:20]:  # an EASE list: no factors, the arm's B rows
        assert not redis_client.get(KEYS.factors("en", user))
        assert_top_k(members(redis_client, KEYS.recs("en", user)),
                     ease_scores(redis_client, user, KEYS.arm("b")), tol=1e-3)
    for user in groups["a"][:20]:  # an ALS list from the default model's factors
        f = np.frombuffer(redis_client.get(KEYS.factors("en", user)), "<f4")
        pub = read_published_items(redis_client, KEYS, "en")
        viewed = {int(k) for k in redis_client.hkeys(KEYS.views("en", user))}
        scores = pub.item_factors.astype(np.float64) @ f
        assert_top_k(members(redis_client, KEYS.recs("en", user)),
                     {int(i): float(s) for i, s in zip(pub.item_ids, scores, strict=True)
                      if int(i) not in viewed}, tol=1e-4)
    # Similar lists are the default arm's only.
    assert not list(redis_client.scan_iter(match="recs:en:_arm:b:similar:*"))


def test_update_folds_each_user_into_their_arms_model(redis_server, redis_client, data,
                                                      tmp_path):
    e = trained(redis_server, redis_client, data, tmp_path)
    groups = arm_users(redis_client, e)
    pub = read_published_items(redis_client, KEYS, "en")
    new = int(pub.item_ids[0])
    changed = {groups["a"][0]: {new: 5}, groups["b"][0]: {new: 5}}
    Counts(redis_client, KEYS).apply(KEYS.offsets("t", "v"), [], {"en": changed})
    updater = Updater(redis_client, UpdaterConfig(top_n=N))
    assert updater.drain() >= 2  # with the filtered-out users the retrain queued
    b_user = groups["b"][0]
    assert not redis_client.get(KEYS.factors("en", b_user))  # EASE: no factors
    assert_top_k(members(redis_client, KEYS.recs("en", b_user)),
                 ease_scores(redis_client, b_user, KEYS.arm("b")), tol=1e-3)
    assert new not in members(redis_client, KEYS.recs("en", b_user))
    a_user = groups["a"][0]
    assert len(redis_client.get(KEYS.factors("en", a_user))) == 4 * 8


def test_hide_and_forget_reach_every_arm(redis_server, redis_client, data, tmp_path):
    other = tmp_path / "b.json"  # another ALS: the default model's refill would not fit it
    other.write_text(json.dumps({"model": "als", "factors": 4, "iterations": 5}))
    e = trained(redis_server, redis_client, data, tmp_path, arms=f"a=als:1,b={other}:1")
    groups = arm_users(redis_client, e)
    counts = Counter(m for u in groups["b"] for m in members(redis_client, KEYS.recs("en", u)))
    rid = counts.most_common(1)[0][0]
    holders = [u for u in groups["b"] if rid in members(redis_client, KEYS.recs("en", u))]
    Control(redis_client, KEYS).run([ControlOp("hide", str(rid), "en")])
    settle(redis_client, KEYS, "en")
    arm_pub = read_published_items(redis_client, KEYS.arm("b"), "en")
    for user in holders:  # refilled from arm b's model, not the default's
        got = members(redis_client, KEYS.recs("en", user))
        f = np.frombuffer(redis_client.get(KEYS.factors("en", user)), "<f4")
        viewed = {int(k) for k in redis_client.hkeys(KEYS.views("en", user))}
        scores = arm_pub.item_factors.astype(np.float64) @ f
        assert rid not in got and len(got) == N
        assert_top_k(got, {int(i): float(s) for i, s in zip(arm_pub.item_ids, scores,
                                                            strict=True)
                           if int(i) not in viewed | {rid}}, tol=1e-4)
    gone = groups["b"][1]
    assert main(["forget", "--redis-url", redis_server.url, gone]) == 0
    assert not [k for k in redis_client.scan_iter(count=1000) if gone.encode() in k]


# -- reading a list with its model version and arm ------------------------------------------------


def test_a_list_is_read_with_its_arm_and_model_version_in_one_multi(
        redis_server, redis_client, data, tmp_path, serve_http):
    from urllib.request import urlopen

    from recs.serve import ServeConfig
    from store.client import RecsClient

    client = RecsClient(redis_client)
    load_counts(redis_client, data.views_for("en"), "en")
    train_language(redis_client, KEYS, "en", settings(tmp_path))
    user = next(iter(redis_client.smembers(KEYS.published_users("en")))).decode()
    before = redis_client.hget(KEYS.model("en"), "version").decode()
    rows, source, tag = client.for_user_tagged("en", user, 5)
    assert source == "personal" and len(rows) == 5
    assert (tag.model_version, tag.arm, tag.experiment) == (before, "default", None)

    assert start(redis_server, "a=als:1,b=ease:1") == 0
    e = running(redis_client, KEYS, "en")
    groups = {}
    for u in sorted(m.decode() for m in redis_client.smembers(KEYS.published_users("en"))):
        groups.setdefault(e.arm_of(u).name, u)
    # Before arm b's model is published its users get (and are told) the default arm.
    assert client.for_user_tagged("en", groups["b"], 5)[2].arm == "a"
    train_language(redis_client, KEYS, "en", settings(tmp_path))
    versions = {"a": redis_client.hget(KEYS.model("en"), "version").decode(),
                "b": redis_client.hget(KEYS.arm("b").model("en"), "version").decode()}
    base = serve_http(ServeConfig(redis_url=redis_server.url))
    for arm, user in groups.items():
        rows, source, tag = client.for_user_tagged("en", user, 5)
        assert (tag.model_version, tag.arm, tag.experiment) == (versions[arm], arm, "exp1")
        assert [r.resource_id for r in rows] == members(redis_client, KEYS.recs("en", user))[:5]
        with urlopen(f"{base}/v1/en/users/{user}/recommendations?n=5") as answer:
            body = json.loads(answer.read())
        assert (body["model_version"], body["arm"], body["experiment"]) == (
            versions[arm], arm, "exp1")
    redis_client.script_flush()  # as after a Redis restart: both readers load it again
    assert client.for_user_tagged("en", groups["b"], 5)[2].arm == "b"
    with urlopen(f"{base}/v1/en/users/{groups['b']}/recommendations?n=5") as answer:
        assert json.loads(answer.read())["arm"] == "b"
    assert cli(redis_server, "stop", "--lang", "en") == 0
    assert not redis_client.exists(KEYS.arm("b").model("en"))  # the arm's item side is freed
    assert client.for_user_tagged("en", groups["b"], 5)[2] == tag.__class__(
        versions["a"], "default", None)


def test_spark_executors_are_refused_while_an_experiment_runs(redis_server, redis_client,
                                                              data, tmp_path):
    from dataclasses import replace

    from core.errors import InputError

    load_counts(redis_client, data.views_for("en"), "en")
    assert start(redis_server) == 0
    base = settings(tmp_path)
    spark = replace(base, spec=replace(base.spec, als=replace(base.spec.als, engine="spark")),
                    spark_io="executors")
    with pytest.raises(InputError, match="--spark-io driver"):
        train_language(redis_client, KEYS, "en", spark)
    assert not redis_client.exists(KEYS.model("en"))
