"""Reading users' own keys: their views hashes and published factors, for the updater
(consumers/updater.py) and a take-down refill (trainer/pipeline/takedown.py). Nothing is
written here.

Invariants:

- Every read of many users is one pipelined round trip, and its replies come back in the
  order of the users asked. On a Redis Cluster :func:`read_factors_and_views` sends one
  :data:`READ_USERS_LUA` call per slot group and chunk of :data:`READ_USERS_PER_CALL`
  users, every key declared.
- A views hash is handed over raw (field -> count, bytes); :func:`views_arrays` turns them
  into arrays and drops, with a WARNING, any field that is not a resource id with a count
  in 1..2**53-1, so a hand-edited hash never stops an update.
- A key that cannot be read as a hash comes back from :func:`read_views` as its
  ``redis.ResponseError``, not raised: one bad key does not fail the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import chain

import numpy as np
import redis

from store.keys import Keys

# The updater's logger: the one reader that meets hand-edited views hashes.
log = logging.getLogger("recs.updater")


def read_views(client: redis.Redis, keys: Keys, lang: str, users: Sequence[str]
               ) -> list[dict[bytes, bytes]]:
    """Each user's views hash (resource_id -> count, raw bytes), one pipelined round trip.
    A key that cannot be read (not a hash) comes back as its ``redis.ResponseError``."""
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hgetall(keys.views(lang, user))
    return pipe.execute(raise_on_error=False)


def views_arrays(raw: Sequence[dict[bytes, bytes]]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hashes :func:`read_views` returns as flat arrays: (fields per user, resource ids
    int64, counts float32); user ``u`` owns the next ``lengths[u]`` entries. A field that is
    not a resource id with a count in 1..2**53-1 (only a hand-edited hash holds one) is
    dropped with a WARNING."""
    lengths = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    try:
        ids = np.array(list(chain.from_iterable(raw)), dtype=np.bytes_).astype(np.int64)
        with np.errstate(over="ignore"):  # a huge hand-written value: inf, caught below
            counts = np.array(list(chain.from_iterable(h.values() for h in raw)),
                              dtype=np.bytes_).astype(np.float32)
    except ValueError:
        ids = None
    if ids is not None and ((counts >= 1) & (counts < 2.0**53)).all():
        return lengths, ids, counts
    parsed = [_counts_of(h) for h in raw]
    lengths = np.fromiter(map(len, parsed), dtype=np.int64, count=len(parsed))
    ids = np.fromiter((k for c in parsed for k in c), dtype=np.int64, count=int(lengths.sum()))
    counts = np.fromiter((v for c in parsed for v in c.values()), dtype=np.float32,
                         count=ids.size)
    return lengths, ids, counts


def _counts_of(h: dict[bytes, bytes]) -> dict[int, float]:
    out = {}
    for k, v in h.items():
        try:
            count = float(v)
            if not 1 <= count < 2.0**53:
                raise ValueError(count)
            out[int(k)] = count
        except ValueError:
            log.warning("ignoring a views field that is not a count",
                        extra={"fields": {"field": k[:40], "value": v[:40]}})
    return out


def read_factors_and_views(client: redis.Redis, keys: Keys, lang: str, users: Sequence[str]
                           ) -> tuple[list[bytes | None], list[dict]]:
    """Each user's published factors (raw bytes, None when absent) and views hash (raw
    field -> count), in one pipelined round trip: what a refill scores a user's list from.
    On a cluster one :data:`READ_USERS_LUA` call per slot group and chunk: two commands
    per user through a cluster pipeline cost the client more than Redis its work."""
    if keys.cluster:
        return _read_users_cluster(client, keys, lang, users)
    pipe = client.pipeline(transaction=False)
    for u in users:
        pipe.get(keys.factors(lang, u))
        pipe.hgetall(keys.views(lang, u))
    replies = pipe.execute()
    return replies[0::2], replies[1::2]


READ_USERS_LUA = """
-- KEYS[1 .. k]: users' factor keys, KEYS[k+1 .. 2k]: their views keys (one slot group).
-- Returns {factors or nil, views as HGETALL gives them, ...}, in order.
local k = #KEYS / 2
local out = {}
for i = 1, k do
  out[2 * i - 1] = redis.call('GET', KEYS[i]) or false
  out[2 * i] = redis.call('HGETALL', KEYS[k + i])
end
return out
"""
READ_USERS_PER_CALL = 100


def _read_users_cluster(client, keys: Keys, lang: str, users: Sequence[str]
                        ) -> tuple[list[bytes | None], list[dict]]:
    rows: dict[int, list[int]] = {}
    for row, u in enumerate(users):
        rows.setdefault(keys.group_of(u), []).append(row)
    pipe = client.pipeline(transaction=False)
    order: list[list[int]] = []
    for part in (r[s:s + READ_USERS_PER_CALL] for r in rows.values()
                 for s in range(0, len(r), READ_USERS_PER_CALL)):
        call_keys = [keys.factors(lang, users[i]) for i in part] + \
            [keys.views(lang, users[i]) for i in part]
        pipe.execute_command("EVAL", READ_USERS_LUA, len(call_keys), *call_keys)
        order.append(part)
    factors: list[bytes | None] = [None] * len(users)
    views: list[dict] = [{}] * len(users)
    for part, reply in zip(order, pipe.execute(), strict=True):
        for j, row in enumerate(part):
            factors[row] = reply[2 * j]
            flat = reply[2 * j + 1]
            views[row] = dict(zip(flat[0::2], flat[1::2], strict=True))
    return factors, views
