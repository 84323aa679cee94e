"""Settling take-downs, on the Redis side: find the lists that still hold a hidden resource in
bounded steps, refill them, and take settled entries off the queue. No ALS math here
(trainer/pipeline/takedown.py computes the refilled lists); store/control.py records the
hides themselves.

Invariants:

- Every script call is a bounded step: a scan step makes about :data:`LIST_STEP_OPS`
  lookups, a refill writes 25 lists, a dequeue removes :data:`PAIRS_PER_CALL` entries.
- A settle's progress is in Redis (``takedown_scan``: the queue position it covers and its
  cursors; ``takedown_found``: the lists found and not yet refilled), written in the same
  step as the work it records: a settle that dies, or whose call times out, resumes where
  it was and does nothing twice.
- A refilled list never holds a hidden resource: :data:`REFILL_LUA` drops them inside the
  write, as every list writer does.
- On a Redis Cluster (docs/CLUSTER.md) every key a script touches is declared and in one
  slot: similar lists are scanned and refilled on the item side (``published_items``,
  ``hidden``); user lists per slot group, with the group's ``published_users``, its copy
  of ``hidden`` (``group_hidden``) and of the model (``group_model``), its found set and
  its own progress (``group_takedown_scan``: the scan's ``seq`` and the group's cursor), so
  a settle resumes group by group. The SSCAN step runs from the client and the lists it
  names are declared to :data:`SCAN_KEYS_LUA`, which records the step only if the cursor
  is still the one it read from. On one Redis the scripts and names are those of before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from store.control import ID_MARK
from store.keys import Keys
from store.lists import LISTS_LUA, encode_lists
from store.read import text

BEGIN_LUA = """
-- KEYS[1] takedown_scan HASH, KEYS[2] takedown_work HASH, KEYS[3] takedown_seq STRING.
-- The queue position a settle covers: the one of the scan in progress (a settle that died
-- is resumed), else, when anything is queued, a new scan covering every entry so far.
-- Returns the position, or false when nothing is queued.
local held = redis.call('HGET', KEYS[1], 'seq')
if held then return held end
if redis.call('HLEN', KEYS[2]) == 0 then return false end
local seq = redis.call('GET', KEYS[3]) or '0'
redis.call('HSET', KEYS[1], 'seq', seq, 'users', '0', 'items', '0')
return seq
"""

SCAN_LUA = """
-- One bounded step of finding the lists that hold hidden resources.
-- KEYS[1] takedown_scan HASH (the SSCAN cursor of each kind), KEYS[2] hidden HASH,
-- KEYS[3] the SET naming the published lists, KEYS[4] the SET of ids found so far.
-- ARGV[1] the lists' key template ('\\2' stands for an id), ARGV[2] SSCAN COUNT,
-- ARGV[3] the cursor's field ('users' or 'items'); ARGV[4..]: resource ids looked up with
-- one ZSCORE each, or none: every member of a list is looked up in KEYS[2].
-- The step and its progress are one write: the ids found and the next cursor ('done' at
-- the end), so a retried call goes on from where the last one ended. Returns the cursor.
local cursor = redis.call('HGET', KEYS[1], ARGV[3]) or '0'
if cursor == 'done' then return cursor end
local reply = redis.call('SSCAN', KEYS[3], cursor, 'COUNT', ARGV[2])
local at = string.find(ARGV[1], '\\2', 1, true)
local head, tail = string.sub(ARGV[1], 1, at - 1), string.sub(ARGV[1], at + 1)
for _, id in ipairs(reply[2]) do
  local key = head .. id .. tail
  local holds = false
  if #ARGV > 3 then
    for j = 4, #ARGV do
      if redis.call('ZSCORE', key, ARGV[j]) then holds = true break end
    end
  else
    for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
      if redis.call('HEXISTS', KEYS[2], m) == 1 then holds = true break end
    end
  end
  if holds then redis.call('SADD', KEYS[4], id) end
