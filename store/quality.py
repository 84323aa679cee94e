"""The tuned settings hash and the quality history list (docs/CONTRACT.md).

- ``settings(lang)``: a HASH of flat fields (``model``, ``factors``, ... ``tuned_at``),
  replaced whole by :func:`write_settings` (DEL + HSET in one MULTI, so a reader never sees
  half of two tunings).
- ``history(lang)``: a LIST of JSON objects, oldest first; :func:`append_history` pushes one
  and trims to the newest ``HISTORY_CAP`` in the same MULTI. Readers take a record that is
  not a JSON object as absent, never as an error; :func:`history_record` gives every record,
  flat (as the trainer writes it) or with nested ``metrics`` (as the model hash has them),
  one shape, the one ``recs serve`` shows.
"""

from __future__ import annotations

import json

import redis
import redis.asyncio as aioredis

from store.keys import Keys

HISTORY_CAP = 500
"""Records kept per language (an hourly trainer: three weeks)."""


def write_settings(client: redis.Redis, keys: Keys, lang: str, settings: dict) -> None:
    fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in settings.items()}
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.settings(lang))
    if fields:
        pipe.hset(keys.settings(lang), mapping=fields)
    pipe.execute()


def read_settings(client: redis.Redis, keys: Keys, lang: str) -> dict:
    """The stored fields as strings (empty when never tuned); callers convert and check."""
    raw = client.hgetall(keys.settings(lang))
    return {_text(k): _text(v) for k, v in raw.items()}


def append_history(client: redis.Redis, keys: Keys, lang: str, entry: dict,
                   cap: int = HISTORY_CAP) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.rpush(keys.history(lang), json.dumps(entry, sort_keys=True))
    pipe.ltrim(keys.history(lang), -cap, -1)
    pipe.execute()


def read_history(client: redis.Redis, keys: Keys, lang: str) -> list[dict]:
    """Every record, oldest first; a record that is not a JSON object is skipped."""
    out = []
    for raw in client.lrange(keys.history(lang), 0, -1):
        try:
            entry = json.loads(raw)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


async def read_history_records(client: aioredis.Redis, key: str) -> list[dict]:
    """For the asyncio client: every record of the history at ``key``, oldest first, as
    :func:`history_record` shapes them, whether the key is this module's LIST or a ZSET or a
    STREAM of such records (a layout's own ``Keys.history``); none for any other type."""
    kind = _text(await client.type(key))
    if kind == "list":
        raw = await client.lrange(key, 0, -1)
    elif kind == "zset":
        raw = await client.zrange(key, 0, -1)
    elif kind == "stream":
        raw = [json.dumps({_text(f): _text(v) for f, v in fields.items()})
               for _, fields in await client.xrange(key)]
    else:
        return []
    return [e for e in (history_record(r) for r in raw) if e is not None]


def history_record(raw) -> dict | None:
    """One history record as ``{"trained_at", "version", "published", "metrics"}`` with
    ``metrics`` shaped like ``recs evaluate --json`` (``{"k", "model": {"ndcg"...},
    "popularity": {...}}``). Takes the quality history's flat records (``ndcg``,
    ``popularity_ndcg``, ``k``: docs/CONTRACT.md) and nested ``metrics`` (as in the model
    hash); None for a record that is not a JSON object."""
    try:
        obj = json.loads(_text(raw))
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    metrics = obj.get("metrics")
    if isinstance(metrics, str):
        try:
            metrics = json.loads(metrics)
        except ValueError:
            metrics = None
    if not isinstance(metrics, dict) and "ndcg" in obj:
        popularity = obj.get("popularity") if isinstance(obj.get("popularity"), dict) else {}
        metrics = {"k": obj.get("k", 10),
                   "model": {m: obj[m] for m in ("ndcg", "map", "precision", "auc") if m in obj},
                   "popularity": {**popularity, "ndcg": obj.get("popularity_ndcg",
                                                                popularity.get("ndcg"))}}
    return {"trained_at": obj.get("trained_at"), "version": obj.get("version"),
            "published": obj.get("published", True),
            "metrics": metrics if isinstance(metrics, dict) else {}}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
