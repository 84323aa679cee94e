"""Shared test set-up: counts written the way the consumer writes them, and a synthetic
model trained from them and published (the start of every online test)."""

from __future__ import annotations

import pandas as pd

from store.counts import Counts
from store.keys import Keys

KEYS = Keys()


def views_by_user(views: pd.DataFrame) -> dict[str, dict[int, int]]:
    """A views table (user_id, resource_id, views) as {user: {resource: views}}."""
    by_user: dict[str, dict[int, int]] = {}
    for user, rid, n in zip(views["user_id"], views["resource_id"], views["views"],
                            strict=True):
        by_user.setdefault(str(user), {})[int(rid)] = int(n)
    return by_user


def load_counts(client, views: pd.DataFrame, lang: str, *, keys: Keys = KEYS,
                batch: int = 400) -> dict[str, dict[int, int]]:
    """Write ``views`` as counts the way the consumer does (``Counts.apply``, ``batch`` users
    per call); returns them as {user: {resource: views}}."""
    by_user = views_by_user(views)
    counts = Counts(client, keys)
    users = list(by_user.items())
    for s in range(0, len(users), batch):
        assert counts.apply(keys.offsets("test", "views"), [],
                            {lang: dict(users[s:s + batch])}) == {}
    return by_user


def publish_views(client, views: pd.DataFrame, lang: str, settings, *, keys: Keys = KEYS,
                  **publish_options) -> dict[str, dict[int, int]]:
    """``load_counts`` then ``trainer.pipeline.retrain.train_language``, which must publish; returns
    the counts written, as {user: {resource: views}}."""
    from trainer.pipeline.retrain import train_language

    by_user = load_counts(client, views, lang, keys=keys)
    result = train_language(client, keys, lang, settings, publish_options=publish_options or None)
    assert result.outcome == "published", result.message
    return by_user
