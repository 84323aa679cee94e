"""Views keys broken by hand (wrong type, values that are not counts) never stop ``recs update``
or ``recs train``, and are never trained on silently; against a real redis-server."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recs.cli import main
from store.keys import Keys
from store.snapshot import read_views
from tests.test_updater import add_views, publish, stored_recs, updater

pytestmark = pytest.mark.integration

KEYS = Keys()


def test_the_issue_reproduction_a_wrong_typed_key_is_skipped_and_reported(redis_client,
                                                                         caplog):
    client = redis_client
    rng = np.random.default_rng(3)
    item_ids = np.arange(1, 41)
    publish(client, item_ids, rng.normal(size=(40, 8)).astype(np.float32))
    add_views(client, {"a": {1: 2, 2: 1}, "b": {3: 1}})
    client.zadd(KEYS.recs("en", "x"), {"7": 1.0})  # x's list from an earlier model
    client.set(KEYS.views("en", "x"), 1)
    client.zadd(KEYS.dirty("en"), {"x": 9})
    up = updater(client)
    assert up.drain(timeout=20) == 3
    assert stored_recs(client, "a") and stored_recs(client, "b")
    assert stored_recs(client, "x") == [7]  # left as it was
    assert client.zcard(KEYS.dirty("en")) == 0 and client.zcard(KEYS.claims("en")) == 0
    assert any(r.levelno == logging.ERROR and r.fields["user"] == "x"
               for r in caplog.records if getattr(r, "fields", None))
    skipped = up.metrics.registry.get_sample_value(
        "recs_update_skipped_users_total", {"lang": "en", "reason": "bad_views_key"})
    assert skipped == 1
    assert up.metrics.registry.get_sample_value(
        "recs_update_users_total", {"lang": "en", "outcome": "updated"}) == 2


def test_the_trainer_reader_skips_garbage_and_names_each_key(redis_client, caplog):
    client = redis_client
    add_views(client, {f"u{i}": {1: 1, 2: 3} for i in range(300)})
    poisoned = {"wrongtype": None, "negative": b"-4", "text": b"abc", "float": b"2.5",
                "overflow": b"99999999999999999999", "zero": b"0"}
    for user, value in poisoned.items():
        if value is None:
            client.set(KEYS.views("en", user), "1")
        else:
            client.hset(KEYS.views("en", user), mapping={"5": value, "6": 2})
        client.sadd(KEYS.users("en"), user)
    client.hset(KEYS.views("en", "badfield"), mapping={"five": 1, "6": 2})
    client.sadd(KEYS.users("en"), "badfield")
    with caplog.at_level(logging.WARNING):
        df = read_views(client, KEYS, "en")
    by_user = {u: dict(zip(g["resource_id"], g["views"], strict=True))
               for u, g in df.groupby("user_id", observed=True)}
    assert by_user["u7"] == {1: 1, 2: 3} and len(by_user) == 300 + 6
    for user in ("negative", "text", "float", "overflow", "zero", "badfield"):
        assert by_user[user] == {6: 2}
    assert "wrongtype" not in by_user
    named = {r.fields["key"] for r in caplog.records if getattr(r, "fields", None)}
    assert named == {KEYS.views("en", u) for u in [*poisoned, "badfield"]}


def test_recs_train_goes_on_past_a_poisoned_key(redis_server, redis_client, tmp_path, capsys):
    rng = np.random.default_rng(5)
    add_views(redis_client, {f"u{i}": {int(r): 1 for r in rng.choice(np.arange(1, 30), 6,
                                                                     replace=False)}
                             for i in range(200)})
    redis_client.hset(KEYS.views("en", "u3"), "1", "abc")
    redis_client.set(KEYS.views("en", "u4"), "x")
    code = main(["train", "--redis-url", redis_server.url, "--model-dir",
                 str(tmp_path / "models"), "--lang", "en", "--min-item-views", "1",
                 "--min-user-views", "1", "--factors", "4", "--iterations", "2",
                 "--max-item-views", "0"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert KEYS.views("en", "u3") in err and KEYS.views("en", "u4") in err
    assert redis_client.hget(KEYS.model("en"), "version")


def test_the_updater_ignores_fields_that_are_not_counts(redis_client, caplog):
    client = redis_client
    rng = np.random.default_rng(4)
    publish(client, np.arange(1, 41), rng.normal(size=(40, 8)).astype(np.float32))
    add_views(client, {"clean": {2: 3}, "dirty": {2: 3}})
    client.hset(KEYS.views("en", "dirty"), mapping={"1": "-4", "5": "nan", "6": "1e300"})
    assert updater(client).drain(timeout=20) == 2
    assert client.get(KEYS.factors("en", "dirty")) == client.get(KEYS.factors("en", "clean"))
    assert sum("not a count" in m for m in caplog.messages) == 3
