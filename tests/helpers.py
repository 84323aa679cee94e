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


def assert_top_k(got, score_of, tol: float = 1e-5) -> None:
    """``got`` (ids, best first) is a best-first top-k of ``score_of`` ({id: score} over
    every candidate), ties within ``tol`` in any order: scores never rise along ``got``, no
    id is listed twice, and no candidate left out scores above the last one listed. For
    lists whose order between near-equal scores is legitimately arbitrary (or rounded
    differently by two computations), and nothing looser."""
    got = [int(i) for i in got]
    assert len(set(got)) == len(got), f"an id listed twice: {got}"
    scores = [float(score_of[i]) for i in got]
    assert all(b <= a + tol for a, b in zip(scores[:-1], scores[1:], strict=True)), (got, scores)
    if got:
        floor = scores[-1]
        above = {i: s for i, s in score_of.items() if int(i) not in set(got) and s > floor + tol}
        assert not above, f"left out but scoring above {floor}: {above}"
