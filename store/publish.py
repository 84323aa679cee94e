"""Publishing a trained model to Redis so that readers never see a gap, plus the trainer's
lock and its hand-over to the updater.

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
2. :meth:`Publisher.switch` then replaces ``model``, ``item_factors``, ``item_ids`` and
   ``item_totals`` in ONE MULTI/EXEC, under WATCH of the trainer's lock, so a trainer that
   lost its lock cannot switch. Until then the old model hash and item factors stay live
   (the updater keeps solving against them).
3. :meth:`Publisher.remove_uncovered` deletes the lists of ids the new model does not cover:
   the published SETs minus what step 1 wrote, sparing users with views newer than the
   counts the model was trained on (the updater is about to fold them into the new model).
4. :func:`requeue_touched` hands users with views newer than the counts to the updater, and
   settles the users it had pending when the counts were read.

Only one trainer publishes a language at a time: :class:`TrainLock` is SET NX PX with a
random token, renewed by a background thread while the holder works, released by
compare-and-delete.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import redis

from store.keys import Keys
from store.lists import LISTS_LUA, encode_lists

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

REQUEUE_TOUCHED = """
-- KEYS[1]: touched(lang). KEYS[2]: dirty(lang).
-- ARGV[1]: seq S read before the counts. ARGV[2]: at most this many entries to trim.
-- ARGV[3]: '1' to queue the users touched after S (the first call), '0' to only trim.
-- Views of batches after S may be missing from the counts the new model was trained on:
-- queue those users for the updater (score = their touched seq, never lowering a dirty
-- score) so it folds them into the new model. Entries up to S are in the model: trim them,
-- a bounded number per call (a first retrain may trim every user; one ZREMRANGEBYSCORE of
-- that many would stall readers). Scores only grow, so trimming later is as good as now.
-- Returns {users queued, entries trimmed}.
local queued = 0
if ARGV[3] == '1' then
  local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
  for i = 1, #later, 2 do
    redis.call('ZADD', KEYS[2], 'GT', later[i + 1], later[i])
  end
  queued = #later / 2
end
local n = math.min(redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]), tonumber(ARGV[2]))
if n > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1) end
return {queued, n}
"""

SETTLE_PENDING = """
-- KEYS[1]: dirty(lang). KEYS[2] (optional): forgotten(lang); a user forgotten after S is
-- never queued again. ARGV[1]: seq S read before the counts. ARGV[2]: c.
-- ARGV[3 .. 2+c]: users that were pending (dirty) when the counts were read and that the
-- new model covers; ARGV[3+c ..]: pending users it does not cover.
-- Runs after the new model is live. A pending user no longer in dirty was finished by the
-- updater meanwhile, perhaps against the old model after this publish wrote them: queue
-- them again (score S). A covered user still dirty at a score <= S has every view in the
-- new model, which just published their lists: drop them from the queue (an updater
-- holding them fails its version check and writes nothing). Users with newer views have a
-- score > S and stay. Returns {queued again, dropped}.
local s = tonumber(ARGV[1])
local covered = tonumber(ARGV[2])
local again, dropped = 0, 0
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  local gone = KEYS[2] and redis.call('ZSCORE', KEYS[2], redis.sha1hex(ARGV[i]))
  if not score then
    if not (gone and tonumber(gone) > s) then
      redis.call('ZADD', KEYS[1], s, ARGV[i])
      again = again + 1
    end
  elseif i <= 2 + covered and tonumber(score) <= s then
    redis.call('ZREM', KEYS[1], ARGV[i])
    dropped = dropped + 1
  end
end
return {again, dropped}
"""

RENEW_LOCK = """
-- KEYS[1]: the lock. ARGV[1]: our token. ARGV[2]: new expiry in ms.
-- Extends the lock only while it is still ours (it may have expired and been retaken).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LOCK = """
-- KEYS[1]: the lock. ARGV[1]: our token. Deletes it only if it is still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockLost(RuntimeError):
    """The trainer's lock expired or was taken over: stop before switching the model."""


