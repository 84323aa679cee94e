"""Take-downs and forgetting against a real redis-server: ``recs hide`` empties every list at
once and refills it exactly, nothing brings a hidden resource back (the updater, a retrain, a
trainer that scored before the hide), ``recs unhide``, ``recs hidden``, ``recs forget`` (and a
forget racing a retrain)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumers.updater import Updater, UpdaterConfig
from recs.cli import main
from store.control import Control
from store.control_op import ControlOp
from store.counts import Counts
from store.keys import Keys
from store.settle import write_refilled
from tests.helpers import assert_top_k, load_counts
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.synth import generate
from trainer.pipeline.retrain import train_language
from trainer.pipeline.takedown import settle
from trainer.settings import RetrainConfig

pytestmark = pytest.mark.integration

KEYS = Keys()
N = 10
FILTERS = FilterConfig(min_item_views=20, max_item_views=0, min_user_views=3)


@pytest.fixture(scope="module")
def data():
    return generate(n_users=500, n_resources=100, langs=("en", "es"), seed=5)


def load(client, data, lang: str) -> None:
    load_counts(client, data.views_for(lang), lang)


def settings(tmp_path) -> RetrainConfig:
    return RetrainConfig(filters=FILTERS,
                         spec=ModelSpec("als", als=AlsConfig(factors=8, iterations=5)),
                         top_n=N, model_dir=str(tmp_path / "models"))


def train(client, tmp_path, lang="en", **publish_options):
    return train_language(client, KEYS, lang, settings(tmp_path),
                          publish_options=publish_options or None)


def members(client, key) -> list[int]:
    return [int(m) for m in client.zrevrange(key, 0, -1)]


def lists(client, lang="en", kind="users") -> dict[str, list[int]]:
    if kind == "users":
        ids = [m.decode() for m in client.smembers(KEYS.published_users(lang))]
        return {u: members(client, KEYS.recs(lang, u)) for u in ids}
    ids = [m.decode() for m in client.smembers(KEYS.published_items(lang))]
    return {i: members(client, KEYS.similar(lang, i)) for i in ids}


def most_listed(client, lang="en") -> int:
    counts: dict[int, int] = {}
    for recs in lists(client, lang).values():
        for m in recs:
            counts[m] = counts.get(m, 0) + 1
    return max(counts, key=counts.get)


def exact_user_scores(client, user: str, hidden: set[int], lang="en") -> dict[int, float]:
    """Every unviewed, unhidden resource -> the user's exact (float64) score from the
    published factors: the candidates the user's list must be the top N of."""
    ids = np.frombuffer(client.get(KEYS.item_ids(lang)), "<u4").astype(np.int64)
    items = np.frombuffer(client.get(KEYS.item_factors(lang)), "<f4").reshape(len(ids), -1)
    f = np.frombuffer(client.get(KEYS.factors(lang, user)), "<f4")
    scores = items.astype(np.float64) @ f.astype(np.float64)
    viewed = {int(k) for k in client.hkeys(KEYS.views(lang, user))}
    return {int(i): float(v) for i, v in zip(ids, scores, strict=True)
            if int(i) not in viewed | hidden}


def hide(server, *args) -> int:
    return main(["hide", "--redis-url", server.url, *map(str, args)])


def test_hide_empties_every_list_at_once_and_refills_them_exactly(redis_server, redis_client,
                                                                  data, tmp_path):
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    rid = most_listed(redis_client)
    holders = [u for u, recs in lists(redis_client).items() if rid in recs]
    similar_holders = [i for i, s in lists(redis_client, kind="items").items() if rid in s]
    assert len(holders) > 20 and similar_holders
    before_views = int(redis_client.hget(KEYS.item_views("en"), rid))

    assert hide(redis_server, rid, "--lang", "en", "--reason", "legal") == 0

    meta = json.loads(redis_client.hget(KEYS.hidden("en"), rid))
    assert meta["reason"] == "legal" and meta["ts"] > 0
    assert not redis_client.exists(KEYS.similar("en", rid))
    assert str(rid).encode() not in redis_client.smembers(KEYS.published_items("en"))
    for recs in lists(redis_client).values():
        assert rid not in recs
    for user in holders:  # refilled to N, exactly the next best (near-ties in any order)
        got = members(redis_client, KEYS.recs("en", user))
        assert len(got) == N
        assert_top_k(got, exact_user_scores(redis_client, user, {rid}), tol=1e-4)
    for item in similar_holders:
        got = members(redis_client, KEYS.similar("en", item))
        assert rid not in got and len(got) == N
    assert not redis_client.exists(KEYS.takedown_work("en"))
    # Its views are still counted (a restore needs them).
    assert int(redis_client.hget(KEYS.item_views("en"), rid)) == before_views
    Counts(redis_client, KEYS).apply(KEYS.offsets("t", "v"), [], {"en": {"u-new": {rid: 3}}})
    assert int(redis_client.hget(KEYS.item_views("en"), rid)) == before_views + 3


