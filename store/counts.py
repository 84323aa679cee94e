"""The one write path into the view counts: a Lua script that applies a batch atomically.

A batch is the aggregate ``{lang: {user_id: {resource_id: views}}}`` of some events, and
a list of *guards*: fields of one Redis HASH with the value the writer expects each to
hold and the value to set. The script first checks every guard; if any field holds
something else it writes NOTHING and returns the mismatching fields with what they hold.
Otherwise, in the same atomic step, it sets the guards and adds the counts:

- ``views(lang, user)`` HINCRBY and ``item_views(lang)`` HINCRBY (contract),
- ``langs`` SADD (contract), ``users(lang)`` SADD,
- ``seq(lang)`` INCR once per batch, and ``dirty(lang)`` / ``touched(lang)`` ZADD seq user
  for every user in the batch (the updater and the trainer rely on these).

The Kafka consumer guards with the partition offsets (field partition, expected = the next
offset it believes Redis holds, new = the next offset after the batch), which makes a batch
apply exactly once however often it is sent. The CSV backfill guards with its progress
record in ``Keys.backfills``. A guard whose expected value is ``None`` requires the field
to be absent; a guard whose new value is ``None`` only checks.

Poisoned keys (a views hash someone made a STRING, a field holding ``abc``, a count near
2^63): Redis does not roll back a script that errors, so the script never lets one error
out. Each user's increments run under ``redis.pcall``; on the first refusal that user's
increments are undone and its views go to ``quarantine(lang)`` with the reason, and the
other users are counted as usual (an item total that refuses is parked the same way). The
guards are written last, so the offsets advance exactly once with whatever was counted or
parked. ``store/quarantine.py`` re-applies parked views once the key is repaired
(``recs repair``). An internal key of the wrong type is found before the first write: the
script then refuses with an error and writes nothing. A Redis user without HINCRBY is not a
poisoned key: the first refusal, before anything is counted, fails the whole call with
Redis's permission error (only the language's ``seq`` has moved on) instead of parking it all.

Every key the script touches is declared in KEYS (``apply_keys``; the views keys too), so
one Lua source serves one Redis and a Redis Cluster. On one Redis a batch is one call (all
languages, one guard hash). On a cluster a batch is split by slot (``item_call``: a
language's item totals, guarded by ``item_offsets``; ``group_call``: one slot group's users,
guarded by its ``group_offsets``; ``progress_call``: guards only), and ``langs`` is added
outside the script (it has a slot of its own). A user parked there has its views in the item
totals already (the item-side call adds every valid view of the batch), so ``recs repair``
re-applies only its user side (store/quarantine.py). ``read_streams`` and
``restart_points`` read the per-stream progress (consumers/writer.py ``StreamWriter``).

Why a guard list rather than "skip if already applied": a writer that sees its guard
refused learns what Redis holds and can resume from there, which also covers Redis losing
its latest writes (failover to a lagging replica, restore from a snapshot).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from store.keys import Keys

Views = Mapping[str, Mapping[str, Mapping[int, int]]]
"""``{lang: {user_id: {resource_id: views}}}``, every count >= 1."""
Guard = tuple[str | int, str | int | None, str | int | None]
"""``(field, expected value or None for absent, new value or None for check only)``."""

GUARDS_LUA = """
-- store.counts guards. ARGV starts with n_guards, then n_guards x (field, expected, new).
-- check_guards(guard): {field, held value or '', ...} of every guard the HASH guard does
-- not hold as expected (empty when all hold), the ARGV index after the guards, n_guards.
local function check_guards(guard)
  local n = tonumber(ARGV[1])
  local bad = {}
  local i = 2
  for _ = 1, n do
    local held = redis.call('HGET', guard, ARGV[i]) or ''
    if held ~= ARGV[i + 1] then
      bad[#bad + 1] = ARGV[i]
      bad[#bad + 1] = held
    end
    i = i + 3
  end
  return bad, i, n
end
-- set_guards(guard, n): every guard's new value ('' = check only) into the HASH guard
-- (the counts scripts call it after their writes, the control script before them).
local function set_guards(guard, n)
  local sets = {}
  for g = 2, 1 + 3 * n, 3 do
    if ARGV[g + 2] ~= '' then
      sets[#sets + 1] = ARGV[g]
      sets[#sets + 1] = ARGV[g + 2]
    end
  end
  if #sets > 0 then
    redis.call('HSET', guard, unpack(sets))
  end
end
"""

COUNT_VIEWS_LUA = GUARDS_LUA + """
-- Apply one batch of view counts, guarded by compare-and-set fields of one hash.
-- KEYS[1]  langs SET; or the guard again (a cluster: the caller adds to langs itself,
--          outside the script, since langs has a slot of its own)
-- KEYS[2]  guard HASH (partition offsets, a stream's progress, backfill progress, or a
--          quarantine hash)
-- KEYS[3..] every other key the call touches, per language in ARGV order: the keys of its
--          header that are not '' (item_views, users, seq, dirty, touched, quarantine),
--          then (users mode) the views key of each of its users, in ARGV order
-- ARGV     flat, in this order:
--   n_guards, then n_guards x (field, expected, new); '' = absent / check only
--   n_langs, then per language a header of 9:
--     lang, views key prefix ('' on a cluster; else each views key must be prefix ..
--     user_id), item_views, users, seq, dirty, touched, quarantine, n,
--   then per language, in the same order, either (users mode: users key given)
--     n x (user_id, n_pairs, n_pairs x (resource_id, views)), item_views (when given)
--     getting the totals of what was counted; or (item mode: users key '', the item side
--     of a cluster) n x (resource_id, total) added to item_views.
--   The header's key names are the KEYS' own again (the script uses KEYS and refuses a
--   call whose two disagree): one Lua source for one Redis and a cluster.
-- Returns {} when applied; {n, lang, user, reason, ...} when applied but n users (or
-- item totals, user '') were quarantined; else {field, held value or '', ...} for every
-- guard that failed, and nothing was written.
-- Never half-written: a user whose views key refuses an increment (wrong type, a field
-- that is not an integer, overflow) has the increments already made undone and the
-- user's views parked in the language's quarantine hash with the reason; an item total
-- that refuses is parked there too. Internal keys of the wrong type are found before any
-- write (error reply, nothing written). The guards are set last.
local tonumber, type, pcall_ = tonumber, type, redis.pcall  -- locals: hot loop
local guard = KEYS[2]
local bad, i, n = check_guards(guard)
if #bad > 0 then
  return bad
end
local first_lang = i

-- Pre-pass: every internal key must have its type (or not exist) before anything is
-- written, and the header's names must be the declared KEYS.
local function check(key, want)
  if key == nil then return nil end
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE internal key ' .. key .. ' holds a ' .. t ..
                             ', expected a ' .. want .. '; nothing was written')
  end
end
local add_langs = KEYS[1] ~= guard
local e = add_langs and check(KEYS[1], 'set')
if e then return e end
local n_langs = tonumber(ARGV[i])
local heads, k = {}, 3
local SLOTS = {'item', 'users', 'seq', 'dirty', 'touched', 'quarantine'}
for h = i + 1, i + 9 * n_langs, 9 do
  local head = {lang = ARGV[h], prefix = ARGV[h + 1], n = tonumber(ARGV[h + 8])}
  for j = 1, 6 do
    local name = ARGV[h + 1 + j]
    if name ~= '' then
      if KEYS[k] ~= name then
        return redis.error_reply('ERR header key ' .. name .. ' is not KEYS[' .. k ..
                                 ']; nothing was written')
      end
      head[SLOTS[j]] = KEYS[k]
      k = k + 1
    end
  end
  head.views = k
  if head.users then k = k + head.n end
  heads[#heads + 1] = head
  e = check(head.users, 'set') or check(head.seq, 'string') or check(head.dirty, 'zset')
      or check(head.touched, 'zset') or check(head.quarantine, 'hash')
  if e then return e end
end
-- Each views key must be the user's (prefix .. user_id) where a prefix is given: a caller
-- that declared its KEYS in another order is refused before anything is written.
local a = first_lang + 1 + 9 * n_langs
for _, head in ipairs(heads) do
  if not head.users then
    a = a + 2 * head.n
  else
    for u = 0, head.n - 1 do
      if head.prefix ~= '' and KEYS[head.views + u] ~= head.prefix .. ARGV[a] then
        return redis.error_reply('ERR KEYS[' .. (head.views + u) .. '] is not the views key ' ..
                                 'of user ' .. ARGV[a] .. '; nothing was written')
      end
      a = a + 2 + 2 * tonumber(ARGV[a + 1])
    end
  end
end

-- Variadic commands take at most this many arguments per call (Lua's C stack is 8000).
local CHUNK = 4000
local function variadic(cmd, key, args)
  for s = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, s, math.min(s + CHUNK - 1, #args)))
  end
end

local parked, counted = {0}, false
local extra_reply = {}  -- (lang, list, clicks) triples a click section adds to the reply
local function park(lang, q_key, field, user, reason, views)
  redis.call('HSET', q_key, field, cjson.encode({user = user, reason = reason, views = views}))
  parked[1] = parked[1] + 1
  parked[#parked + 1] = lang
  parked[#parked + 1] = user
  parked[#parked + 1] = reason
end

-- Adds items {rid: total} to item_key; totals that refuse are parked under 'items:' .. tag.
-- Totals are sums of integers far below 2^53 (CONTRACT: counts per event and per CSV
-- row are bounded), so they are exact; %d writes them without an exponent.
local function add_totals(lang, item_key, q_key, tag, items)
  local lost, lost_err = {}, nil
  for rid, c in pairs(items) do
    if c ~= 0 then  -- 0: only a parked user's views
      local total = string.format('%d', c)
      local r = pcall_('HINCRBY', item_key, rid, total)
      if type(r) == 'table' then
        lost[rid] = total
        lost_err = lost_err or ('resource ' .. rid .. ': ' .. r['err'])
      end
    end
  end
  if lost_err then
    park(lang, q_key, 'items:' .. tag, '', lost_err, lost)
  end
end

-- The item side alone (a cluster): totals given; parked ones are tagged with the guards'
-- new values (unique per stream and batch, as seq is on one Redis).
local function item_mode(head)
  local items = {}
  for _ = 1, head.n do
    items[ARGV[i]] = tonumber(ARGV[i + 1])
    i = i + 2
  end
  local tag = {}
  for g = 2, 1 + 3 * n, 3 do
    tag[#tag + 1] = ARGV[g] .. '@' .. ARGV[g + 2]
  end
  add_totals(head.lang, head.item, head.quarantine, table.concat(tag, ','), items)
end

i = first_lang + 1 + 9 * n_langs
for _, head in ipairs(heads) do
  local lang = head.lang
  if add_langs then
    redis.call('SADD', KEYS[1], lang)
  end
  if not head.users then
    item_mode(head)
  else
  local item_key, users_key, q_key = head.item, head.users, head.quarantine
  local views_at = head.views
  local seq = redis.call('INCR', head.seq)
  local users, scored, items, nu = {}, {}, {}, 0
  for u = 0, head.n - 1 do
    local user = ARGV[i]
    local n_pairs = tonumber(ARGV[i + 1])
    local views_key = KEYS[views_at + u]
    local first = i + 2
    i = first
    local err
    for _ = 1, n_pairs do
      local rid, c = ARGV[i], ARGV[i + 1]
      local r = pcall_('HINCRBY', views_key, rid, c)
      if type(r) == 'table' then
        if not counted and (string.sub(r['err'], 1, 6) == 'NOPERM' or
            string.find(r['err'], "can't run this command", 1, true)) then
          -- The Redis user may not count at all: refuse the batch (nothing counted yet)
          -- rather than park every view as if its key were poisoned.
          return redis.error_reply(r['err'])
        end
        err = 'resource ' .. rid .. ': ' .. r['err']
        break
      end
      counted = true
      items[rid] = (items[rid] or 0) + tonumber(c)
      i = i + 2
    end
    if err then
      -- Undo this user's increments (each can only return a field to its old value).
      local views = {}
      for j = first, i - 2, 2 do
        local rid, c = ARGV[j], ARGV[j + 1]
        if redis.call('HINCRBY', views_key, rid, '-' .. c) == 0 then
          redis.call('HDEL', views_key, rid)  -- it did not exist: counts are >= 1
        end
        items[rid] = items[rid] - tonumber(c)
      end
      i = first + 2 * n_pairs
      for j = first, i - 2, 2 do
        views[ARGV[j]] = ARGV[j + 1]
      end
      park(lang, q_key, seq .. ':' .. user, user, err, views)
    else
      nu = nu + 1
      users[nu] = user
      scored[2 * nu - 1] = seq
      scored[2 * nu] = user
    end
  end
  if item_key then
    add_totals(lang, item_key, q_key, seq, items)
  end
  if nu > 0 then
    variadic('SADD', users_key, users)
    variadic('ZADD', head.dirty, scored)
    variadic('ZADD', head.touched, scored)
  end
  end
end
"""

SET_GUARDS_LUA = """
-- The guards are set last (after the counts and any section a store inserts before this).
set_guards(guard, n)
if parked[1] > 0 or #extra_reply > 0 then
  if #extra_reply > 0 then
    parked[#parked + 1] = 'clicks'
    for _, v in ipairs(extra_reply) do parked[#parked + 1] = v end
  end
  return parked
end
return {}
"""

APPLY_LUA = COUNT_VIEWS_LUA + SET_GUARDS_LUA
"""The views script: counts, then guards (store/attribution.py inserts click attribution
between the two, the ARGV of its section following the views')."""


def _opt(value: str | int | None) -> str | int:
    return "" if value is None else value


def guard_args(guards: Sequence[Guard]) -> list:
    """The guards' part of a guarded script's ARGV (GUARDS_LUA's header)."""
    args: list = [len(guards)]
    for field, expected, new in guards:
        args += (field, _opt(expected), _opt(new))
    return args


def apply_args(keys: Keys, guards: Sequence[Guard], views: Views) -> list:
    """The script's flat ARGV for ``guards`` and ``views`` (see APPLY_LUA's header)."""
    args = guard_args(guards)
    langs = [(lang, users) for lang, users in views.items() if users]
    args.append(len(langs))
    for lang, users in langs:
        args += (lang, keys.views(lang, ""), keys.item_views(lang), keys.users(lang),
                 keys.seq(lang), keys.dirty(lang), keys.touched(lang), keys.quarantine(lang),
                 len(users))
    extend = args.extend
    for _lang, users in langs:
        for user, pairs in users.items():
            extend((user, len(pairs)))
            for item in pairs.items():
                extend(item)
    return args


def apply_keys(keys: Keys, guard_key: str, views: Views) -> list[str]:
    """The script's KEYS for :func:`apply_args`'s ARGV on one Redis: langs, the guard, then
    per language its six keys and its users' views keys, in ARGV order."""
    out = [keys.langs, guard_key]
    langs = [(lang, users) for lang, users in views.items() if users]
    views_key = keys.views
    for lang, users in langs:
        out += (keys.item_views(lang), keys.users(lang), keys.seq(lang), keys.dirty(lang),
                keys.touched(lang), keys.quarantine(lang))
        out += [views_key(lang, user) for user in users]
    return out


def item_call(keys: Keys, lang: str, guard_key: str, guards: Sequence[Guard],
              totals: Mapping[int, int]) -> tuple[list, list]:
    """(KEYS, ARGV) of a cluster's item-side call: ``totals`` added to ``item_views(lang)``,
    refusals parked in ``item_quarantine(lang)``, guarded by ``guard_key`` (the language's
    ``item_offsets``); every key in the language's item slot. ``langs`` is not touched."""
    args = guard_args(guards)
    args += (1, lang, "", keys.item_views(lang), "", "", "", "", keys.item_quarantine(lang),
             len(totals))
    for item in totals.items():
        args.extend(item)
    return [guard_key, guard_key, keys.item_views(lang), keys.item_quarantine(lang)], args


def group_call(group: Keys, lang: str, guard_key: str, guards: Sequence[Guard],
               users: Mapping[str, Mapping[int, int]]) -> tuple[list, list]:
    """(KEYS, ARGV) of a cluster's call for one slot group (``group`` bound to it): the
    users' views, ``users``, ``seq``, ``dirty``, ``touched`` and the group's quarantine, no
    item totals (the item-side call adds those), guarded by ``guard_key`` (the group's
    ``group_offsets``, or its quarantine for a repair)."""
    args = guard_args(guards)
    args += (1, lang, "", "", group.users(lang), group.seq(lang), group.dirty(lang),
             group.touched(lang), group.quarantine(lang), len(users))
    keys_ = [guard_key, guard_key, group.users(lang), group.seq(lang), group.dirty(lang),
             group.touched(lang), group.quarantine(lang)]
    keys_ += [group.views(lang, user) for user in users]
    extend = args.extend
    for user, pairs in users.items():
        extend((user, len(pairs)))
        for item in pairs.items():
            extend(item)
    return keys_, args


def progress_call(guard_key: str, guards: Sequence[Guard]) -> tuple[list, list]:
    """(KEYS, ARGV) of a call that only moves guards (no counts): a stream that had no
    events since its held offset is set to where its partition is written through."""
    return [guard_key, guard_key], guard_args(guards) + [0]


@dataclass(frozen=True)
class Parked:
    """Views the script could not add and kept in ``Keys.quarantine(lang)`` instead."""

    lang: str
    user: str
    """The user whose views key refused; "" for item totals that refused."""
    reason: str


@dataclass
class Applied:
    """What one script call did: ``refused`` guards (nothing written) or, when applied,
    the users whose views went to the quarantine instead of the counts."""

    refused: dict[str, str | None] = dataclasses.field(default_factory=dict)
    parked: list[Parked] = dataclasses.field(default_factory=list)
    counted: dict[tuple[str, str], tuple[int, int]] = dataclasses.field(default_factory=dict)
    """``{(lang, list): (impressions, clicks)}`` counted: by the impressions script, and
    (impressions 0) by the views script's click section."""
    duplicates: int = 0
    """Impressions script only: impressions whose id was already in the user's window."""


class Counts:
    """The counts write path, its script registered once per client."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._apply = client.register_script(APPLY_LUA)

    def apply(self, guard_key: str, guards: Sequence[Guard], views: Views
              ) -> dict[str, str | None]:
        """Apply ``views`` if every guard holds; return ``{}`` then, else ``{field: held value
        or None}`` of the guards that failed (nothing written). Views parked in the
        quarantine count as applied here; use :meth:`write` to learn about them."""
        return mismatches(self._apply(keys=self._keys(guard_key, views),
                                      args=self._args(guards, views)))

    def write(self, guard_key: str, guards: Sequence[Guard], views: Views) -> Applied:
        """:meth:`apply`, also reporting the users whose views were quarantined."""
        reply = self._apply(keys=self._keys(guard_key, views), args=self._args(guards, views))
        return parse_reply(reply)

    def call(self, keys: list, args: list) -> Applied:
        """One call of the views script with ready KEYS and ARGV (:func:`item_call`,
        :func:`group_call`, :func:`progress_call`: a cluster's calls)."""
        return parse_reply(self._apply(keys=keys, args=args))

    def _keys(self, guard_key: str, items) -> list[str]:
        """The script's KEYS. ``items`` is a store's payload: the views, or (a store with a
        click section, store/attribution.py) a tuple whose first part is the views."""
        views = items[0] if isinstance(items, tuple) else items
        return apply_keys(self.keys, guard_key, views)

    def _args(self, guards: Sequence[Guard], views) -> list:
        """The script's ARGV (a store with more sections appends theirs)."""
        return apply_args(self.keys, guards, views)


def parse_reply(reply: list) -> Applied:
    """The script's raw reply as :class:`Applied`."""
    if reply and isinstance(reply[0], int):
        text = [v.decode() if isinstance(v, bytes) else v for v in reply[1:]]
        n = 3 * reply[0]
        clicks = text[n + 1:]  # after the 'clicks' marker: (lang, list, clicks) triples
        return Applied(parked=[Parked(*text[j:j + 3]) for j in range(0, n, 3)],
                       counted={(clicks[j], clicks[j + 1]): (0, int(clicks[j + 2]))
                                for j in range(0, len(clicks), 3)})
    return Applied(refused=mismatches(reply))


def mismatches(reply: list) -> dict[str, str | None]:
    """The script's reply as ``{field: held value or None}``; empty when it applied."""
    out: dict[str, str | None] = {}
    if reply and isinstance(reply[0], int):  # applied, some views quarantined
        return out
    for j in range(0, len(reply), 2):
        field, held = reply[j], reply[j + 1]
        field = field.decode() if isinstance(field, bytes) else field
        held = held.decode() if isinstance(held, bytes) else held
        out[field] = held or None
    return out


def read_guards(client: redis.Redis, guard_key: str) -> dict[str, str]:
    """Every field of a guard hash (e.g. the partition offsets) as ``{field: value}``."""
    return {k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
            for k, v in client.hgetall(guard_key).items()}


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
