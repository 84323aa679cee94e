"""Finding the lists that still hold a hidden resource, in bounded steps: the scan a settle
of take-downs runs before refilling (store/settle.py refills the lists found and takes the
settled entries off the queue; store/control.py records the hides themselves).

Invariants:

- Every script call is a bounded step: a scan step makes about :data:`LIST_STEP_OPS`
  lookups, whatever the number of hides; the whole scan reads every published list once.
- A scan covers a queue position (:data:`BEGIN_LUA`: every ``takedown_work`` entry up to
  it), and its progress is in Redis (``takedown_scan``: that position and its cursors;
  ``takedown_found``: the lists found and not yet refilled), written in the same step as
  the work it records: a settle that dies, or whose call times out, resumes where it was
  and does nothing twice.
- On a Redis Cluster (docs/CLUSTER.md) every key a script touches is declared and in one
  slot: similar lists are scanned on the item side (``published_items``, ``hidden``); user
  lists per slot group, with the group's ``published_users``, its copy of ``hidden``
  (``group_hidden``), its found set and its own progress (``group_takedown_scan``: the
  scan's ``seq`` and the group's cursor), so a scan resumes group by group. The SSCAN step
  runs from the client and the lists it names are declared to :data:`SCAN_KEYS_LUA`, which
  records the step only if the cursor is still the one it read from. On one Redis the
  scripts and names are those of before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from store.control import ID_MARK
from store.keys import Keys
from store.read import text
from store.settle import Queued, work_done

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

LIST_STEP_OPS = 4000
"""Lookups one scan step makes (ZSCOREs, or members read and looked up): about a
millisecond of Redis time."""


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
