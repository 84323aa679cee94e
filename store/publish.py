"""Publishing a trained model to Redis so that readers never see a gap: the order of the
steps, and the first of them (writing the lists), which :class:`Publisher` runs itself.

What readers are promised (shared/CONTRACT.md section 2): while a new model is written, a
lookup of any resource or user covered by both the old and the new model returns a whole
list, old or new; lists the new model no longer covers disappear once it is live; a crash at
any point leaves a readable model. How:

1. Lists go out first, a chunk of ids per call of :data:`REPLACE_LISTS`. That script
   deletes and rewrites each list (and the user's factors) inside one script, and a script
   runs alone, so each key flips from whole-old to whole-new with no staging key to clean up
   after a crash. The ids are added to ``published_items``/``published_users`` in the same
   call, so those SETs always name every key that exists. Chunks are small (500 list
   entries, under a millisecond of server time, so a reader waits at most that long) and
   many share one round trip. The client sends raw little-endian arrays, not one argument
   per entry: building millions of ZADD arguments in Python cost more than the whole
   server-side write. A background thread draws the caller's batches (its scoring) and
   builds the calls while the sending thread waits on Redis, so Redis, the bottleneck
   (about 35 us per user list of 20), is never idle waiting for the client. The script also
   enforces take-downs (``hidden(lang)``) and forgets (``forgotten(lang)``) atomically with
   each write, and reports the lists it cut (:attr:`Publisher.cut`).
2. :meth:`Publisher.switch` then makes the new model live in one MULTI/EXEC under WATCH of
   the trainer's lock (``store.switch``, which owns what "the switch" means, also on a
   cluster). Until then the old model hash and item factors stay live.
3. :meth:`Publisher.remove_uncovered` deletes the lists of ids the new model does not cover:
   the published SETs minus what step 1 wrote, sparing users with views newer than the
   counts the model was trained on (``store.uncovered``).
4. ``store.handover.requeue_touched`` hands users with views newer than the counts to the
   updater, and settles the users it had pending when the counts were read.

Only one trainer publishes a language at a time (``store.train_lock.TrainLock``).

On a Redis Cluster (docs/CLUSTER.md section 0, checklist 6) step 1 runs per slot:

- similar lists: REPLACE_LISTS on the language's item side (``published_items``,
  ``similar:{r}``, ``hidden``: one slot);
- user lists and factors: one REPLACE_LISTS call per slot group and chunk, with that group's
  ``published_users``, ``forgotten``, its copy of ``hidden`` (``group_hidden``) and its own
  seq S_g; a user's list and factors are in their group's slot, replaced in the same script,
  so a reader never sees a user's list of one model with that user's factors of another.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import redis

from core.prefetch import prefetched
from store.groups import group_finder, preload, script_call, seq_of
from store.keys import Keys
from store.lists import LISTS_LUA, encode_lists
from store.switch import switch_model
from store.train_lock import LockFence, TrainLock
from store.uncovered import remove_uncovered

log = logging.getLogger(__name__)

REPLACE_LISTS = """
-- KEYS[1]: the SET of published ids (published_items or published_users).
-- KEYS[2 .. k+1]: the ZSETs to replace (similar or recs lists), one per id.
-- KEYS[k+2 .. 2k+1]: only when ARGV[3] > 0: the STRING factor keys, same order.
-- KEYS[#KEYS - 1]: hidden(lang), KEYS[#KEYS]: forgotten(lang) (take-downs, see below).
-- ARGV[1], ARGV[2]: the k lists as store.lists encodes them (lengths, entries); a list of
-- length 0 is removed.
-- ARGV[3]: factor bytes per id, 0 for none. ARGV[4]: factors, k x ARGV[3] bytes.
-- ARGV[5]: list length kept after filtering (0: all). ARGV[6]: 's' similar lists, 'u' users.
-- ARGV[7]: the seq the lists were computed from ('': unknown). ARGV[8 .. k+7]: the ids,
-- added to KEYS[1].
-- Each list is deleted and rewritten here, and a script runs alone: readers see the old
-- list or the new one, never a gap. Entries come best first, so every ZADD insert lands at
-- the head of the small sorted listpack (measured 40% cheaper than random order).
-- Take-downs are enforced HERE, atomically with the write, so a writer that scored before
-- a hide can never bring the resource back: hidden members are dropped (the writer sends
-- a few spare candidates, the list is cut to ARGV[5] after filtering), a hidden resource
-- gets no similar list, and a user forgotten after ARGV[7] gets nothing written.
-- Returns the ids whose lists lost hidden members (the caller refills them).
""" + LISTS_LUA + """
local k = #ARGV - 7
local fbytes = tonumber(ARGV[3])
local cap = tonumber(ARGV[5])
local forgotten = KEYS[#KEYS]
local is_hidden = hidden_test(KEYS[#KEYS - 1])
local users = ARGV[6] == 'u'
local seq = tonumber(ARGV[7]) or -1
local any_forgotten = users and redis.call('ZCARD', forgotten) > 0
local pos = 1
local written, cut = {}, {}
for i = 1, k do
  local key, id = KEYS[i + 1], ARGV[7 + i]
  local skip = false
  if users then
    if any_forgotten then
      local f = redis.call('ZSCORE', forgotten, redis.sha1hex(id))
      skip = f and tonumber(f) > seq
    end
  else
    skip = is_hidden ~= nil and is_hidden(id)
  end
  redis.call('DEL', key)
  if skip then
    pos = skip_list(ARGV[1], i, pos)
  else
    local args
    args, pos = read_list(ARGV[1], ARGV[2], i, pos)
    local last, found
    args, last, found = visible(args, cap, is_hidden)
    if found then cut[#cut + 1] = id end
    if last > 0 then redis.call('ZADD', key, unpack(args, 1, last)) end
  end
  if fbytes > 0 then
    if skip then
      redis.call('DEL', KEYS[k + 1 + i])
    else
      redis.call('SET', KEYS[k + 1 + i], string.sub(ARGV[4], (i - 1) * fbytes + 1, i * fbytes))
    end
  end
  if not skip then written[#written + 1] = id end
end
if #written > 0 then redis.call('SADD', KEYS[1], unpack(written)) end
return cut
"""


@dataclass
class Lists:
    """Top-n lists for a batch of ids: row i is the list of ``ids[i]``, best first."""

    ids: Sequence
    """Resource ids (ints) for similar lists, user ids (str) for recommendations."""
    members: np.ndarray
    """len(ids) x n resource ids; 0 or negative marks an empty slot."""
    scores: np.ndarray
    """len(ids) x n scores (float32 on the wire), best first."""
    factors: np.ndarray | None = None
    """len(ids) x factors float32 user factors, written beside the lists (users only)."""


@dataclass
class PublishReport:
    """What :meth:`Publisher.remove_uncovered` did besides removing, and each step's time."""

    spared_users: int = 0
    """Uncovered users kept because they have views newer than the training counts."""
    refolded_users: int = 0
    """Removed users who still have views, queued for the updater to fold in."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per publish step (similar, users, switch, remove; requeue set by the caller)."""


def new_version() -> str:
    """A unique, sortable version string: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(4)


class Publisher:
    """Writes one model of one language; see the module docstring for the order of steps.

    ``entries_per_call``: list entries per script call (bounds a reader's wait);
    ``calls_per_round_trip``: script calls pipelined per round trip.
    ``after_chunk`` (tests): called after each round trip with (kind, ids written so far).
    ``top_n``: lists are cut to this length after hidden resources are dropped (0: as sent);
    send a few more candidates than that so a list stays ``top_n`` long after a take-down.
    ``seq``: the consumer seq read before the counts these lists come from; users forgotten
    after it get nothing written (None: any forgotten user is skipped). Per slot group, a
    mapping {group keys: S_g} (``store.groups.GroupSeqs``); one number holds for every group.
    """

    def __init__(self, client: redis.Redis, keys: Keys, lang: str, *,
                 lock: TrainLock | LockFence | None = None, entries_per_call: int = 500,
                 calls_per_round_trip: int = 40,
                 after_chunk: Callable[[str, int], None] | None = None,
                 top_n: int = 0, seq: int | Mapping[Keys, int] | None = None) -> None:
        self.client, self.keys, self.lang, self.lock = client, keys, lang, lock
        self.top_n, self.seq = top_n, seq
        self.entries_per_call = entries_per_call
        self.calls_per_round_trip = calls_per_round_trip
        self.after_chunk = after_chunk
        self.version = new_version()
        self.report = PublishReport()
        self._script = client.register_script(REPLACE_LISTS)
        preload(client, self._script)
        self._items_written: set[int] = set()
        self.cut: dict[str, set[str]] = {"similar": set(), "recs": set()}
        """Ids whose lists lost members hidden while this publish ran (to refill)."""
        self._users_written: set[str] = set()

    # -- step 1: lists ------------------------------------------------------------------

    def write_similar(self, batches: Iterable[Lists]) -> int:
        """Replace the similar lists of every resource in ``batches``; returns how many."""
        return self._write("similar", batches, step="similar")

    def write_users(self, batches: Iterable[Lists]) -> int:
        """Replace the recommendation lists and factors of every user in ``batches``."""
        return self._write("recs", batches, step="users")

    def _write(self, kind: str, batches: Iterable[Lists], step: str) -> int:
        """Send the script calls for ``batches``; a background thread draws the batches
        (the caller's scoring) and builds the calls while this one waits on Redis."""
        started = time.perf_counter()
        pipe = self.client.pipeline(transaction=False)
        written = 0
        for calls, done in prefetched(self._round_trips(kind, batches)):
            if self.lock is not None:
                self.lock.check()
            for call_keys, args in calls:
                script_call(pipe, self._script, call_keys, args)
            for cut in pipe.execute():
                self.cut[kind].update(c.decode() if isinstance(c, bytes) else str(c)
                                      for c in cut)
            written = done
            if self.after_chunk is not None:
                self.after_chunk(kind, done)
        self.report.seconds[step] = round(time.perf_counter() - started, 3)
        return written

    def _round_trips(self, kind: str, batches: Iterable[Lists]
                     ) -> Iterator[tuple[list[tuple[list, list]], int]]:
        """(the REPLACE_LISTS calls of one round trip, ids written once it is done)."""
        calls: list[tuple[list, list]] = []
        done = 0
        for batch in batches:
            members = np.asarray(batch.members)
            if members.ndim != 2:
                members = members.reshape(len(batch.ids), -1)
            scores = np.asarray(batch.scores).reshape(members.shape)
            factors = None if batch.factors is None else np.asarray(batch.factors, dtype="<f4")
            ids = [str(i) for i in batch.ids]
            per_call = max(1, self.entries_per_call // max(members.shape[1], 1))
            for side, rows in self._sides(kind, ids):
                part_ids = ids if rows is None else [ids[r] for r in rows]
                encoded = encode_lists(*((members, scores) if rows is None
                                         else (members[rows], scores[rows])))
                blobs = None if factors is None else (factors if rows is None else factors[rows])
                for call in self._calls(kind, side, part_ids, encoded, blobs, per_call):
                    calls.append(call)
                    done += len(call[1]) - 7  # the ids are the arguments after the first 7
                    if len(calls) >= self.calls_per_round_trip:
                        yield calls, done
                        calls = []
            if kind == "similar":
                self._items_written.update(int(i) for i in batch.ids)
            else:
                self._users_written.update(ids)
        if calls:
            yield calls, done

    def _sides(self, kind: str, ids: list[str]) -> Iterator[tuple[Keys, np.ndarray | None]]:
        """Where a batch's lists go: (keys, rows of the batch; None for all). Similar lists
        and one Redis: the batch as it is; users on a cluster: one part per slot group."""
        if kind == "similar" or not self.keys.cluster:
            yield self.keys, None
            return
        find = group_finder(self.keys)
        rows: dict[Keys, list[int]] = {}
        for i, user in enumerate(ids):
            rows.setdefault(find(user), []).append(i)
        for group, part in rows.items():
            yield group, np.asarray(part, dtype=np.int64)

    def _calls(self, kind: str, side: Keys, ids: list[str], encoded, factors,
               per_call: int) -> Iterator[tuple[list, list]]:
        """The REPLACE_LISTS calls writing ``ids``'s lists (all in ``side``'s slot)."""
        lang = self.lang
        if kind == "similar":
            id_set, list_key, factor_key = side.published_items(lang), side.similar, None
            # On a cluster forgotten is per group, and similar lists never read it:
            # hidden stands in its place so every key is on the item side.
            last = side.hidden(lang) if side.cluster else side.forgotten(lang)
            guard_keys = [side.hidden(lang), last]
        else:
            id_set, list_key, factor_key = side.published_users(lang), side.recs, side.factors
            guard_keys = [side.group_hidden(lang), side.forgotten(lang)]
        seq = self._seq_for(side)
        # Take-down filtering happens inside REPLACE_LISTS (see its header).
        filters = [int(self.top_n), "s" if kind == "similar" else "u",
                   "" if seq is None else int(seq)]
        fbytes = 0 if factors is None else factors.shape[1] * 4
        for s in range(0, len(ids), per_call):
            e = min(s + per_call, len(ids))
            part = ids[s:e]
            call_keys = [id_set, *(list_key(lang, i) for i in part)]
            if factor_key is not None:
                call_keys += [factor_key(lang, i) for i in part]
            blob = b"" if factors is None else factors[s:e].tobytes()
            yield (call_keys + guard_keys, [*encoded.part(s, e), fbytes, blob, *filters, *part])

    def _seq_for(self, side: Keys) -> int | None:
        """The seq bounding ``side``'s counts (None: unknown, e.g. the item side of a
        cluster, whose similar lists do not use it)."""
        if isinstance(self.seq, Mapping):
            return seq_of(self.seq, side) if side in self.seq else None
        return self.seq

    def add_users_written(self, ids: Iterable[str]) -> None:
        """Users whose lists other processes wrote for this publish with the same script
        (Spark executors), so :meth:`remove_uncovered` keeps them."""
        self._users_written.update(ids)

    @property
    def users_written(self) -> set[str]:
        """The users whose lists this publish wrote (the users the new model covers)."""
        return self._users_written

    # -- step 2: the switch (store.switch) ---------------------------------------------

    def switch(self, info: dict, item_ids: np.ndarray, item_factors: np.ndarray,
               item_totals: np.ndarray | None = None) -> str:
        """Make the new model live: model hash, item factors, item ids (and per-item view
        totals) replaced in one MULTI/EXEC (``store.switch``). Returns the new version."""
        started = time.perf_counter()
        switch_model(self.client, self.keys, self.lang, self.version, self.lock, info,
                     item_ids, item_factors, item_totals)
        self.report.seconds["switch"] = round(time.perf_counter() - started, 3)
        return self.version

    # -- step 3: what the new model no longer covers (store.uncovered) ------------------

    def remove_uncovered(self, seq: int | Mapping[Keys, int],
                         chunk: int = 500) -> tuple[int, int]:
        """Delete lists (and factors) of resources and users the new model does not cover.

        Users touched after ``seq`` are spared: their views are newer than the model's
        counts and the updater will refresh them (a new user would otherwise lose the list
        the updater just gave them). Per slot group with the group's S_g (``seq`` a mapping,
        or one number for all). Returns (resources removed, users removed)."""
        started = time.perf_counter()
        removed = remove_uncovered(self.client, self.keys, self.lang, seq,
                                   self._items_written, self._users_written, chunk)
        self.report.spared_users += removed.spared
        self.report.refolded_users += removed.refolded
        self.report.seconds["remove"] = round(time.perf_counter() - started, 3)
        return removed.resources, removed.users
