"""EASE's item-item weights B in Redis, a row per field, one HASH per model version.

The updater scores a user as their scaled view row times B, so it needs only the rows of the
resources the user viewed: one HMGET. B is large (4 x resources^2 bytes: 400 MB at 10,000
resources), so it is not one value (Redis caps a value at 512 MB) but a field per row.

Switching without stalling readers: the trainer writes the new version's hash in chunks
(each HSET short) BEFORE the switch, and the switch itself (``store.publish.Publisher``)
only replaces the model hash, whose ``version`` names the rows hash to read. Afterwards
:func:`drop_stale` frees the hashes of other versions with UNLINK (freed in the background,
so no reader waits on a 400 MB DEL). The version is added to ``ease_versions`` before any
row is written, so rows of a publish that crashed are found and freed by the next one.
While both versions exist Redis holds B twice: plan 8 x resources^2 bytes of memory
(800 MB at the 10,000-resource limit of ``trainer.models.ease``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import redis

from store.keys import Keys


def write_rows(client: redis.Redis, keys: Keys, lang: str, version: str,
               item_ids: np.ndarray, weights: np.ndarray, rows_per_call: int = 64,
               calls_per_round_trip: int = 16) -> None:
    """Store B (items x items, rows in ``item_ids`` order) under ``version``."""
    weights = np.asarray(weights, dtype="<f4")
    if weights.shape != (len(item_ids), len(item_ids)):
        raise ValueError(f"B of shape {weights.shape} for {len(item_ids)} resources")
    key = keys.ease_rows(lang, version)
    client.sadd(keys.ease_versions(lang), version)
    pipe = client.pipeline(transaction=False)
    starts = range(0, len(item_ids), rows_per_call)
    for calls, start in enumerate(starts, 1):
        stop = min(start + rows_per_call, len(item_ids))
        pipe.hset(key, mapping={int(item_ids[i]): weights[i].tobytes()
                                for i in range(start, stop)})
        if calls % calls_per_round_trip == 0:
            pipe.execute()
    pipe.execute()


def read_rows(client: redis.Redis, keys: Keys, lang: str, version: str,
              resource_ids: Sequence[int]) -> list[bytes | None]:
    """The raw rows of these resources (None where absent), one HMGET."""
    if len(resource_ids) == 0:
        return []
    return client.hmget(keys.ease_rows(lang, version), [int(i) for i in resource_ids])


def drop_stale(client: redis.Redis, keys: Keys, lang: str, live: str | None) -> int:
    """UNLINK every rows hash but the live version's; returns how many were freed."""
    stale = [v for v in client.smembers(keys.ease_versions(lang))
             if (v.decode() if isinstance(v, bytes) else v) != live]
    pipe = client.pipeline(transaction=False)
    for v in stale:
        version = v.decode() if isinstance(v, bytes) else v
        pipe.unlink(keys.ease_rows(lang, version))
        pipe.srem(keys.ease_versions(lang), v)
    pipe.execute()
    return len(stale)


def drop_factors(client: redis.Redis, keys: Keys, lang: str, users: Sequence[str],
                 chunk: int = 500) -> None:
    """Delete these users' factors keys (an EASE model has no user factors; keys left from
    an earlier ALS model would mislead)."""
    users = list(users)
    pipe = client.pipeline(transaction=False)
    for s in range(0, len(users), chunk):
        pipe.delete(*(keys.factors(lang, u) for u in users[s:s + chunk]))
    pipe.execute()