end
local next_cursor = reply[1] == '0' and 'done' or reply[1]
redis.call('HSET', KEYS[1], ARGV[3], next_cursor)
return next_cursor
"""

SCAN_KEYS_LUA = """
-- SCAN_LUA's step with every list declared (a Redis Cluster; the caller ran the SSCAN).
-- KEYS[1] progress HASH, KEYS[2] hidden HASH (a group's copy for user lists), KEYS[3] the
-- SET of ids found, KEYS[4 .. k+3] the lists of the step.
-- ARGV[1] the cursor's field, ARGV[2] the cursor the SSCAN read from, ARGV[3] the cursor
-- after it ('done' at the end), ARGV[4] n, ARGV[5 .. n+4] resource ids looked up with one
-- ZSCORE each (n = 0: every member in KEYS[2]), ARGV[n+5 ..] the k ids of the lists.
-- A step whose cursor has moved on meanwhile (a retry) records nothing. Returns the cursor.
local held = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if held ~= ARGV[2] then return held end
local n = tonumber(ARGV[4])
for i = 4, #KEYS do
  local holds = false
  if n > 0 then
    for j = 5, n + 4 do
      if redis.call('ZSCORE', KEYS[i], ARGV[j]) then holds = true break end
    end
  else
    for _, m in ipairs(redis.call('ZRANGE', KEYS[i], 0, -1)) do
      if redis.call('HEXISTS', KEYS[2], m) == 1 then holds = true break end
    end
  end
  if holds then redis.call('SADD', KEYS[3], ARGV[n + 5 + i - 4]) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return ARGV[3]
"""

GROUP_BEGIN_LUA = """
-- A slot group's part of the scan covering queue position ARGV[1] (a Redis Cluster).
-- KEYS[1] the group's progress HASH, KEYS[2] its found SET. Progress of an older scan is
-- dropped (its found lists were settled by it); the scan's own is kept (a resume).
if redis.call('HGET', KEYS[1], 'seq') ~= ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'users', '0')
end
return redis.call('HGET', KEYS[1], 'users')
"""

REFILL_LUA = """
-- KEYS[1]: model HASH. KEYS[2]: hidden HASH. KEYS[3]: the SET naming the published lists
-- (published_users or published_items). KEYS[4]: the SET of lists a scan found to hold a
-- hidden resource (the ids written here leave it: progress kept with the write).
-- KEYS[5 .. k+4]: the lists. KEYS[k+5 .. 2k+4]: the users' factor keys (only when
-- ARGV[4] > 0).
-- ARGV[1]: the model version the lists were computed from.
-- ARGV[2], ARGV[5]: the k lists as store.lists encodes them (lengths, entries).
-- ARGV[3]: list length kept (N). ARGV[4]: factor bytes per id (0: similar lists).
-- ARGV[6]: the factors the lists were computed from, k x ARGV[4] bytes.
-- ARGV[7]: '1' to create lists not named in KEYS[3] (a restore), '0' to refill only
-- lists that exist. ARGV[8 .. k+7]: the ids.
-- A list is replaced only if the model version is unchanged, it is still published (or
-- ARGV[7] = '1') and, for a user, the factors are those the list was computed from;
-- otherwise someone rewrote it meanwhile and it is only cleaned (hidden members removed).
-- Hidden members are dropped from the refill too. Returns {refilled, cleaned}.
""" + LISTS_LUA + """
local k = #ARGV - 7
local cap, fb = tonumber(ARGV[3]), tonumber(ARGV[4])
local current = redis.call('HGET', KEYS[1], 'version') == ARGV[1]
local is_hidden = hidden_test(KEYS[2])
local refilled, cleaned = 0, 0
local pos = 1
for i = 1, k do
  local key, id = KEYS[4 + i], ARGV[7 + i]
  local ok = current and (ARGV[7] == '1' or redis.call('SISMEMBER', KEYS[3], id) == 1)
  if ok and fb > 0 then
    ok = redis.call('GET', KEYS[k + 4 + i]) == string.sub(ARGV[6], (i - 1) * fb + 1, i * fb)
  end
  if ok then
    local args, last
    args, pos = read_list(ARGV[2], ARGV[5], i, pos)
    args, last = visible(args, cap, is_hidden)
    redis.call('DEL', key)
    if last > 0 then redis.call('ZADD', key, unpack(args, 1, last)) end
    if ARGV[7] == '1' then redis.call('SADD', KEYS[3], id) end
    refilled = refilled + 1
  else
    pos = skip_list(ARGV[2], i, pos)
    if is_hidden then
      for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
        if is_hidden(m) then redis.call('ZREM', key, m) end
      end
    end
    cleaned = cleaned + 1
  end
  redis.call('SREM', KEYS[4], id)
