"""Reads of the progress the counts are recorded with: the guard hashes per stream.

On one Redis a consumer group's progress on a topic is one ``offsets`` hash (every
language, both sides, in one script call). On a Redis Cluster each language has one stream
per slot in which it is written (its item side and each slot group of users), each with its
own progress hash (``item_offsets``, ``group_offsets``); a consumer restarts every partition
from the minimum over the streams (:func:`restart_points`), so every stream gets every event
it lacks and its guards skip the ones it holds (consumers/stream_writer.py ``StreamWriter``).
Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis

from store.guards import read_guards
from store.keys import Keys


def read_offsets(client: redis.Redis, keys: Keys, group: str, topic: str) -> dict[int, int]:
    """The next offset to apply per partition, as recorded with the counts: on a cluster
    the restart point, the minimum over every stream (:func:`read_streams`)."""
    if keys.cluster:
        return restart_points(read_streams(client, keys, group, topic))
    return {int(p): int(o) for p, o in read_guards(client, keys.offsets(group, topic)).items()}


def stream_keys(keys: Keys, lang: str, group: str, topic: str) -> list[str]:
    """The progress hashes of ``lang``'s streams (consumer group ``group``, ``topic``): the
    item side first, then every slot group's (on one Redis the one ``offsets`` hash)."""
    if not keys.cluster:
        return [keys.offsets(group, topic)]
    return [keys.item_offsets(lang, group, topic)] + [
        g.group_offsets(lang, group, topic) for g in keys.slot_groups()]


def read_streams(client: redis.Redis, keys: Keys, group: str, topic: str,
                 langs: Sequence[str] | None = None) -> dict[str, dict[int, int]]:
    """Every registered stream of every language in ``langs`` (default: the ``langs`` set):
    ``{progress hash: {partition: next offset}}``, read in one pipeline (a cluster's is
    split per node by redis-py)."""
    if langs is None:
        langs = sorted(v.decode() if isinstance(v, bytes) else v
                       for v in client.smembers(keys.langs))
    names = list(dict.fromkeys(k for lang in langs for k in stream_keys(keys, lang, group,
                                                                            topic)))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    out = {}
    for name, fields in zip(names, pipe.execute(), strict=True):
        if fields:
            out[name] = {int(p): int(o) for p, o in fields.items()}
    return out


def restart_points(streams: Mapping[str, Mapping[int, int]]) -> dict[int, int]:
    """Per partition, the minimum held offset over ``streams``: where a consumer must read
    from so that every stream gets every event it lacks."""
    out: dict[int, int] = {}
    for held in streams.values():
        for p, o in held.items():
            out[p] = o if p not in out else min(out[p], o)
    return out
