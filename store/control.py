"""Take-downs and forgetting, on the Redis side: the atomic control step, and the scripts that
clean and refill the lists a hidden resource was in. No ALS math here
(trainer/pipeline/takedown.py computes the refilled lists) and no Kafka
(consumers/control.py feeds control events in).

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
  lists that already hold it are found and refilled afterwards
  (trainer/pipeline/takedown.py); the queue entry is removed only when that is done, so a
  crash in between is finished by the next ``recs hide``/``recs control``.
- A forget removes, in one step per language, the user's views (their counts taken back
  from ``item_views``), factors, lists and every queue entry, and leaves a tombstone
  ``forgotten(lang)`` sha1(user) -> seq: a publish computed from counts read before that
  seq writes nothing for the user (REPLACE_LISTS). The next publish trims the tombstone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import redis

from store.counts import GUARDS_LUA, Applied, Guard, mismatches
from store.keys import Keys
from store.lists import LISTS_LUA, encode_lists

# The key templates CONTROL_LUA fills in: '\1' stands for the language, '\2' for an id.
_L, _I = "\1", "\2"
TEMPLATES = ("hidden", "similar", "published_items", "trending", "takedown_work", "views",
             "item_views", "factors", "recs", "dirty", "touched", "claims", "users",
             "published_users", "forgotten", "seq", "trending_seen")

CONTROL_LUA = GUARDS_LUA + """
-- KEYS[1]: guard HASH (the control topic's partition offsets; any key when there are no
-- guards). KEYS[2]: langs SET.
-- ARGV, flat: n_guards, then n_guards x (field, expected, new) ('' = absent / check only);
--   then the 17 key templates of TEMPLATES ('\\1' = language, '\\2' = id);
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
  'forgotten', 'seq', 'trending_seen'}
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

local function hide(lang, rid, value)
  redis.call('HSET', fill(T.hidden, lang), rid, value)
  redis.call('DEL', fill(T.similar, lang, rid))
  redis.call('SREM', fill(T.published_items, lang), rid)
  redis.call('ZREM', fill(T.trending, lang), rid)
  redis.call('HSET', fill(T.work, lang), rid, 'hide')
end

local function unhide(lang, rid)
  if redis.call('HDEL', fill(T.hidden, lang), rid) == 1 then
    redis.call('HSET', fill(T.work, lang), rid, 'unhide')
  end
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

HOLDERS_LUA = """
-- KEYS: lists (ZSETs). ARGV: resource ids.
-- Returns the 1-based positions of the KEYS that hold any of the ids: one ZSCORE per list
-- and id, no list is read whole.
local out = {}
for i, key in ipairs(KEYS) do
  for j = 1, #ARGV do
    if redis.call('ZSCORE', key, ARGV[j]) then
      out[#out + 1] = i
      break
    end
  end
end
return out
"""