end
return {refilled, cleaned}
"""

DONE_LUA = """
-- KEYS[1]: takedown_work HASH. ARGV: pairs (resource id, action handled).
-- Removes the entries still holding the action handled (a newer hide/unhide stays queued).
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""

LIST_STEP_OPS = 4000
"""Lookups one scan step makes (ZSCOREs, or members read and looked up): about a
millisecond of Redis time."""
PAIRS_PER_CALL = 500
"""Queue entries one DONE call removes."""


@dataclass(frozen=True)
class Queued:
    """One ``takedown_work`` entry: the action and its queue position."""

    action: str
    seq: int
    raw: str
    """The entry as stored (what :data:`DONE_LUA` compares)."""


def read_work(client: redis.Redis, keys: Keys, lang: str) -> dict[int, Queued]:
    """Hides and unhides whose lists are not settled yet (HSCAN, bounded steps)."""
    out = {}
    for rid, value in client.hscan_iter(keys.takedown_work(lang), count=1000):
        raw = text(value)
        action, _, seq = raw.partition(":")
        out[int(rid)] = Queued(action, int(seq) if seq.isdigit() else 0, raw)
    return out


def work_done(client: redis.Redis, keys: Keys, lang: str, done: dict[int, Queued]) -> int:
    """Take settled entries off the queue (unless a newer action replaced them), a bounded
    number per call."""
    script = client.register_script(DONE_LUA)
    pairs = [x for rid, q in done.items() for x in (rid, q.raw)]
    step = 2 * PAIRS_PER_CALL
    return sum(int(script(keys=[keys.takedown_work(lang)], args=pairs[s:s + step]))
               for s in range(0, len(pairs), step))


# -- settling: find the lists that hold hidden resources, in bounded steps ------------------


def begin_scan(client: redis.Redis, keys: Keys, lang: str) -> int | None:
    """The queue position the settle covers (:data:`BEGIN_LUA`); None: nothing queued."""
    seq = client.register_script(BEGIN_LUA)(keys=[
        keys.takedown_scan(lang), keys.takedown_work(lang), keys.takedown_seq(lang)])
    return None if seq is None else int(seq)


def scan_lists(client: redis.Redis, keys: Keys, lang: str, kind: str,
               rids: Sequence[int] | None, max_steps: int | None = None,
               seq: int | None = None) -> bool:
    """Run :data:`SCAN_LUA` over every published list of ``kind`` (``users``: the users'
    lists, ``items``: similar lists) until its cursor is done: the ids of the lists holding
    one of ``rids`` (None: any hidden resource) end up in ``Keys.takedown_found``. Each step
    looks up about :data:`LIST_STEP_OPS` members, so its cost is fixed whatever the number
    of hides; the whole scan reads every published list once. ``max_steps``: stop after
    that many (a settle done in slices); returns whether the scan of ``kind`` is done.
    On a cluster user lists are scanned group by group (``seq``: the scan's queue
    position, what each group's progress belongs to; ``max_steps`` counts over them)."""
    if keys.cluster:
        return _scan_cluster(client, keys, lang, kind, rids, max_steps, seq)
    script = client.register_script(SCAN_LUA)
    users = kind == "users"
    template = keys.recs(lang, ID_MARK) if users else keys.similar(lang, ID_MARK)
    id_set = keys.published_users(lang) if users else keys.published_items(lang)
    count = _step_count(rids)
    call_keys = [keys.takedown_scan(lang), keys.hidden(lang), id_set,
                 keys.takedown_found(lang, kind)]
    args = [template, count, kind, *(str(int(r)) for r in rids or ())]
    steps = 0
    while max_steps is None or steps < max_steps:
        steps += 1
        if text(script(keys=call_keys, args=args)) == "done":
            return True
    return False


