"""A model's item-item weights in Redis, a row per field, one HASH per model version.

Two families publish them (``trainer.models``): EASE's dense B and RP3beta's sparse W. The
updater scores a user as their scaled view row times those weights, so it needs only the
rows of the resources the user viewed: one HMGET. A row is one field, never one value for the
whole matrix (Redis caps a value at 512 MB; B is 400 MB at 10,000 resources). A field holds:

- a dense row (a numpy array): its ``resources`` weights, little-endian float32, in the
  model's item order (4 x resources bytes);
- a sparse row (a row of a scipy CSR matrix): the resource ids of its entries as
  little-endian uint32, then their weights as float32 (8 bytes an entry; empty for a row
  without entries; ``trainer.models.rp3beta.PublishedRP3beta`` reads it back).

Switching without stalling readers: the trainer writes the new version's hash in chunks
(each HSET short) BEFORE the switch, and the switch itself (``store.switch``)
only replaces the model hash, whose ``version`` names the rows hash to read. Afterwards
:func:`drop_stale` frees the hashes of other versions with UNLINK (freed in the background,
so no reader waits on a 400 MB DEL). The version is added to ``ease_versions`` before any
row is written, so rows of a publish that crashed are found and freed by the next one.
While both versions exist Redis holds the rows twice: 8 x resources^2 bytes for dense rows
(800 MB at 10,000 resources), 16 x resources x k for sparse rows of k entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import redis
import scipy.sparse as sp

from store.groups import delete, split_users
from store.keys import Keys


def _dense_fields(item_ids: np.ndarray, weights: np.ndarray, start: int, stop: int) -> dict:
    return {int(item_ids[i]): weights[i].tobytes() for i in range(start, stop)}


def _sparse_fields(item_ids: np.ndarray, weights: sp.csr_matrix, start: int, stop: int
                   ) -> dict:
    out = {}
    for i in range(start, stop):
        lo, hi = weights.indptr[i], weights.indptr[i + 1]
        out[int(item_ids[i])] = (item_ids[weights.indices[lo:hi]].astype("<u4").tobytes()
                                 + weights.data[lo:hi].astype("<f4").tobytes())
    return out


def write_rows(client: redis.Redis, keys: Keys, lang: str, version: str,
               item_ids: np.ndarray, weights, rows_per_call: int = 64,
               calls_per_round_trip: int = 16) -> None:
    """Store the weights (items x items, rows and columns in ``item_ids`` order; a numpy
    array or a scipy sparse matrix) under ``version``."""
    item_ids = np.asarray(item_ids)
    if sp.issparse(weights):
        weights, fields_of = sp.csr_matrix(weights), _sparse_fields
    else:
        weights, fields_of = np.asarray(weights, dtype="<f4"), _dense_fields
    if weights.shape != (len(item_ids), len(item_ids)):
        raise ValueError(f"weights of shape {weights.shape} for {len(item_ids)} resources")
    key = keys.ease_rows(lang, version)
    client.sadd(keys.ease_versions(lang), version)
    pipe = client.pipeline(transaction=False)
    starts = range(0, len(item_ids), rows_per_call)
    for calls, start in enumerate(starts, 1):
        stop = min(start + rows_per_call, len(item_ids))
        pipe.hset(key, mapping=fields_of(item_ids, weights, start, stop))
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
    """Delete these users' factors keys (EASE and RP3beta models have no user factors; keys
    left from an earlier ALS model would mislead)."""
    pipe = client.pipeline(transaction=False)
    # Per slot group: on a cluster one DEL names keys of one slot (one group on one Redis).
    for group, part in split_users(keys, users).items():
        for s in range(0, len(part), chunk):
            delete(pipe, *(group.factors(lang, u) for u in part[s:s + chunk]))
    pipe.execute()
