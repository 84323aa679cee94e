"""The tuned settings hash and the quality history list (docs/CONTRACT.md).

- ``settings(lang)``: a HASH of flat fields (``model``, ``factors``, ... ``tuned_at``),
  replaced whole by :func:`write_settings` (DEL + HSET in one MULTI, so a reader never sees
  half of two tunings).
- ``history(lang)``: a LIST of JSON objects, oldest first; :func:`append_history` pushes one
  and trims to the newest ``HISTORY_CAP`` in the same MULTI.
"""

from __future__ import annotations

import json

import redis

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


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
