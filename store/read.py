"""How published values are read back: the decoding rules both read clients share.

``store.client.RecsClient`` (synchronous, for apps and the CLI) and
``store.aclient.AsyncRecsClient`` (asyncio, for ``recs serve``) send the same commands and
hand their raw replies to these pure functions, so the two can never disagree on what a list,
a model hash or a resource's details mean. Nothing here talks to Redis.

Invariants:
- a list is ``ZREVRANGE key 0 n-1 WITHSCORES``, best first; ``n <= 0`` asks nothing;
- a reply may be bytes or str (decoding and non-decoding clients alike);
- resource details are the JSON objects ``store.resources`` writes (title, folder, subject,
  tags, all strings); a missing or damaged entry reads as None, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import orjson

# Model hash fields with a known type; anything else comes back as a string.
INT_FIELDS = {"factors", "iterations", "users", "items", "nnz", "seq", "top_n", "seed",
              "min_item_views", "max_item_views", "min_user_views"}
FLOAT_FIELDS = {"regularization", "alpha", "train_seconds", "publish_seconds",
                "test_fraction"}
JSON_FIELDS = {"metrics", "filters"}
DETAIL_FIELDS = ("title", "folder", "subject", "tags")
"""The resources extract's columns after ``id``, as stored per resource."""


class Scored(NamedTuple):
    """One list entry: a resource id and its score (higher is better)."""

    resource_id: int
    score: float


def text(value) -> str:
    """A reply element as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def top_range(n: int) -> tuple[int, int] | None:
    """The ZREVRANGE start/stop for the ``n`` best entries; None when nothing is asked."""
    return (0, n - 1) if n > 0 else None


def decode_scored(rows: Iterable[tuple]) -> list[Scored]:
    """``ZREVRANGE ... WITHSCORES`` rows as ``Scored``; members are resource ids."""
    return [Scored(int(member), float(score)) for member, score in rows]


def typed_field(name: str, value: str):
    """One model hash field as its type (int, float, parsed JSON); else the string."""
    try:
        if name in INT_FIELDS:
            return int(value)
        if name in FLOAT_FIELDS:
            return float(value)
        if name in JSON_FIELDS:
            return json.loads(value)
    except ValueError:
        pass
    return value


def decode_model(raw: Mapping) -> dict | None:
    """``HGETALL model`` as a typed dict; None when nothing is published."""
    if not raw:
        return None
    return {text(k): typed_field(text(k), text(v)) for k, v in raw.items()}


def encode_details(details: Mapping[str, object]) -> str:
    """One resource's stored value: a JSON object of the detail fields (strings)."""
    return orjson.dumps({f: str(details.get(f, "") or "") for f in DETAIL_FIELDS}).decode()


def decode_details(value) -> dict | None:
    """One stored resource value as ``{title, folder, subject, tags}``; None if absent or
    not the JSON object ``encode_details`` writes."""
    if value is None:
        return None
    try:
        obj = orjson.loads(value)  # a list's details are decoded per request: orjson is fast
    except (ValueError, TypeError):
        return None
    if not isinstance(obj, dict):
        return None
    return {f: str(obj.get(f, "") or "") for f in DETAIL_FIELDS}


def decode_views(raw: Mapping) -> dict[int, int]:
    """``HGETALL views`` (resource_id -> count) as ints; fields that are not both integers
    are left out (the counts are written only by the consumer's script)."""
    out = {}
    for k, v in raw.items():
        try:
            out[int(k)] = int(v)
        except ValueError:
            continue
    return out