def test_a_hidden_resource_never_comes_back_through_update_or_retrain(redis_client, data,
                                                                      tmp_path):
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    rid = most_listed(redis_client)
    control = Control(redis_client, KEYS)
    control.run([ControlOp("hide", str(rid), "en")])
    settle(redis_client, KEYS, "en")
    # Everyone folded in again against the model that still has its factors.
    users = [m.decode() for m in redis_client.smembers(KEYS.published_users("en"))]
    redis_client.zadd(KEYS.dirty("en"), dict.fromkeys(users, 1))
    updater = Updater(redis_client, UpdaterConfig(top_n=N))
    assert updater.drain() >= len(users)
    for recs in lists(redis_client).values():
        assert rid not in recs
        assert len(recs) == N
    # A retrain leaves it out of the model altogether.
    train(redis_client, tmp_path)
    ids = np.frombuffer(redis_client.get(KEYS.item_ids("en")), "<u4")
    assert rid not in ids
    for recs in lists(redis_client).values():
        assert rid not in recs and len(recs) == N
    for s in lists(redis_client, kind="items").values():
        assert rid not in s
    assert not redis_client.exists(KEYS.similar("en", rid))


@pytest.mark.parametrize("when", ["similar", "recs"])
def test_a_hide_during_a_retrain_is_never_undone_by_that_retrain(redis_client, data, tmp_path,
                                                                 when):
    """The trainer scored its lists (rid included) before the hide; the lists it writes
    after the hide must not bring rid back, and stay N long."""
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    rid = most_listed(redis_client)
    hidden_at: list[int] = []

    def after_chunk(kind: str, done: int) -> None:
        if kind == when and not hidden_at:
            Control(redis_client, KEYS).run([ControlOp("hide", str(rid), "en")])
            settle(redis_client, KEYS, "en")
            hidden_at.append(done)

    train(redis_client, tmp_path, entries_per_call=50, calls_per_round_trip=1,
          after_chunk=after_chunk)
    assert hidden_at
    ids = np.frombuffer(redis_client.get(KEYS.item_ids("en")), "<u4")
    assert rid in ids  # this model was trained before the hide: it has the resource
    for recs in lists(redis_client).values():
        assert rid not in recs and len(recs) == N
    for s in lists(redis_client, kind="items").values():
        assert rid not in s and len(s) == N
    assert not redis_client.exists(KEYS.similar("en", rid))


