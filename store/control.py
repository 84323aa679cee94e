"""Take-downs and forgetting, on the Redis side: the atomic control step, and the scripts that
clean and refill the lists a hidden resource was in. No ALS math here (trainer/takedown.py
computes the refilled lists) and no Kafka (consumers/control.py feeds control events in).

Invariants:

- A hide, unhide or forget is ONE script (:data:`CONTROL_LUA`), optionally guarded by the
  control topic's partition offsets exactly like the view counts (store/counts.py), so a
  control event applies exactly once however often it is sent. The CLI calls the same
  script without guards.
- A hide records the resource in ``hidden(lang)``, deletes its own similar list, takes it
  out of the trending list and queues it in ``takedown_work(lang)`` in the same step. From
  that moment every list writer drops it inside its own write script (store/publish.py
  REPLACE_LISTS, store/updates.py COMMIT_SCRIPT, :data:`REFILL_LUA`, all reading lists with
  store.lists.LISTS_LUA): a writer that scored before the hide cannot bring it back. The
  lists that already hold it are found and refilled afterwards (trainer/takedown.py); the
  queue entry is removed only when that is done, so a crash in between is finished by the
  next ``recs hide``/``recs control``.
- No script call holds Redis for long, however many resources are hidden at once: the CLI
  sends :data:`OPS_PER_CALL` operations per call; finding the lists is a scan of the
  published lists in steps of about :data:`LIST_STEP_OPS` lookups (:data:`SCAN_LUA`), each
  looking up a list's ids in the hidden hash when many resources are queued (its cost then
  does not grow with their number) or ZSCOREs of the few queued; refills are
  :func:`write_refilled` calls of 25 lists.
- A settle's progress is in Redis (``takedown_scan``: the queue position it covers and its
  cursors; ``takedown_found``: the lists found and not yet refilled), written in the same
  step as the work it records: a settle that dies or whose call times out is resumed where
  it was, never started over, and nothing is done twice.
- A forget removes, in one step per language, the user's views (their counts taken back
  from ``item_views``), factors, lists and every queue entry, and leaves a tombstone
  ``forgotten(lang)`` sha1(user) -> seq: a publish computed from counts read before that
  seq writes nothing for the user (REPLACE_LISTS). The next publish trims the tombstone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import redis

from store.counts import GUARDS_LUA, Applied, Guard, mismatches
from store.keys import Keys
from store.lists import LISTS_LUA, encode_lists

# The key templates CONTROL_LUA fills in: '\1' stands for the language, '\2' for an id.
_L, _I = "\1", "\2"
TEMPLATES = ("hidden", "similar", "published_items", "trending", "takedown_work", "views",
             "item_views", "factors", "recs", "dirty", "touched", "claims", "users",
             "published_users", "forgotten", "seq", "trending_seen", "takedown_seq")

CONTROL_LUA = GUARDS_LUA + """
-- KEYS[1]: guard HASH (the control topic's partition offsets; any key when there are no
-- guards). KEYS[2]: langs SET.
-- ARGV, flat: n_guards, then n_guards x (field, expected, new) ('' = absent / check only);
--   then the 18 key templates of TEMPLATES ('\\1' = language, '\\2' = id);
--   then n_ops, then per op: action ('hide' | 'unhide' | 'forget'), lang ('' = every
--   language in KEYS[2]), target (resource id, or user id for forget), value (hide: JSON
--   {reason, ts}).
-- Returns {} when applied; else {field, held value or '', ...} of the guards that failed,
-- and nothing was written.
local guard = KEYS[1]
local bad, i, n = check_guards(guard)
if #bad > 0 then return bad end
for g = 2, 1 + 3 * n, 3 do
  if ARGV[g + 2] ~= '' then redis.call('HSET', guard, ARGV[g], ARGV[g + 2]) end
end

local names = {'hidden', 'similar', 'published_items', 'trending', 'work', 'views',
  'item_views', 'factors', 'recs', 'dirty', 'touched', 'claims', 'users', 'published_users',
  'forgotten', 'seq', 'trending_seen', 'work_seq'}
local T = {}
for j, name in ipairs(names) do T[name] = ARGV[i + j - 1] end
i = i + #names

local function fill(tpl, lang, id)
  local a = string.find(tpl, '\\1', 1, true)
  local s = string.sub(tpl, 1, a - 1) .. lang .. string.sub(tpl, a + 1)
  if id then
    local b = string.find(s, '\\2', 1, true)
    s = string.sub(s, 1, b - 1) .. id .. string.sub(s, b + 1)
  end
  return s
end

-- A queue entry is 'action:seq': the scan that settles it covers every entry up to its
-- starting seq (store/control.py begin_scan).
local function queue(lang, rid, action)
  local seq = redis.call('INCR', fill(T.work_seq, lang))
  redis.call('HSET', fill(T.work, lang), rid, action .. ':' .. seq)
end

