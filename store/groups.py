"""The trainer's view of slot groups: which group a user is in, per-group values, one worker
per primary, and scripts pipelined on a Redis Cluster.

On one Redis there is one group, the keys themselves (``Keys.slot_groups() == [keys]``), so
every function here degenerates to today's single call: no thread, no extra round trip.

On a Redis Cluster (``store.cluster_keys.ClusterKeys``) a language's users live in
``CLUSTER_GROUPS`` slot groups, each one hash slot. Work that is per group (reading counts,
writing user lists, the hand-over) is split by group, and :func:`per_primary` runs the
groups of each primary in a thread of their own, so every primary works at once.

Invariant: a per-group value (:class:`GroupSeqs`) is keyed by the group's bound ``Keys``
(frozen dataclasses, hashable), never by a position, so it cannot be applied to the wrong
group.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from store.cluster_keys import user_group
from store.keys import Keys

T = TypeVar("T")


def group_finder(keys: Keys) -> Callable[[str], Keys]:
    """A function user id -> the bound keys of that user's slot group (cheaper than
    ``keys.for_user`` per user: the groups are made once)."""
    groups = keys.slot_groups()
    if not keys.cluster:
        only = groups[0]
        return lambda user: only
    count = keys.groups
    return lambda user: groups[user_group(user, count)]


def split_users(keys: Keys, users: Iterable[str]) -> dict[Keys, list[str]]:
    """``users`` by slot group (order kept within a group); groups without users absent."""
    find = group_finder(keys)
    out: dict[Keys, list[str]] = defaultdict(list)
    for user in users:
        out[find(user)].append(user)
    return dict(out)


class GroupSeqs(dict):
    """The consumer's ``seq`` of each slot group read before its counts: {group keys: S_g}.

    On one Redis one entry, today's S. :attr:`total` is what the model hash's ``seq`` field
    holds: S on one Redis; on a cluster the sum of the groups' seqs (it only grows, so it
    still orders models, but no per-group script compares it)."""

    @property
    def total(self) -> int:
        return int(sum(self.values()))


def seq_of(seq: int | Mapping[Keys, int] | None, group: Keys) -> int | None:
    """The seq that bounds ``group``'s counts: ``seq`` itself when it is one number (one
    Redis, or a caller that has one bound for all), else the group's entry."""
    if seq is None or isinstance(seq, int):
        return seq
    return int(seq[group])


def per_primary(client, keys: Keys, lang: str, work: Callable[[Keys], T]) -> dict[Keys, T]:
    """``work(group)`` for every slot group of ``lang``; on a cluster the groups of each
    primary run in order in one thread per primary (all primaries at once), on one Redis in
    this thread. Returns {group: result}."""
    groups = keys.slot_groups()
    if not keys.cluster:
        return {g: work(g) for g in groups}
    by_node: dict[str, list[Keys]] = defaultdict(list)
    for g in groups:
        by_node[client.get_node_from_key(g.seq(lang)).name].append(g)

    def run(node_groups: list[Keys]) -> list[tuple[Keys, T]]:
        return [(g, work(g)) for g in node_groups]

    with ThreadPoolExecutor(max_workers=len(by_node), thread_name_prefix="primary") as pool:
        done = list(pool.map(run, by_node.values()))
    return {g: r for part in done for g, r in part}


def preload(client, *scripts) -> None:
    """Load ``scripts`` on every primary of a cluster before they are pipelined: a cluster
    pipeline sends EVALSHA and cannot load a script a node lacks (one Redis's pipeline does
    that itself)."""
    from redis.cluster import RedisCluster

    if isinstance(client, RedisCluster):
        for script in scripts:
            client.script_load(script.script)


def script_call(pipe, script, keys: list, args: list) -> None:
    """Queue ``script`` on ``pipe``. A cluster pipeline refuses ``evalsha()`` (redis-py
    blocks the method) but sends the raw EVALSHA; the script must be :func:`preload`\\ ed,
    its keys all in one slot (the server refuses it otherwise: CROSSSLOT). The node is named
    here, from the first key: left to itself redis-py asks a server ``COMMAND GETKEYS`` for
    every script call in a pipeline, a round trip each (measured: 40 calls, 43 round trips).
    A slot moved meanwhile answers MOVED, and redis-py re-sends that call to its new owner."""
    from redis.cluster import ClusterPipeline

    if isinstance(pipe, ClusterPipeline):
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args,
                             target_nodes=pipe.get_node_from_key(keys[0]))
    else:
        script(keys=keys, args=args, client=pipe)


def delete(pipe, *names: str) -> None:
    """Queue one DEL of ``names`` (all in one slot on a cluster): redis-py's cluster pipeline
    has no multi-key ``delete()``, the raw command is the same on both."""
    pipe.execute_command("DEL", *names)