def test_unhide_restores_its_similar_list_now_and_the_rest_at_the_next_retrain(
        redis_server, redis_client, data, tmp_path, capsys):
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    rid = most_listed(redis_client)
    own = members(redis_client, KEYS.similar("en", rid))
    assert hide(redis_server, rid, "--lang", "en", "--reason", "dmca") == 0
    assert main(["hidden", "--redis-url", redis_server.url, "--lang", "en", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(r["resource_id"], r["reason"]) for r in listed] == [(rid, "dmca")]

    assert main(["unhide", "--redis-url", redis_server.url, str(rid), "--lang", "en"]) == 0
    assert not redis_client.hexists(KEYS.hidden("en"), rid)
    assert members(redis_client, KEYS.similar("en", rid)) == own  # same model: same list
    assert main(["hidden", "--redis-url", redis_server.url, "--lang", "en", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == []
    train(redis_client, tmp_path)
    assert any(rid in recs for recs in lists(redis_client).values())


def test_hide_without_lang_hides_in_every_language(redis_server, redis_client, data,
                                                   tmp_path):
    load(redis_client, data, "en")
    load(redis_client, data, "es")
    for lang in ("en", "es"):
        train(redis_client, tmp_path, lang)
    en, es = most_listed(redis_client, "en"), most_listed(redis_client, "es")
    assert hide(redis_server, en, es) == 0
    for lang in ("en", "es"):
        assert {int(r) for r in redis_client.hkeys(KEYS.hidden(lang))} == {en, es}
        for recs in lists(redis_client, lang).values():
            assert en not in recs and es not in recs


def test_bad_input_is_one_line_and_exit_2(redis_server, capsys):
    assert hide(redis_server, "abc") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resource id 'abc'" in err[0]
    assert main(["hide", "1", "--lang", "English", "--redis-url", redis_server.url]) == 2


# -- forgetting -----------------------------------------------------------------------------


def traces(client, user: str) -> list[str]:
    """Every key or queue entry that still names ``user``, in any language."""
    found = []
    for lang in ("en", "es"):
        for key in (KEYS.views(lang, user), KEYS.factors(lang, user), KEYS.recs(lang, user)):
            if client.exists(key):
                found.append(key)
        for key in (KEYS.dirty(lang), KEYS.touched(lang), KEYS.claims(lang)):
            if client.zscore(key, user) is not None:
                found.append(key)
        for key in (KEYS.users(lang), KEYS.published_users(lang)):
            if client.sismember(key, user):
                found.append(key)
    for key in client.scan_iter(count=1000):
        if user.encode() in key:
            found.append(key.decode())
    return sorted(set(found))


def test_forget_removes_every_trace_in_every_language_exactly_once(redis_server, redis_client,
                                                                   data, tmp_path):
    load(redis_client, data, "en")
    load(redis_client, data, "es")
    for lang in ("en", "es"):
        train(redis_client, tmp_path, lang)
    user = data.views_for("en")["user_id"].iloc[0]
    counts = Counts(redis_client, KEYS)
    counts.apply(KEYS.offsets("t", "v"), [], {"en": {user: {7: 2}}, "es": {user: {9: 1}}})
    redis_client.zadd(KEYS.claims("en"), {user: 1})
    assert redis_client.exists(KEYS.recs("en", user))
    totals = {lang: {k: int(v) for k, v in redis_client.hgetall(KEYS.item_views(lang)).items()}
              for lang in ("en", "es")}
    theirs = {lang: {k: int(v) for k, v in redis_client.hgetall(KEYS.views(lang, user)).items()}
              for lang in ("en", "es")}
    assert theirs["en"] and theirs["es"]

    for _ in range(2):  # a second forget changes nothing
        assert main(["forget", "--redis-url", redis_server.url, user]) == 0
        assert traces(redis_client, user) == []
        for lang in ("en", "es"):
            now = {k: int(v) for k, v in redis_client.hgetall(KEYS.item_views(lang)).items()}
            expected = {k: v - theirs[lang].get(k, 0) for k, v in totals[lang].items()}
            assert now == {k: v for k, v in expected.items() if v > 0}
    # A retrain does not bring them back.
    train(redis_client, tmp_path, "en")
    assert traces(redis_client, user) == []


def test_a_forget_racing_a_retrain_is_not_undone_by_it(redis_client, data, tmp_path):
    """The trainer read the counts before the forget: it must write nothing for the user,
    whether their list was due before or after the forget, and the next publish drops the
    tombstone."""
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    users = sorted(m.decode() for m in redis_client.smembers(KEYS.published_users("en")))
    early, late = users[0], users[-1]  # lists are written in user id order
    # Pending for the updater when the trainer reads the counts: the hand-over after the
    # publish must not queue them again.
    redis_client.zadd(KEYS.dirty("en"), {early: 10**6, late: 10**6})
    forgotten: list[str] = []

    def after_chunk(kind: str, done: int) -> None:
        if kind == "recs" and not forgotten:
            Control(redis_client, KEYS).run([ControlOp("forget", early, "en"),
                                             ControlOp("forget", late, "en")])
            forgotten.extend([early, late])

    result = train(redis_client, tmp_path, entries_per_call=50, calls_per_round_trip=1,
                   after_chunk=after_chunk)
    assert result.outcome == "published" and forgotten
    for user in (early, late):
        assert traces(redis_client, user) == []
    assert redis_client.zcard(KEYS.forgotten("en")) == 2
    train(redis_client, tmp_path)  # read after the forget: the tombstones are done
    assert redis_client.zcard(KEYS.forgotten("en")) == 0
    for user in (early, late):
        assert traces(redis_client, user) == []
    # A returning user with new views is a new user: counted and folded in again.
    Counts(redis_client, KEYS).apply(KEYS.offsets("t", "v"), [], {"en": {early: {
        int(r): 1 for r in np.frombuffer(redis_client.get(KEYS.item_ids("en")), "<u4")[:3]}}})
    Updater(redis_client, UpdaterConfig(top_n=N)).drain()
    assert len(members(redis_client, KEYS.recs("en", early))) == N


def test_a_list_rewritten_since_its_factors_were_read_is_only_cleaned(redis_client, data,
                                                                      tmp_path):
    """The refill writes a list only if the model version and the user's factors are those
    it was computed from; otherwise (an updater or a retrain rewrote the user meanwhile) it
    only removes hidden members."""
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    rid = most_listed(redis_client)
    user = sorted(u for u, recs in lists(redis_client).items() if rid in recs)[0]
    before = members(redis_client, KEYS.recs("en", user))
    factors = redis_client.get(KEYS.factors("en", user))
    version = redis_client.hget(KEYS.model("en"), "version").decode()
    Control(redis_client, KEYS).run([ControlOp("hide", str(rid), "en")])
    computed = np.array([[7, 8]]), np.array([[2.0, 1.0]], dtype=np.float32)
    for stale_version, stale_factors in ((version, bytes(len(factors))), ("old", factors)):
        assert write_refilled(redis_client, KEYS, "en", version=stale_version, users=True,
                              ids=[user], members=computed[0], scores=computed[1], top_n=N,
                              factors=[stale_factors]) == (0, 1)
        assert members(redis_client, KEYS.recs("en", user)) == [m for m in before if m != rid]
    assert write_refilled(redis_client, KEYS, "en", version=version, users=True, ids=[user],
                          members=computed[0], scores=computed[1], top_n=N,
                          factors=[factors]) == (1, 0)
    assert members(redis_client, KEYS.recs("en", user)) == [7, 8]


def test_without_a_published_model_lists_are_cleaned(redis_client):
    redis_client.zadd(KEYS.recs("en", "u1"), {"5": 2.0, "6": 1.0})
    redis_client.sadd(KEYS.published_users("en"), "u1")
    redis_client.zadd(KEYS.similar("en", 9), {"5": 0.9, "7": 0.8})
    redis_client.sadd(KEYS.published_items("en"), "9")
    redis_client.sadd(KEYS.langs, "en")
    Control(redis_client, KEYS).run([ControlOp("hide", "5")])
    report = settle(redis_client, KEYS, "en")
    assert (report.users_cleaned, report.similar_cleaned) == (1, 1)
    assert members(redis_client, KEYS.recs("en", "u1")) == [6]
    assert members(redis_client, KEYS.similar("en", 9)) == [7]


def test_with_an_ease_model_hidden_resources_leave_every_list_too(redis_client, data,
                                                                   tmp_path):
    """EASE lists cannot be recomputed from factors: they are cleaned (never refilled with
    ALS scores), and a hide during an EASE publish is dropped by the same scripts."""
    from dataclasses import replace

    from trainer.config import ModelSpec

    load(redis_client, data, "en")
    ease = replace(settings(tmp_path), spec=ModelSpec(model="ease"))
    train_language(redis_client, KEYS, "en", ease)
    rid = most_listed(redis_client)
    before = lists(redis_client)
    Control(redis_client, KEYS).run([ControlOp("hide", str(rid), "en")])
    report = settle(redis_client, KEYS, "en")
    assert report.users_refilled == 0 and report.users_cleaned == sum(
        rid in recs for recs in before.values())
    for user, recs in lists(redis_client).items():
        assert recs == [m for m in before[user] if m != rid]
    other = [m for m in before[next(iter(before))] if m != rid][0]

    def after_chunk(kind: str, done: int) -> None:
        if kind == "recs" and not redis_client.hexists(KEYS.hidden("en"), other):
            Control(redis_client, KEYS).run([ControlOp("hide", str(other), "en")])
            settle(redis_client, KEYS, "en")

    train_language(redis_client, KEYS, "en", ease, publish_options={
        "entries_per_call": 50, "calls_per_round_trip": 1, "after_chunk": after_chunk})
    for recs in lists(redis_client).values():
        assert rid not in recs and other not in recs