local function hide(lang, rid, value)
  redis.call('HSET', fill(T.hidden, lang), rid, value)
  redis.call('DEL', fill(T.similar, lang, rid))
  redis.call('SREM', fill(T.published_items, lang), rid)
  redis.call('ZREM', fill(T.trending, lang), rid)
  queue(lang, rid, 'hide')
end

local function unhide(lang, rid)
  if redis.call('HDEL', fill(T.hidden, lang), rid) == 1 then queue(lang, rid, 'unhide') end
end

local function forget(lang, user)
  local vkey = fill(T.views, lang, user)
  local h = redis.call('HGETALL', vkey)
  local items, seen = fill(T.item_views, lang), fill(T.trending_seen, lang)
  for j = 1, #h, 2 do
    if redis.call('HINCRBY', items, h[j], -tonumber(h[j + 1])) <= 0 then
      redis.call('HDEL', items, h[j])
    end
    -- The trending reference drops too: no negative difference, no views lost after it.
    if redis.call('HEXISTS', seen, h[j]) == 1 and
        redis.call('HINCRBY', seen, h[j], -tonumber(h[j + 1])) <= 0 then
      redis.call('HDEL', seen, h[j])
    end
  end
  local gone = redis.call('DEL', vkey, fill(T.factors, lang, user), fill(T.recs, lang, user))
  for _, name in ipairs({'dirty', 'touched', 'claims'}) do
    gone = gone + redis.call('ZREM', fill(T[name], lang), user)
  end
  gone = gone + redis.call('SREM', fill(T.users, lang), user)
  gone = gone + redis.call('SREM', fill(T.published_users, lang), user)
  if gone > 0 then
    local seq = redis.call('INCR', fill(T.seq, lang))
    redis.call('ZADD', fill(T.forgotten, lang), seq, redis.sha1hex(user))
  end
end

local n_ops = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_ops do
  local action, lang, target, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local langs = {lang}
  if lang == '' then langs = redis.call('SMEMBERS', KEYS[2]) end
  for _, l in ipairs(langs) do
    if action == 'hide' then hide(l, target, value)
    elseif action == 'unhide' then unhide(l, target)
    elseif action == 'forget' then forget(l, target) end
  end
end
return {}
"""

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

ACTIONS = ("hide", "unhide", "forget")
OPS_PER_CALL = 200
"""Control operations per unguarded script call (a hide is five writes per language)."""
LIST_STEP_OPS = 4000
"""Lookups one scan step makes (ZSCOREs, or members read and looked up): about a
millisecond of Redis time."""
PAIRS_PER_CALL = 500
"""Queue entries one DONE call removes."""


@dataclass(frozen=True)
class ControlOp:
    """One hide, unhide or forget; ``lang`` None means every language in ``recs:langs``."""

    action: str
    target: str
    """The resource id (decimal) for hide/unhide, the user id for forget."""
    lang: str | None = None
    reason: str | None = None
    ts: int | None = None
    """When the platform took the decision (ms since the epoch); now if not given."""

    def value(self) -> str:
        """What ``hidden(lang)`` holds for a hidden resource: JSON {reason, ts}."""
        ts = self.ts if self.ts is not None else int(time.time() * 1000)
        return json.dumps({"reason": self.reason or "", "ts": ts}, sort_keys=True)


class Control:
    """:data:`CONTROL_LUA` bound to one client; ``apply`` has the shape of
    ``store.counts.Counts.apply`` so the Kafka consumer loop can drive either."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self._script = client.register_script(CONTROL_LUA)
        self._templates = [_template(keys, name) for name in TEMPLATES]

    def write(self, guard_key: str, guards: Sequence[Guard],
              ops: dict[int, ControlOp] | Sequence[ControlOp]) -> Applied:
        """:meth:`apply` in the shape the views consumer's loop calls (store.counts.Counts.write);
        control operations are never parked."""
        return Applied(refused=self.apply(guard_key, guards, ops))

    def apply(self, guard_key: str, guards: Sequence[Guard],
              ops: dict[int, ControlOp] | Sequence[ControlOp]) -> dict[str, str | None]:
        """Apply ``ops`` in order if every guard holds; ``{}`` then, else the failed guards
        with what Redis holds (nothing written)."""
        args: list = [len(guards)]
        for f, expected, new in guards:
            args += (f, "" if expected is None else expected, "" if new is None else new)
        args += self._templates
        items = list(ops.values()) if isinstance(ops, dict) else list(ops)
        args.append(len(items))
        for op in items:
            args += (op.action, op.lang or "", op.target,
                     op.value() if op.action == "hide" else "")
        return mismatches(self._script(keys=[guard_key, self.keys.langs], args=args))

    def run(self, ops: Sequence[ControlOp], chunk: int = OPS_PER_CALL) -> None:
        """Apply ``ops`` unguarded (the CLI), ``chunk`` per script call so no call holds
        Redis for long; each op is idempotent, so a call sent again repeats nothing."""
        for s in range(0, len(ops), chunk):
            self.apply(self.keys.langs, [], ops[s:s + chunk])


