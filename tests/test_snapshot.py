"""Reading the counts back out of Redis (store.snapshot), written by the consumer's write path."""

import numpy as np
import pandas as pd
import pytest

from store.counts import Counts
from store.keys import Keys
from store.snapshot import read_languages, read_pending, read_seq, read_views
from trainer.data.matrix import build_matrix

pytestmark = pytest.mark.integration

KEYS = Keys()


def _apply(client, views):
    assert Counts(client, KEYS).apply(KEYS.offsets("test", "views"), [], views) == {}


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(user_id=df["user_id"].astype(str))
    return df.sort_values(["user_id", "resource_id"]).reset_index(drop=True)


def test_read_views_returns_every_count_across_chunks(redis_client):
    rng = np.random.default_rng(5)
    expected = {}
    for u in range(57):
        user = f"user-{u}-ñ" if u % 10 == 0 else f"{u:08x}-a0b1"
        n = int(rng.integers(1, 30))
        items = rng.choice(np.arange(1, 10**6), n, replace=False)
        expected[user] = {int(i): int(rng.integers(1, 300)) for i in items}
    expected["big"] = {4294967295: 10000, 1: 123456789}
    # Two batches for some users: the counts add up.
    _apply(redis_client, {"en": {u: v for u, v in expected.items()}})
    _apply(redis_client, {"en": {"big": {1: 1}}, "es": {"other": {7: 2}}})
    expected["big"][1] += 1

    df = read_views(redis_client, KEYS, "en", chunk=4, chunks_per_round_trip=3)
    assert list(df.columns) == ["user_id", "resource_id", "views"]
    assert df["resource_id"].dtype == np.int64 and df["views"].dtype == np.int64
    want = pd.DataFrame(
        [(u, r, c) for u, items in expected.items() for r, c in items.items()],
        columns=["user_id", "resource_id", "views"],
    )
    got, want = _sorted(df), _sorted(want)
    assert got["user_id"].astype(str).tolist() == want["user_id"].tolist()
    assert got["resource_id"].tolist() == want["resource_id"].tolist()
    assert got["views"].tolist() == want["views"].tolist()

    # The matrix built from it has its users in id order, as from a CSV extract.
    users = build_matrix(df).users.ids
    assert users.tolist() == sorted(expected)

    assert read_languages(redis_client, KEYS) == ["en", "es"]
    assert read_seq(redis_client, KEYS, "en") == 2
    assert read_seq(redis_client, KEYS, "es") == 1
    assert read_seq(redis_client, KEYS, "pt") == 0


def test_read_views_of_an_unknown_language_is_empty(redis_client):
    df = read_views(redis_client, KEYS, "pt")
    assert df.empty and list(df.columns) == ["user_id", "resource_id", "views"]


def test_read_views_skips_a_user_whose_hash_is_gone(redis_client):
    _apply(redis_client, {"en": {"a": {1: 2}, "b": {2: 3}, "c": {3: 4}}})
    redis_client.delete(KEYS.views("en", "b"))
    df = _sorted(read_views(redis_client, KEYS, "en", chunk=2))
    assert df["user_id"].astype(str).tolist() == ["a", "c"]
    assert df["views"].tolist() == [2, 4]


def test_read_pending_lists_dirty_and_claimed_users(redis_client):
    _apply(redis_client, {"en": {"a": {1: 2}, "b": {2: 3}}})
    redis_client.zrem(KEYS.dirty("en"), "b")
    redis_client.zadd(KEYS.claims("en"), {"c": 1})
    assert read_pending(redis_client, KEYS, "en") == ["a", "c"]
