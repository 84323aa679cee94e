"""Reading one language's view counts out of Redis, for the trainer.

The consumer keeps one HASH per user (``views(lang, user)``: resource_id -> count) and the
SET ``users(lang)`` naming them, so the reader needs no keyspace SCAN. :func:`read_views`
walks that SET with SSCAN and fetches the hashes a chunk at a time with one server-side
script (:data:`READ_VIEWS`): the script packs a chunk's ids and counts into two
comma-separated strings, which numpy parses in C. That keeps the client's cost per view near
nothing (no Python object per hash field) and each script short (a chunk of 250 users is
about a millisecond of server time), so apps reading published lists meanwhile wait for at
most one chunk.

The read is not a point-in-time snapshot: the consumer goes on writing while the chunks are
read. :func:`read_seq` taken *before* the read bounds what is certainly included (every batch
up to that sequence number); the trainer re-queues users touched after it (see
``store.handover.requeue_touched``), so views that may be missing get folded in later.

On a Redis Cluster (docs/CLUSTER.md) a language's users are in slot groups, each with its
own ``users``, ``seq`` and queues: :func:`read_counts` reads, per group, its ``seq`` S_g
first, then its users' views (a chunk's keys are one group's, so one slot), the groups of
each primary in a thread of their own; the hand-over then runs per group with S_g. On one
Redis there is one group and the reads are exactly the single-node ones. The Spark
executors' read keeps the same order: :func:`read_user_ids` (per group S_g, pending, then
the ids) on the driver before any executor reads, then :func:`views_reader` on the
executors (a slice of users split by group, so each script call's keys share one slot).

Garbage is never trained on: a views key that is not a hash, a field that is not a
resource id, or a count that is not an integer in 1..2**53-1 (negative, ``abc``, ``2.5``, an
overflowed value) is skipped with one WARNING per key naming it and the problem; the rest
is read as usual. Only a chunk that holds such a key pays for the careful re-read.

Usage::

    seq = read_seq(client, keys, "en")
    views = read_views(client, keys, "en")   # DataFrame user_id, resource_id, views
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np
import pandas as pd
import redis

from store.groups import GroupSeqs, per_primary, preload, script_call, split_users
from store.keys import Keys

log = logging.getLogger(__name__)

READ_VIEWS = """
-- KEYS: the views hashes of some users, one per user.
-- Returns {pairs: "n1,n2,..." (fields per hash, in KEYS order; -1: not a hash),
--          flat: "resource,count,resource,count,..." (all hashes' fields, in KEYS order)}.
-- Two strings instead of nested arrays: the client parses each with one numpy call.
local sizes, parts = {}, {}
for i, key in ipairs(KEYS) do
  local h = redis.pcall('HGETALL', key)
  if h['err'] then
    sizes[i] = -1
  else
    sizes[i] = #h / 2
    if #h > 0 then parts[#parts + 1] = table.concat(h, ',') end
  end
end
return {table.concat(sizes, ','), table.concat(parts, ',')}
"""


def read_languages(client: redis.Redis, keys: Keys) -> list[str]:
    """Every language the consumer has seen (``recs:langs``), sorted."""
    return sorted(m.decode() if isinstance(m, bytes) else m for m in client.smembers(keys.langs))


def read_seq(client: redis.Redis, keys: Keys, lang: str) -> int:
    """The consumer's batch counter for ``lang`` (0 before the first batch)."""
    value = client.get(keys.seq(lang))
    return int(value) if value is not None else 0


def read_pending(client: redis.Redis, keys: Keys, lang: str) -> list[str]:
    """Users the updater has not yet folded in (dirty or claimed) right now.

    The updater may finish them against the *old* model while a new one is published, after
    the publisher wrote them; the trainer queues them again once the new model is live."""
    # ZSCAN, not ZRANGE 0 -1: with the updater down, dirty may hold every user.
    users = {m for m, _ in client.zscan_iter(keys.dirty(lang), count=1000)}
    users.update(m for m, _ in client.zscan_iter(keys.claims(lang), count=1000))
    return sorted(m.decode() for m in users)


def iter_user_ids(client: redis.Redis, keys: Keys, lang: str,
                  count: int = 1000) -> Iterator[list[str]]:
    """Batches of the user ids in ``users(lang)``, each id once.

    SSCAN instead of SMEMBERS: one SMEMBERS of 60,000 members would stall the server for
    readers; SSCAN may repeat a member (during a rehash), hence the ``seen`` set."""
    seen: set[bytes] = set()
    cursor = 0
    while True:
        cursor, members = client.sscan(keys.users(lang), cursor, count=count)
        fresh = [m for m in members if m not in seen]
        seen.update(fresh)
        if fresh:
            yield [m.decode() for m in fresh]
        if cursor == 0:
            return


def read_views(client: redis.Redis, keys: Keys, lang: str, chunk: int = 250,
               chunks_per_round_trip: int = 16) -> pd.DataFrame:
    """All of ``lang``'s counts as the views table the offline path uses: ``user_id`` (str
    values, as a pandas Categorical), ``resource_id`` (int64), ``views`` (int64), one row per
    (user, resource).

    ``chunk`` users go to one script call (bounds how long a reader may wait);
    ``chunks_per_round_trip`` calls share one pipelined round trip. On a cluster every
    slot group is read, the primaries in parallel (:func:`read_counts`)."""
    return read_counts(client, keys, lang, chunk=chunk,
                       chunks_per_round_trip=chunks_per_round_trip).views


@dataclass
class Counts:
    """What :func:`read_counts` read, per slot group in the order the docstring says."""

    seqs: GroupSeqs
    """Each group's ``seq`` read before that group's counts ({} unless asked for)."""
    pending: list[str]
    """Users the updater had pending in any group, read before that group's counts."""
    views: pd.DataFrame
    """The views table (see :func:`read_views`)."""


@dataclass
class _GroupRead:
    seq: int = 0
    pending: list[str] = dc_field(default_factory=list)
    users: list[str] = dc_field(default_factory=list)
    sizes: list[np.ndarray] = dc_field(default_factory=list)
    flats: list[np.ndarray] = dc_field(default_factory=list)


def read_counts(client: redis.Redis, keys: Keys, lang: str, *, with_seq: bool = False,
                with_pending: bool = False, chunk: int = 250,
                chunks_per_round_trip: int = 16) -> Counts:
    """The counts of every slot group of ``lang``; per group, in this order: its ``seq``
    S_g (``with_seq``), the users it had pending (``with_pending``), then its users' views.
    Every view of a batch up to S_g is therefore in what was read of group g: the order the
    hand-over relies on (``store.handover``). On one Redis: one group, today's reads; on a
    cluster the groups of each primary in a thread per primary (``store.groups``)."""
    started = time.perf_counter()
    script = client.register_script(READ_VIEWS)
    preload(client, script)

    def one(group: Keys) -> _GroupRead:
        out = _GroupRead()
        if with_seq:
            out.seq = read_seq(client, group, lang)
        if with_pending:
            out.pending = read_pending(client, group, lang)
        _read_group(client, group, lang, script, out, chunk, chunks_per_round_trip)
        return out

    reads = per_primary(client, keys, lang, one)
    ordered = [reads[g] for g in keys.slot_groups()]
    views = _frame(lang, [u for r in ordered for u in r.users],
                   [s for r in ordered for s in r.sizes], [f for r in ordered for f in r.flats])
    log.debug("read counts", extra={"fields": {
        "lang": lang, "users": views["user_id"].cat.categories.size, "rows": len(views),
        "groups": len(ordered), "seconds": round(time.perf_counter() - started, 3)}})
    seqs = GroupSeqs({g: r.seq for g, r in reads.items()}) if with_seq else GroupSeqs()
    return Counts(seqs=seqs, pending=sorted(u for r in ordered for u in r.pending), views=views)


def _read_group(client, group: Keys, lang: str, script, out: _GroupRead, chunk: int,
                chunks_per_round_trip: int) -> None:
    """One slot group's views into ``out``: the ids of ``users(lang)`` by SSCAN, their
    hashes ``chunk`` at a time by :data:`READ_VIEWS` (a chunk's keys share the group's slot),
    ``chunks_per_round_trip`` calls pipelined."""
    pipe, queued = client.pipeline(transaction=False), []  # queued: each call's users

    def flush() -> None:
        for part, (size_text, flat_text) in zip(queued, pipe.execute(), strict=True):
            size, flat = _parse_chunk(size_text, flat_text)
            if size is None:
                size, flat = _careful_chunk(client, group, lang, part)
            out.sizes.append(size)
            out.flats.append(flat)
        queued.clear()

    for batch in iter_user_ids(client, group, lang,
                               count=min(1000, chunk * chunks_per_round_trip)):
        for start in range(0, len(batch), chunk):
            part = batch[start:start + chunk]
            out.users.extend(part)
            script_call(pipe, script, [group.views(lang, u) for u in part], [])
            queued.append(part)
            if len(queued) >= chunks_per_round_trip:
                flush()
    if queued:
        flush()


def _frame(lang: str, user_ids: list[str], sizes: list[np.ndarray],
           flats: list[np.ndarray]) -> pd.DataFrame:
    """The views table of the chunks read (user ids in read order, their sizes and pairs)."""
    per_user = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
    flat = np.concatenate(flats) if flats else np.zeros(0, dtype=np.int64)
    if len(per_user) != len(user_ids) or flat.size != 2 * int(per_user.sum()):
        raise RuntimeError(f"counts of {lang!r} came back malformed from Redis "
                           f"({len(user_ids)} users, {len(per_user)} sizes, {flat.size} values)")
    pairs = flat.reshape(-1, 2)
    # A Categorical (one category per user, codes repeated per view) rather than 500,000
    # Python strings: same values, and the filters' group-bys and the matrix's factorize
    # run several times faster on it. Categories sorted, so the matrix rows come out in
    # user id order as from a CSV extract (and the same whichever order groups were read).
    ids = np.asarray(user_ids, dtype=str)
    order = np.argsort(ids, kind="stable")
    rank = np.empty(len(ids), dtype=np.int64)
    rank[order] = np.arange(len(ids))
    return pd.DataFrame({
        "user_id": pd.Categorical.from_codes(np.repeat(rank, per_user),
                                             categories=pd.Index(ids[order], dtype=str)),
        "resource_id": pairs[:, 0],
        "views": pairs[:, 1],
    })


def views_reader(client: redis.Redis, keys: Keys, lang: str, chunk: int = 250
                 ) -> Callable[[list[str]], tuple[list[str], np.ndarray, np.ndarray]]:
    """For the Spark executors' reads: a function ``users`` -> (the users in the order
    read, views per user in that order, (resource_id, count) rows), int64, by
    :data:`READ_VIEWS` (unchecked). ``users`` are split by slot group (one group on one
    Redis), a script call per ``chunk`` users of one group (its keys share one slot), the
    calls of one ``users`` pipelined. The script is loaded on every primary once, here."""
    script = client.register_script(READ_VIEWS)
    preload(client, script)

    def read(users: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        pipe, order = client.pipeline(transaction=False), []
        for group, part in split_users(keys, users).items():
            for s in range(0, len(part), chunk):
                order.extend(part[s:s + chunk])
                script_call(pipe, script, [group.views(lang, u) for u in part[s:s + chunk]],
                            [])
        replies = pipe.execute() if order else []
        sizes = [_parse_ints(size) for size, _ in replies]
        flats = [_parse_ints(flat) for _, flat in replies]
        return (order, np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64),
                (np.concatenate(flats) if flats else np.zeros(0, dtype=np.int64)).reshape(-1, 2))
    return read


@dataclass
class UserIds:
    """What :func:`read_user_ids` read, per slot group in the order its docstring says."""

    seqs: GroupSeqs
    """Each group's ``seq`` read before that group's user ids."""
    pending: list[str]
    """Users the updater had pending in any group, read before that group's user ids."""
    users: list[str]
    """Every user id of ``users(lang)``, group after group."""


def read_user_ids(client: redis.Redis, keys: Keys, lang: str) -> UserIds:
    """Per slot group of ``lang``, in this order: its ``seq`` S_g, the users it has
    pending, then its user ids (no counts). The Spark executors read those users' counts
    after this returns, so every view of a batch up to S_g is in what they read: the order
    :func:`read_counts` keeps. On one Redis one group; on a cluster the groups of each
    primary in a thread per primary (``store.groups``)."""
    def one(group: Keys) -> _GroupRead:
        out = _GroupRead(seq=read_seq(client, group, lang),
                         pending=read_pending(client, group, lang))
        out.users = [u for batch in iter_user_ids(client, group, lang) for u in batch]
        return out

    reads = per_primary(client, keys, lang, one)
    ordered = [reads[g] for g in keys.slot_groups()]
    return UserIds(seqs=GroupSeqs({g: r.seq for g, r in reads.items()}),
                   pending=sorted(u for r in ordered for u in r.pending),
                   users=[u for r in ordered for u in r.users])


MAX_VIEWS = 2**53 - 1
"""Largest count read as such; anything above is an overflowed or hand-written value."""
_MAX_RESOURCE_ID = 4294967295  # core.contract.MAX_RESOURCE_ID


def _parse_chunk(size_text: bytes, flat_text: bytes) -> tuple[np.ndarray | None, np.ndarray]:
    """One script reply as (sizes, flat) int64 arrays; (None, _) if anything in it is not a
    valid count (the chunk is then read again carefully)."""
    try:
        size, flat = _parse_ints(size_text), _parse_ints(flat_text)
    except ValueError:  # a field or value that is not an integer
        return None, np.zeros(0, dtype=np.int64)
    if (size < 0).any() or flat.size != 2 * int(size.sum()):
        return None, flat
    rids, counts = flat[0::2], flat[1::2]
    if ((rids < 1) | (rids > _MAX_RESOURCE_ID) | (counts < 1) | (counts > MAX_VIEWS)).any():
        return None, flat
    return size, flat


def _careful_chunk(client: redis.Redis, keys: Keys, lang: str,
                   users: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A chunk holding garbage, read key by key: bad fields (or whole keys) are skipped and
    named in one WARNING per key."""
    pipe = client.pipeline(transaction=False)
    for user in users:
        pipe.hgetall(keys.views(lang, user))
    sizes, flat = [], []
    for user, h in zip(users, pipe.execute(raise_on_error=False), strict=True):
        if isinstance(h, Exception):
            if not isinstance(h, redis.ResponseError):
                raise h
            log.warning("views key skipped: not a hash", extra={"fields": {
                "key": keys.views(lang, user), "error": str(h)}})
            sizes.append(0)
            continue
        good, bad = [], []
        for field, value in h.items():
            rid, count = _strict_int(field), _strict_int(value)
            if rid is None or not 1 <= rid <= _MAX_RESOURCE_ID:
                bad.append(f"field {field[:40]!r} is not a resource id")
            elif count is None or not 1 <= count <= MAX_VIEWS:
                bad.append(f"resource {rid}: count {value[:40]!r} is not in 1..2**53-1")
            else:
                good += (rid, count)
        if bad:
            log.warning("views fields skipped: not counts", extra={"fields": {
                "key": keys.views(lang, user), "skipped": len(bad), "first": bad[0]}})
        sizes.append(len(good) // 2)
        flat += good
    return np.asarray(sizes, dtype=np.int64), np.asarray(flat, dtype=np.int64)


def _strict_int(raw: bytes) -> int | None:
    """The integer ``raw`` holds written plainly (as HINCRBY writes it), else None."""
    text = raw[1:] if raw[:1] == b"-" else raw
    if not (text.isdigit() and len(raw) <= 20):
        return None
    return int(raw)


def _parse_ints(text: bytes) -> np.ndarray:
    """Comma-separated decimal integers -> int64 array (C speed; "" -> empty)."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    return np.fromstring(text, dtype=np.int64, sep=",")