def _step_count(rids: Sequence[int] | None) -> int:
    per_list = len(rids) if rids else 21  # a list of 20 read, each member looked up
    return max(10, min(500, LIST_STEP_OPS // per_list))


@dataclass(frozen=True)
class _ListSet:
    """One SET of published lists a cluster scan walks, with the keys of its slot."""

    progress: str
    field: str
    hidden: str
    ids: str
    found: str
    list_key: Callable[[str], str]


def _scan_cluster(client, keys: Keys, lang: str, kind: str, rids: Sequence[int] | None,
                  max_steps: int | None, seq: int | None) -> bool:
    """:func:`scan_lists` on a cluster: similar lists on the item side, user lists in each
    slot group (its own progress, its copy of ``hidden``), the groups stepped together."""
    if kind == "items":
        sets = [_ListSet(keys.takedown_scan(lang), "items", keys.hidden(lang),
                         keys.published_items(lang), keys.takedown_found(lang, "items"),
                         lambda i: keys.similar(lang, i))]
        cursors = [text(client.hget(sets[0].progress, "items") or b"0")]
        return _scan_sets(client, sets, cursors, rids, max_steps)
    sets = [_ListSet(g.group_takedown_scan(lang), "users", g.group_hidden(lang),
                     g.published_users(lang), g.group_takedown_found(lang, "users"),
                     lambda u, g=g: g.recs(lang, u)) for g in keys.slot_groups()]
    pipe = client.pipeline(transaction=False)
    for one in sets:  # EVAL by hand: a cluster pipeline has no eval()
        pipe.execute_command("EVAL", GROUP_BEGIN_LUA, 2, one.progress, one.found,
                             str(seq if seq is not None else 0))
    return _scan_sets(client, sets, [text(c) for c in pipe.execute()], rids, max_steps)


def _scan_sets(client, sets: list[_ListSet], cursors: list[str], rids: Sequence[int] | None,
               max_steps: int | None) -> bool:
    """SSCAN steps of every set from its cursor, a round of steps (one per set not done)
    in two pipelined round trips: the SSCANs, then :data:`SCAN_KEYS_LUA` with each step's
    lists declared, which records it. Until every set is done (True) or ``max_steps``
    steps were made in all (False)."""
    looked = [str(int(r)) for r in rids or ()]
    count = _step_count(rids)
    active = [(one, c) for one, c in zip(sets, cursors, strict=True) if c != "done"]
    budget = max_steps
    while active:
        if budget is not None and budget <= 0:
            return False
        step = active if budget is None else active[:budget]
        budget = None if budget is None else budget - len(step)
        pipe = client.pipeline(transaction=False)
        for one, cursor in step:
            pipe.sscan(one.ids, int(cursor), count=count)
        pipe2 = client.pipeline(transaction=False)
        for (one, cursor), (after, ids) in zip(step, pipe.execute(), strict=True):
            ids = [text(i) for i in ids]
            call_keys = [one.progress, one.hidden, one.found, *(one.list_key(i) for i in ids)]
            pipe2.execute_command("EVAL", SCAN_KEYS_LUA, len(call_keys), *call_keys, one.field,
                                  cursor, "done" if int(after) == 0 else str(after),
                                  len(looked), *looked, *ids)
        moved = [(one, text(c)) for (one, _), c in zip(step, pipe2.execute(), strict=True)]
        active = [(one, c) for one, c in moved if c != "done"] + active[len(step):]
    return True


def found_lists(client: redis.Redis, keys: Keys, lang: str, kind: str,
                count: int) -> list[str]:
    """Up to ``count`` ids the scan found whose lists are not refilled yet (user lists on a
    cluster: of every slot group, read in one pipelined round trip)."""
    if kind == "users" and keys.cluster:
        pipe = client.pipeline(transaction=False)
        for group in keys.slot_groups():
            pipe.srandmember(group.group_takedown_found(lang, "users"), count)
        return sorted(text(m) for ms in pipe.execute() for m in ms)[:count]
    return sorted(text(m) for m in client.srandmember(keys.takedown_found(lang, kind), count))


def finish_scan(client: redis.Redis, keys: Keys, lang: str, covered: dict[int, Queued]) -> None:
    """Take the entries the scan settled off the queue and drop its state (on a cluster
    every group's too)."""
    work_done(client, keys, lang, covered)
    client.unlink(keys.takedown_scan(lang), keys.takedown_found(lang, "items"),
                  *(() if keys.cluster else (keys.takedown_found(lang, "users"),)))
    if keys.cluster:
        pipe = client.pipeline(transaction=False)
        for group in keys.slot_groups():
            pipe.unlink(group.group_takedown_scan(lang))  # one key a call: a cluster pipeline
            pipe.unlink(group.group_takedown_found(lang, "users"))
        pipe.execute()


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


def write_refilled(client: redis.Redis, keys: Keys, lang: str, *, version: str, users: bool,
                   ids: Sequence[str], members: np.ndarray, scores: np.ndarray, top_n: int,
                   factors: Sequence[bytes] | None = None, create: bool = False,
                   chunk: int = 25) -> tuple[int, int]:
    """Write refilled lists with :data:`REFILL_LUA`, ``chunk`` lists per script call (about
    a millisecond of server time: readers wait at most that), every call of ``ids`` in one
    pipelined round trip; each call also takes its ids out of ``Keys.takedown_found``.
    User lists are written per slot group, with the group's keys (one group on one Redis).
    Returns (refilled, only cleaned)."""
    script = client.register_script(REFILL_LUA)
    members = np.asarray(members).reshape(len(ids), -1)
    scores = np.asarray(scores).reshape(members.shape)
    fb = len(factors[0]) if users and factors else 0
    groups: dict[Keys, list[int]] = {}
    for row, i in enumerate(ids):
        groups.setdefault(keys.for_user(str(i)) if users else keys, []).append(row)
    pipe = client.pipeline(transaction=False)
    for group, rows in groups.items():
        if users:
            side = [group.group_model(lang), group.group_hidden(lang),
                    group.published_users(lang), group.group_takedown_found(lang, "users")]
        else:
            side = [keys.model(lang), keys.hidden(lang), keys.published_items(lang),
                    keys.takedown_found(lang, "items")]
        list_key = group.recs if users else group.similar
        encoded = encode_lists(members[rows], scores[rows])
        for s in range(0, len(rows), chunk):
            part = [str(ids[r]) for r in rows[s:s + chunk]]
            call_keys = [*side, *(list_key(lang, i) for i in part)]
            blob = b""
            if fb:
                call_keys += [group.factors(lang, i) for i in part]
                blob = b"".join(factors[r] for r in rows[s:s + chunk])
            lengths, entries = encoded.part(s, s + len(part))
            args = [version, lengths, top_n, fb, entries, blob, "1" if create else "0", *part]
            if keys.cluster:  # EVAL: a node a reshard brings has no script cache to miss
                pipe.execute_command("EVAL", REFILL_LUA, len(call_keys), *call_keys, *args)
            else:
                script(keys=call_keys, client=pipe, args=args)
    done = cleaned = 0
    for a, b in pipe.execute():
        done, cleaned = done + int(a), cleaned + int(b)
    return done, cleaned