class TrainLock:
    """One trainer per language: ``SET lock token NX PX ttl``, renewed while held.

    Use :meth:`acquire`, then ``with lock.kept_alive():`` around the work, then
    :meth:`release` (also in ``finally``). If a renewal finds the lock gone (the process
    stalled past the ttl and another trainer took over), :attr:`lost` turns true and
    :meth:`check` raises :class:`LockLost`."""

    def __init__(self, client: redis.Redis, key: str, ttl: float = 60.0) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = max(1000, int(ttl * 1000))
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        self.held = False
        self.lost = False
        self._renew = client.register_script(RENEW_LOCK)
        self._release = client.register_script(RELEASE_LOCK)

    def acquire(self, wait: float = 0.0, poll: float = 0.5,
                should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Take the lock, waiting up to ``wait`` seconds for its holder; False if not."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
                self.held, self.lost = True, False
                return True
            if time.monotonic() >= deadline or should_stop():
                return False
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def holder(self) -> str | None:
        """The token of whoever holds the lock now (for log lines)."""
        value = self.client.get(self.key)
        return value.decode() if value is not None else None

    def renew(self) -> bool:
        ok = bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))
        if not ok and self.held:
            self.lost = True
        return ok

    def check(self) -> None:
        if self.lost or not self.held:
            raise LockLost(f"lost the lock {self.key} (expired or taken over); not publishing")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(redis.RedisError):
                self._release(keys=[self.key], args=[self.token])
        self.held = False

    @contextlib.contextmanager
    def kept_alive(self) -> Iterator[TrainLock]:
        """Renew every ttl/3 from a background thread for the duration of the block."""
        stop = threading.Event()

        def renew_loop() -> None:
            while not stop.wait(self.ttl_ms / 3000):
                try:
                    if not self.renew():
                        log.error("trainer lock lost", extra={"fields": {"key": self.key}})
                        return
                except redis.RedisError as exc:  # try again next tick; ttl covers two misses
                    log.warning("could not renew the trainer lock: %s", exc)

        thread = threading.Thread(target=renew_loop, name="train-lock", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()


class LockFence:
    """A trainer lock seen from a process that does not hold it (a Spark executor writing
    lists for the driver that does): :meth:`check` asks Redis whether the lock still holds
    the holder's token, so writes stop once another trainer has taken over."""

    def __init__(self, client: redis.Redis, key: str, token: str) -> None:
        self.client, self.key, self.token = client, key, token

    def check(self) -> None:
        if self.client.get(self.key) != self.token.encode():
            raise LockLost(f"lost the lock {self.key} (expired or taken over); not publishing")


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
    after it get nothing written (None: any forgotten user is skipped).
    """

    def __init__(self, client: redis.Redis, keys: Keys, lang: str, *,
                 lock: TrainLock | LockFence | None = None, entries_per_call: int = 500,
                 calls_per_round_trip: int = 40,
                 after_chunk: Callable[[str, int], None] | None = None,
                 top_n: int = 0, seq: int | None = None) -> None:
        self.client, self.keys, self.lang, self.lock = client, keys, lang, lock
        self.top_n, self.seq = top_n, seq
        self.entries_per_call = entries_per_call
        self.calls_per_round_trip = calls_per_round_trip
        self.after_chunk = after_chunk
        self.version = new_version()
        self.report = PublishReport()
        self._script = client.register_script(REPLACE_LISTS)
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
                self._script(keys=call_keys, args=args, client=pipe)
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
        lang, keys = self.lang, self.keys
        if kind == "similar":
            id_set, list_key, factor_key = keys.published_items(lang), keys.similar, None
        else:
            id_set, list_key, factor_key = keys.published_users(lang), keys.recs, keys.factors
        calls: list[tuple[list, list]] = []
        done = 0
        # Take-down filtering happens inside REPLACE_LISTS (see its header).
        guard_keys = [keys.hidden(lang), keys.forgotten(lang)]
        filters = [int(self.top_n), "s" if kind == "similar" else "u",
                   "" if self.seq is None else int(self.seq)]
        for batch in batches:
            members = np.asarray(batch.members)
            if members.ndim != 2:
                members = members.reshape(len(batch.ids), -1)
            encoded = encode_lists(members, batch.scores)
            factors = None if batch.factors is None else np.asarray(batch.factors, dtype="<f4")
            fbytes = 0 if factors is None else factors.shape[1] * 4
            ids = [str(i) for i in batch.ids]
            per_call = max(1, self.entries_per_call // max(members.shape[1], 1))
            for s in range(0, len(ids), per_call):
                e = min(s + per_call, len(ids))
                part = ids[s:e]
                call_keys = [id_set, *(list_key(lang, i) for i in part)]
                if factor_key is not None:
                    call_keys += [factor_key(lang, i) for i in part]
                blob = b"" if factors is None else factors[s:e].tobytes()
                calls.append((call_keys + guard_keys,
                              [*encoded.part(s, e), fbytes, blob, *filters, *part]))
                if len(calls) >= self.calls_per_round_trip:
                    yield calls, done + e
                    calls = []
            done += len(ids)
            if kind == "similar":
                self._items_written.update(int(i) for i in batch.ids)
            else:
                self._users_written.update(ids)
        if calls:
            yield calls, done

    def add_users_written(self, ids: Iterable[str]) -> None:
        """Users whose lists other processes wrote for this publish with the same script
        (Spark executors), so :meth:`remove_uncovered` keeps them."""
        self._users_written.update(ids)

    @property
    def users_written(self) -> set[str]:
        """The users whose lists this publish wrote (the users the new model covers)."""
        return self._users_written

    # -- step 2: the switch -------------------------------------------------------------

    def switch(self, info: dict, item_ids: np.ndarray, item_factors: np.ndarray,
               item_totals: np.ndarray | None = None) -> str:
        """Make the new model live: model hash, item factors, item ids (and per-item view
        totals) replaced in one MULTI/EXEC. Returns the new version."""
        started = time.perf_counter()
        lang, keys = self.lang, self.keys
        item_ids = np.asarray(item_ids)
        if item_ids.size and (item_ids.min() < 1 or item_ids.max() > 0xFFFFFFFF):
            raise ValueError("resource ids must be in 1..4294967295")
        item_factors = np.ascontiguousarray(item_factors, dtype="<f4")
        if item_factors.shape[0] != item_ids.size:
            raise ValueError(f"{item_ids.size} item ids for {item_factors.shape[0]} factor rows")
        mapping = {k: _field(v) for k, v in info.items()}
        mapping["version"] = self.version
        with self.client.pipeline(transaction=True) as pipe:
            if self.lock is not None:
                pipe.watch(self.lock.key)
                if pipe.get(self.lock.key) != self.lock.token.encode():
                    self.lock.lost = True
                    raise LockLost(f"lost the lock {self.lock.key}; not switching the model")
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
                if self.lock is not None:
                    self.lock.lost = True
                raise LockLost(f"the lock {keys.train_lock(lang)} changed during the switch; "
                               "not switching the model") from None
        self.report.seconds["switch"] = round(time.perf_counter() - started, 3)
        return self.version

    # -- step 3: what the new model no longer covers ------------------------------------

    def remove_uncovered(self, seq: int, chunk: int = 500) -> tuple[int, int]:
        """Delete lists (and factors) of resources and users the new model does not cover.

        Users touched after ``seq`` are spared: their views are newer than the model's
        counts and the updater will refresh them (a new user would otherwise lose the list
        the updater just gave them). Returns (resources removed, users removed)."""
        started = time.perf_counter()
        lang, keys = self.lang, self.keys
        # SSCAN may return a member twice (during a rehash): hence the sets.
        stale_items = [m for m in set(self.client.sscan_iter(keys.published_items(lang),
                                                             count=1000))
                       if int(m) not in self._items_written]
        spared = {m.decode() for m in self.client.zrangebyscore(
            keys.touched(lang), f"({seq}", "+inf")}
        stale_users = []
        for m in set(self.client.sscan_iter(keys.published_users(lang), count=1000)):
            user = m.decode()
            if user in self._users_written:
                continue
            if user in spared:
                self.report.spared_users += 1
                continue
            stale_users.append(user)
        # Chunks of DEL/SREM (each command short for readers), all in one round trip. Keys
        # go before their SET entries: a crash in between leaves the SET naming a key that
        # is gone, which the next run removes again (harmless), never the reverse.
        pipe = self.client.pipeline(transaction=False)
        for s in range(0, len(stale_items), chunk):
            part = stale_items[s:s + chunk]
            pipe.delete(*(keys.similar(lang, m.decode()) for m in part))
            pipe.srem(keys.published_items(lang), *part)
        for s in range(0, len(stale_users), chunk):
            part = stale_users[s:s + chunk]
            pipe.delete(*(keys.recs(lang, u) for u in part), *(keys.factors(lang, u) for u in part))
            pipe.srem(keys.published_users(lang), *part)
        for user in stale_users:
            pipe.exists(keys.views(lang, user))
        replies = pipe.execute()
        has_views = replies[len(replies) - len(stale_users):]
        # Users filtered out (too few views) who still have views: the updater folds them
        # into the new model right away, so they lose their lists for moments, not until
        # their next view. Queued only now that their old-model lists are gone: versions
        # never mix.
        alive = [u for u, e in zip(stale_users, has_views, strict=True) if e]
        for s in range(0, len(alive), chunk):
            pipe.zadd(keys.dirty(lang), dict.fromkeys(alive[s:s + chunk], seq), gt=True)
        # Forgets recorded up to seq are in these counts: no older publish is in flight
        # (one trainer per language), so their tombstones have done their job.
        pipe.zremrangebyscore(keys.forgotten(lang), "-inf", seq)
        pipe.execute()
        self.report.refolded_users += len(alive)
        self.report.seconds["remove"] = round(time.perf_counter() - started, 3)
        return len(stale_items), len(stale_users)


@dataclass
class Handover:
    """What :func:`requeue_touched` changed in the updater's queue."""

    newer: int = 0
    """Users with views after the counts were read, queued for the updater."""
    again: int = 0
    """Pending users the updater finished during the publish, queued again."""
    dropped: int = 0
    """Pending users fully covered by the new model, taken off the queue."""


def requeue_touched(client: redis.Redis, keys: Keys, lang: str, seq: int,
                    pending: Sequence[str] = (), covered: Collection[str] = (),
                    chunk: int = 1000) -> Handover:
    """After the new model is live, settle the updater's queue for ``lang``:

    - every user whose views are newer than ``seq`` is queued (:data:`REQUEUE_TOUCHED`), and
      ``touched`` is trimmed;
    - ``pending`` (users dirty when the counts were read) are settled against ``covered``
      (the users the new model has lists for): see :data:`SETTLE_PENDING`.
    """
    out = Handover()
    settle = client.register_script(SETTLE_PENDING)
    requeue = client.register_script(REQUEUE_TOUCHED)
    requeue_keys = [keys.touched(lang), keys.dirty(lang)]
    mine = [u for u in pending if u in covered]
    others = [u for u in pending if u not in covered]
    pipe = client.pipeline(transaction=False)
    for group, is_covered in ((mine, True), (others, False)):
        for s in range(0, len(group), chunk):
            part = group[s:s + chunk]
            settle(keys=[keys.dirty(lang), keys.forgotten(lang)],
                   args=[seq, len(part) if is_covered else 0, *part], client=pipe)
    requeue(keys=requeue_keys, args=[seq, chunk, 1], client=pipe)
    *settled, (queued, trimmed) = pipe.execute()
    for again, dropped in settled:
        out.again += int(again)
        out.dropped += int(dropped)
    while int(trimmed) >= chunk:
        _, trimmed = requeue(keys=requeue_keys, args=[seq, chunk, 0])
    out.newer = int(queued)
    return out


def queue_for_updater(client: redis.Redis, keys: Keys, lang: str, users: Sequence[str],
                      seq: int, chunk: int = 1000) -> int:
    """Queue ``users`` in ``dirty(lang)`` at score ``seq`` (never lowering a higher score), so
    the updater folds them into the model now live; returns how many."""
    pipe = client.pipeline(transaction=False)
    for s in range(0, len(users), chunk):
        pipe.zadd(keys.dirty(lang), dict.fromkeys(users[s:s + chunk], seq), gt=True)
    pipe.execute()
    return len(users)


def prefetched(items: Iterable, depth: int = 2) -> Iterator:
    """Iterate ``items`` in a background thread, up to ``depth`` items ahead.

    The publisher's producer scores (numpy, which releases the GIL) and builds script
    arguments while the consuming thread waits on Redis, so Redis is never idle waiting for
    the client. An exception in the producer is raised in the consumer; a consumer that
    stops early stops the producer."""
    out: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(exc)

    thread = threading.Thread(target=produce, name="publish-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = out.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _field(value) -> str:
    """Model hash values as plain strings (numbers via repr, so they parse back exactly)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return str(value)
