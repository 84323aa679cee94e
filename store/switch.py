"""The model switch: the moment a newly published model becomes the live one (step 2 of
``store.publish``).

Invariants:
- ``model``, ``item_factors``, ``item_ids`` and ``item_totals`` of a language are replaced
  in ONE MULTI/EXEC, under WATCH of the trainer's lock: a trainer that lost its lock
  (or whose lock changed during the switch) cannot switch, and raises ``LockLost``;
- until that EXEC the old model hash and item factors stay live (the updater keeps solving
  against them);
- the model hash is written whole (DEL + HSET in the same MULTI); its values are plain
  strings, numbers via repr so they parse back exactly (``store.read.typed_field``).

On a Redis Cluster (docs/CLUSTER.md section 0) the MULTI (+ WATCH of ``train_lock``, same
slot) runs on the primary holding the language's item side; then the whole model hash is
copied into every slot group's ``group_model`` (:data:`COPY_MODEL`, one script per group:
DEL + HSET, so a group's copy is whole), which the per-group scripts (the updater's commit,
the take-down refills) compare ``version`` against.

Which moment is "the switch". For readers (apps, ``recs serve``) it is the item-side EXEC:
from then on the model hash, item factors, ids and totals are the new model's, in one step
as on one Redis. Lists are already whole before it (``store.publish`` step 1) and a reader
never sees a user's list of one model with that user's factors of another: both live in
the user's group and are only ever replaced together, by ``store.publish.REPLACE_LISTS``
or the updater's COMMIT_SCRIPT (one script each). For the updater the switch of group g is
the moment g's copy is written: until then a commit there is checked against the old
version, exactly as on one Redis before the EXEC; what it writes in that window is settled
by the hand-over, which runs only after every group's copy is written. A trainer that dies
between the EXEC and the last copy leaves some groups' copies on the old version: commits
there are refused (never wrong) until the next publish writes them.
"""

from __future__ import annotations

import numpy as np
import redis

from store.groups import preload, script_call
from store.keys import Keys
from store.train_lock import LockFence, LockLost, TrainLock

COPY_MODEL = """
-- KEYS[1]: one slot group's copy of the model hash (group_model). ARGV: field, value, ...
-- of the model hash just switched to. Replaced whole in one step: a per-group script that
-- compares the version never sees half a copy.
redis.call('DEL', KEYS[1])
if #ARGV > 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return 1
"""


def switch_model(client: redis.Redis, keys: Keys, lang: str, version: str,
                 lock: TrainLock | LockFence | None, info: dict, item_ids: np.ndarray,
                 item_factors: np.ndarray, item_totals: np.ndarray | None = None) -> None:
    """Make the model ``version`` live: model hash (``info`` plus ``version``), item
    factors, item ids (and per-item view totals) replaced in one MULTI/EXEC, then copied
    into every slot group on a cluster."""
    item_ids = np.asarray(item_ids)
    if item_ids.size and (item_ids.min() < 1 or item_ids.max() > 0xFFFFFFFF):
        raise ValueError("resource ids must be in 1..4294967295")
    item_factors = np.ascontiguousarray(item_factors, dtype="<f4")
    if item_factors.shape[0] != item_ids.size:
        raise ValueError(f"{item_ids.size} item ids for {item_factors.shape[0]} factor rows")
    mapping = {k: _field(v) for k, v in info.items()}
    mapping["version"] = version
    with item_primary(client, keys, lang).pipeline(transaction=True) as pipe:
        if lock is not None:
            pipe.watch(lock.key)
            if pipe.get(lock.key) != lock.token.encode():
                lock.lost = True
                raise LockLost(f"lost the lock {lock.key}; not switching the model")
        pipe.multi()
        pipe.delete(keys.model(lang))
        pipe.hset(keys.model(lang), mapping=mapping)
        pipe.set(keys.item_factors(lang), item_factors.tobytes())
        pipe.set(keys.item_ids(lang), item_ids.astype("<u4").tobytes())
        if item_totals is not None:
            pipe.set(keys.item_totals(lang), np.asarray(item_totals, dtype="<f4").tobytes())
        else:
            pipe.delete(keys.item_totals(lang))
        try:
            pipe.execute()
        except redis.WatchError:
            if lock is not None:
                lock.lost = True
            raise LockLost(f"the lock {keys.train_lock(lang)} changed during the switch; "
                           "not switching the model") from None
    _copy_to_groups(client, keys, lang, mapping)


def item_primary(client: redis.Redis, keys: Keys, lang: str):
    """Where the switch's MULTI runs: the client itself on one Redis; on a cluster the
    primary holding the language's item side (its slot: the model, item keys and the lock),
    as a plain client, so WATCH/MULTI/EXEC are today's. A slot being moved at that moment
    answers MOVED/ASK: the run fails before switching and the next one retries."""
    if not keys.cluster:
        return client
    node = client.get_node_from_key(keys.model(lang))
    return client.get_redis_connection(node)


def _copy_to_groups(client: redis.Redis, keys: Keys, lang: str, mapping: dict) -> None:
    """On a cluster, the model hash just switched to, whole, into every slot group's
    ``group_model`` (:data:`COPY_MODEL`, one call per group, one round trip per primary);
    on one Redis ``group_model`` is the model hash itself: nothing to do."""
    if keys.cluster:
        copy_to_groups(client, [g.group_model(lang) for g in keys.slot_groups()],
                       [x for pair in mapping.items() for x in pair])


def copy_to_groups(client: redis.Redis, names: list[str], args: list,
                   source: str = COPY_MODEL) -> None:
    """Script ``source`` (default :data:`COPY_MODEL`: ``args`` the hash's fields and values,
    whole; none deletes it) called once on each hash of ``names``, one pipeline: a copy is
    replaced in one step."""
    script = client.register_script(source)
    preload(client, script)
    pipe = client.pipeline(transaction=False)
    for name in names:
        script_call(pipe, script, [name], args)
    pipe.execute()


def _field(value) -> str:
    """Model hash values as plain strings (numbers via repr, so they parse back exactly)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)