REFILL_LUA = """
-- KEYS[1]: model HASH. KEYS[2]: hidden HASH. KEYS[3]: the SET naming the published lists
-- (published_users or published_items). KEYS[4 .. k+3]: the lists. KEYS[k+4 .. 2k+3]: the
-- users' factor keys (only when ARGV[4] > 0).
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
  local key, id = KEYS[3 + i], ARGV[7 + i]
  local ok = current and (ARGV[7] == '1' or redis.call('SISMEMBER', KEYS[3], id) == 1)
  if ok and fb > 0 then
    ok = redis.call('GET', KEYS[k + 3 + i]) == string.sub(ARGV[6], (i - 1) * fb + 1, i * fb)
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

    def run(self, ops: Sequence[ControlOp]) -> None:
        """Apply ``ops`` unguarded (the CLI)."""
        self.apply(self.keys.langs, [], ops)


def _template(keys: Keys, name: str) -> str:
    method = getattr(keys, name)
    if name in ("similar", "views", "factors", "recs"):
        return method(_L, _I)
    return method(_L)


# -- reading --------------------------------------------------------------------------------


def read_hidden(client: redis.Redis, keys: Keys, lang: str) -> dict[int, dict]:
    """The hidden resources of ``lang``: resource_id -> {"reason", "ts"}."""
    out = {}
    for rid, value in client.hgetall(keys.hidden(lang)).items():
        try:
            meta = json.loads(value)
        except ValueError:
            meta = {"reason": _text(value), "ts": None}
        out[int(rid)] = meta
    return out


def read_work(client: redis.Redis, keys: Keys, lang: str) -> dict[int, str]:
    """Hides and unhides whose lists are not settled yet: resource_id -> action."""
    return {int(k): _text(v) for k, v in client.hgetall(keys.takedown_work(lang)).items()}


def work_done(client: redis.Redis, keys: Keys, lang: str, done: dict[int, str]) -> int:
    """Take settled entries off the queue (unless a newer action replaced them)."""
    if not done:
        return 0
    args = [x for rid, action in done.items() for x in (rid, action)]
    return int(client.register_script(DONE_LUA)(keys=[keys.takedown_work(lang)], args=args))


def iter_members(client: redis.Redis, key: str, count: int = 1000) -> Iterator[list[str]]:
    """Batches of a SET's members, each once (SSCAN may repeat one during a rehash)."""
    seen: set[bytes] = set()
    cursor = 0
    while True:
        cursor, members = client.sscan(key, cursor, count=count)
        fresh = [m for m in members if m not in seen]
        seen.update(fresh)
        if fresh:
            yield [_text(m) for m in fresh]
        if cursor == 0:
            return


def find_holders(client: redis.Redis, id_set: str, list_key, rids: Sequence[int],
                 chunk: int = 500, calls_per_round_trip: int = 20) -> list[str]:
    """The ids (members of ``id_set``) whose list ``list_key(id)`` holds any of ``rids``:
    one ZSCORE per published list and resource, server-side, a chunk of lists per call."""
    if not rids:
        return []
    script = client.register_script(HOLDERS_LUA)
    args = [str(int(r)) for r in rids]
    out: list[str] = []
    pipe = client.pipeline(transaction=False)
    queued: list[list[str]] = []

    def flush() -> None:
        for part, hits in zip(queued, pipe.execute(), strict=True):
            out.extend(part[int(h) - 1] for h in hits)
        queued.clear()

    for batch in iter_members(client, id_set, count=1000):
        for s in range(0, len(batch), chunk):
            part = batch[s:s + chunk]
            script(keys=[list_key(i) for i in part], args=args, client=pipe)
            queued.append(part)
            if len(queued) >= calls_per_round_trip:
                flush()
    if queued:
        flush()
    return out


def read_factors_and_views(client: redis.Redis, keys: Keys, lang: str, users: Sequence[str]
                           ) -> tuple[list[bytes | None], list[dict]]:
    """Each user's published factors (raw bytes, None when absent) and views hash (raw
    field -> count), in one pipelined round trip: what a refill scores a user's list from."""
    pipe = client.pipeline(transaction=False)
    for u in users:
        pipe.get(keys.factors(lang, u))
        pipe.hgetall(keys.views(lang, u))
    replies = pipe.execute()
    return replies[0::2], replies[1::2]


def write_refilled(client: redis.Redis, keys: Keys, lang: str, *, version: str, users: bool,
                   ids: Sequence[str], members: np.ndarray, scores: np.ndarray, top_n: int,
                   factors: Sequence[bytes] | None = None, create: bool = False,
                   chunk: int = 25) -> tuple[int, int]:
    """Write refilled lists with :data:`REFILL_LUA`, ``chunk`` lists per script call (about
    a millisecond of server time: readers wait at most that), every call of ``ids`` in one
    pipelined round trip; returns (refilled, only cleaned)."""
    script = client.register_script(REFILL_LUA)
    id_set = keys.published_users(lang) if users else keys.published_items(lang)
    list_key = keys.recs if users else keys.similar
    encoded = encode_lists(np.asarray(members).reshape(len(ids), -1), scores)
    fb = len(factors[0]) if users and factors else 0
    pipe = client.pipeline(transaction=False)
    for s in range(0, len(ids), chunk):
        part = [str(i) for i in ids[s:s + chunk]]
        call_keys = [keys.model(lang), keys.hidden(lang), id_set,
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
