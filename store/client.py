"""A small read client for Python apps: the published lists and the model description.

Usage::

    from store.client import RecsClient

    recs = RecsClient("redis://localhost:6379/0")          # or RecsClient(redis.Redis(...))
    recs.similar("en", 489473, n=5)     # [(512001, 0.93), (77310, 0.91), ...] best first
    recs.recommend("en", "8b0c2f0e-...", n=10)              # [(resource_id, score), ...]
    recs.model_info("en")   # {"version": "...", "trained_at": "...", "factors": 40, ...}

Each call is one Redis command, so any language's client does the same::

    ZREVRANGE recs:en:similar:489473 0 4 WITHSCORES
    ZREVRANGE recs:en:recs:8b0c2f0e-... 0 9 WITHSCORES
    HGETALL recs:en:model

An id the published model does not cover (or a language with nothing published) gives an
empty list, so an app can fall back to, say, popular resources; ``model_info`` returns None
when nothing is published. Lists are replaced whole while a new model is published, so a
reader never sees a half-written one.
"""

from __future__ import annotations

import json
from typing import NamedTuple

import redis

from store.connection import connect
from store.keys import Keys

# Model hash fields with a known type; anything else comes back as a string.
_INT_FIELDS = {"factors", "iterations", "users", "items", "nnz", "seq", "top_n", "seed",
               "min_item_views", "max_item_views", "min_user_views"}
_FLOAT_FIELDS = {"regularization", "alpha", "train_seconds", "publish_seconds",
                 "test_fraction"}
_JSON_FIELDS = {"metrics", "filters"}


class Scored(NamedTuple):
    """One list entry: a resource id and its score (higher is better)."""

    resource_id: int
    score: float


class RecsClient:
    """Reads what ``recs train`` and ``recs update`` publish. Thread-safe (redis-py pools)."""

    def __init__(self, url_or_redis: str | redis.Redis, prefix: str = "recs") -> None:
        self.redis = connect(url_or_redis) if isinstance(url_or_redis, str) else url_or_redis
        self.keys = Keys(prefix)

    def similar(self, lang: str, resource_id: int | str, n: int = 10) -> list[Scored]:
        """The ``n`` resources most similar to ``resource_id``, best first (score = cosine)."""
        return self._top(self.keys.similar(lang, int(resource_id)), n)

    def recommend(self, lang: str, user_id: str, n: int = 10) -> list[Scored]:
        """The ``n`` best resources for ``user_id`` that they have not viewed, best first."""
        return self._top(self.keys.recs(lang, user_id), n)

    def model_info(self, lang: str) -> dict | None:
        """The published model's description (version, trained_at, hyperparameters, sizes,
        ``metrics`` when evaluated) with numbers as numbers; None if nothing is published."""
        raw = self.redis.hgetall(self.keys.model(lang))
        if not raw:
            return None
        return {_text(k): _typed(_text(k), _text(v)) for k, v in raw.items()}

    def _top(self, key: str, n: int) -> list[Scored]:
        if n <= 0:
            return []
        rows = self.redis.zrevrange(key, 0, n - 1, withscores=True)
        return [Scored(int(member), float(score)) for member, score in rows]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _typed(name: str, value: str):
    try:
        if name in _INT_FIELDS:
            return int(value)
        if name in _FLOAT_FIELDS:
            return float(value)
        if name in _JSON_FIELDS:
            return json.loads(value)
    except ValueError:
        pass
    return value