def _template(keys: Keys, name: str) -> str:
    method = getattr(keys, name)
    if name in ("similar", "views", "factors", "recs"):
        return method(_L, _I)
    return method(_L)


# -- reading --------------------------------------------------------------------------------


def read_hidden(client: redis.Redis, keys: Keys, lang: str) -> dict[int, dict]:
    """The hidden resources of ``lang``: resource_id -> {"reason", "ts"} (read with HSCAN,
    a bounded step at a time)."""
    out = {}
    for rid, value in client.hscan_iter(keys.hidden(lang), count=1000):
        try:
            meta = json.loads(value)
        except ValueError:
            meta = {"reason": _text(value), "ts": None}
        out[int(rid)] = meta
    return out


def drop_hidden(views: pd.DataFrame, hidden: Iterable[int]) -> pd.DataFrame:
    """The views table without the rows of hidden resources."""
    hidden = list(hidden)
    if not hidden or views.empty:
        return views
    return views[~views["resource_id"].isin(hidden)].reset_index(drop=True)


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
        raw = _text(value)
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
               rids: Sequence[int] | None, max_steps: int | None = None) -> bool:
    """Run :data:`SCAN_LUA` over every published list of ``kind`` (``users``: the users'
    lists, ``items``: similar lists) until its cursor is done: the ids of the lists holding
    one of ``rids`` (None: any hidden resource) end up in ``Keys.takedown_found``. Each step
    looks up about :data:`LIST_STEP_OPS` members, so its cost is fixed whatever the number
    of hides; the whole scan reads every published list once. ``max_steps``: stop after
    that many (a settle done in slices); returns whether the scan of ``kind`` is done."""
    script = client.register_script(SCAN_LUA)
    users = kind == "users"
    template = keys.recs(lang, _I) if users else keys.similar(lang, _I)
    id_set = keys.published_users(lang) if users else keys.published_items(lang)
    per_list = len(rids) if rids else 21  # a list of 20 read, each member looked up
    count = max(10, min(500, LIST_STEP_OPS // per_list))
    call_keys = [keys.takedown_scan(lang), keys.hidden(lang), id_set,
                 keys.takedown_found(lang, kind)]
    args = [template, count, kind, *(str(int(r)) for r in rids or ())]
    steps = 0
    while max_steps is None or steps < max_steps:
        steps += 1
        if _text(script(keys=call_keys, args=args)) == "done":
            return True
    return False


def found_lists(client: redis.Redis, keys: Keys, lang: str, kind: str,
                count: int) -> list[str]:
    """Up to ``count`` ids the scan found whose lists are not refilled yet."""
    return sorted(_text(m) for m in client.srandmember(keys.takedown_found(lang, kind), count))


def finish_scan(client: redis.Redis, keys: Keys, lang: str, covered: dict[int, Queued]) -> None:
    """Take the entries the scan settled off the queue and drop its state."""
    work_done(client, keys, lang, covered)
    client.unlink(keys.takedown_scan(lang), keys.takedown_found(lang, "users"),
                  keys.takedown_found(lang, "items"))


def write_refilled(client: redis.Redis, keys: Keys, lang: str, *, version: str, users: bool,
                   ids: Sequence[str], members: np.ndarray, scores: np.ndarray, top_n: int,
                   factors: Sequence[bytes] | None = None, create: bool = False,
                   chunk: int = 25) -> tuple[int, int]:
    """Write refilled lists with :data:`REFILL_LUA`, ``chunk`` lists per script call (about
    a millisecond of server time: readers wait at most that), every call of ``ids`` in one
    pipelined round trip; each call also takes its ids out of ``Keys.takedown_found``.
    Returns (refilled, only cleaned)."""
    script = client.register_script(REFILL_LUA)
    id_set = keys.published_users(lang) if users else keys.published_items(lang)
    found = keys.takedown_found(lang, "users" if users else "items")
    list_key = keys.recs if users else keys.similar
    encoded = encode_lists(np.asarray(members).reshape(len(ids), -1), scores)
    fb = len(factors[0]) if users and factors else 0
    pipe = client.pipeline(transaction=False)
    for s in range(0, len(ids), chunk):
        part = [str(i) for i in ids[s:s + chunk]]
        call_keys = [keys.model(lang), keys.hidden(lang), id_set, found,
                     *(list_key(lang, i) for i in part)]
        blob = b""
        if fb:
            call_keys += [keys.factors(lang, i) for i in part]
            blob = b"".join(factors[s:s + chunk])
        lengths, entries = encoded.part(s, s + len(part))
        script(keys=call_keys, client=pipe, args=[
            version, lengths, top_n, fb, entries, blob, "1" if create else "0", *part])
    done = cleaned = 0
    for a, b in pipe.execute():
        done, cleaned = done + int(a), cleaned + int(b)
    return done, cleaned


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
