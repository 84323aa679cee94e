"""The one write path of impressions: a Lua script that applies a batch of impression events
and the impression topic's partition offsets atomically (guarded like the view counts,
store/guards.py), so each impression is counted exactly once however often a batch is sent.

Per impression, in offset order: skipped if its id is already in the user's impression
window (a producer's retry); else the clicks it already has (views in the user's view
window, store/attribution.py) are counted, the pairs not yet clicked are indexed in the
window for later views, the window's cap evicts the oldest impression, and the cell's
counters move (docs/CONTRACT.md "Counters"). The guards are set last. Nothing errors once
writing began (store/attribution.py: permissions probed first, window keys of another type
skipped, counters under pcall).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import redis

from store.attribution import WINDOW_LUA, AttributionConfig
from store.counts import Applied
from store.guards import GUARDS_LUA, Guard, guard_args, mismatches
from store.keys import Keys

IMPRESSIONS_LUA = GUARDS_LUA + WINDOW_LUA + """
-- Apply one batch of impressions, guarded by compare-and-set fields of one hash.
-- KEYS[1]  guard HASH (the impression topic's partition offsets)
-- ARGV     n_guards, n_guards x (field, expected, new); '' = absent / check only
--          W_ms, impression_cap, view_cap (unused here), ttl_ms, view_times (unused),
--          n_langs, n_langs x (lang, impression window prefix, view window prefix, ctr
--          prefix, ctr_users prefix, ctr_items prefix, ctr_cells key, experiment prefix),
--          n_impressions, then each: lang index (1-based), user, id, ts, cell, list,
--          n_items, n_items x resource_id
--          A language with no impression window prefix ('') is a cluster's item side:
--          only the distinct resources and the cells; one with no ctr_items prefix a
--          slot group: everything else.
-- Returns {field, held or '', ...} for every failed guard (nothing written), else
--   {0, duplicates, lang, list, impressions, clicks, ...}.
local guard = KEYS[1]
local bad, i, n = check_guards(guard)
if #bad > 0 then
  return bad
end
local key = KEYS[1]
local denied = probe(key, PROBE_ARGS(key))
  or probe(key, {{'PFADD', key, 'x'}, {'SADD', key, 'x'}, {'HEXISTS', key, 'x'}})
if denied then return denied end

local W, cap, ttl = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 3]
local n_langs = tonumber(ARGV[i + 5])
i = i + 6
local langs = {}
for l = 1, n_langs do
  langs[l] = {lang = ARGV[i], impw = ARGV[i + 1], vieww = ARGV[i + 2], ctr = ARGV[i + 3],
              users = ARGV[i + 4], items = ARGV[i + 5], cells = ARGV[i + 6], exp = ARGV[i + 7]}
  i = i + 8
end

-- Take impression `id` out of its window: its record and its unclicked pairs.
local function evict(impw, id)
  local rec = words(redis.call('HGET', impw, 'i:' .. id))
  if not rec[3] then return end
  local mine, fields = {}, {}
  for p, rid in ipairs(split(rec[3], ',')) do
    fields[p] = 'r:' .. rid
    mine[p] = id .. '/' .. p
  end
  local held = hmget(impw, fields)
  for p, f in ipairs(fields) do
    if held[p] then
      local kept = {}
      for _, w in ipairs(words(held[p])) do
        if w ~= mine[p] then kept[#kept + 1] = w end
      end
      if #kept > 0 then redis.call('HSET', impw, f, table.concat(kept, ' '))
      else redis.call('HDEL', impw, f) end
    end
  end
  redis.call('HDEL', impw, 'i:' .. id)
end

-- The new impression joins its user's window; returns the positions views already clicked.
local function remember(L, user, id, T, cell, items)
  local impw, vieww = L.impw .. user, L.vieww .. user
  local views = hmget(vieww, items)
  local q = words(redis.call('HGET', impw, 'q'))
  q[#q + 1] = id
  local drop = math.max(0, #q - cap)
  for k = 1, drop do evict(impw, q[k]) end
  local fields = {}
  for p, rid in ipairs(items) do fields[p] = 'r:' .. rid end
  local held = hmget(impw, fields)
  local sets = {'q', table.concat(q, ' ', drop + 1, #q),
                'i:' .. id, T .. ' ' .. cell .. ' ' .. table.concat(items, ',')}
  local clicked, t0 = {}, tonumber(T)
  for p, rid in ipairs(items) do
    local hit = false
    for _, e in ipairs(words(views[p])) do
      local t, x = view_entry(e)
      if is_click(t, x, t0, id, W) then hit = true break end
    end
    if hit then
      clicked[#clicked + 1] = p
    else
      sets[#sets + 1] = fields[p]
      sets[#sets + 1] = held[p] and (held[p] .. ' ' .. id .. '/' .. p) or (id .. '/' .. p)
    end
  end
  redis.call('HSET', impw, unpack(sets))
  redis.call('PEXPIRE', impw, ttl)
  return clicked
end

local dup, tally, order = 0, {}, {}
local n_imps = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_imps do
  local L = langs[tonumber(ARGV[i])]
  local user, id, T, cell, list = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local n_items = tonumber(ARGV[i + 6])
  local items = {unpack(ARGV, i + 7, i + 6 + n_items)}
  i = i + 7 + n_items
  local impw = L.impw .. user
  local state = L.impw ~= '' and usable(impw) and usable(L.vieww .. user)
  if L.impw == '' then
    -- A cluster's item side (store/cluster_impressions.py): the cell and its distinct
    -- resources only, both idempotent (a duplicate adds nothing).
    redis.pcall('PFADD', L.items .. cell, unpack(items))
    redis.pcall('SADD', L.cells, cell)
  elseif state and redis.call('HEXISTS', impw, 'i:' .. id) == 1 then
    dup = dup + 1
  else
    local clicked = state and remember(L, user, id, T, cell, items) or {}
    local c = L.ctr .. cell
    redis.pcall('HINCRBY', c, 'impressions', 1)
    for _, p in ipairs(clicked) do count_click(L.ctr, L.exp, cell, p, user) end
    redis.pcall('PFADD', L.users .. cell, user)
    if L.items ~= '' then  -- '': a cluster's slot group (the item side adds these)
      redis.pcall('PFADD', L.items .. cell, unpack(items))
      redis.pcall('SADD', L.cells, cell)
    end
    local f = split(cell, '|')
    if f[5] ~= '' then
      redis.pcall('HINCRBY', L.exp .. f[5] .. '|' .. f[4], 'i:' .. user, 1)
    end
    local t_key = L.lang .. '|' .. list
    if not tally[t_key] then
      tally[t_key] = {0, 0}
      order[#order + 1] = {L.lang, list}
    end
    tally[t_key][1] = tally[t_key][1] + 1
    tally[t_key][2] = tally[t_key][2] + #clicked
  end
end

set_guards(guard, n)
local out = {0, dup}
for _, o in ipairs(order) do
  local t = tally[o[1] .. '|' .. o[2]]
  out[#out + 1] = o[1]
  out[#out + 1] = o[2]
  out[#out + 1] = t[1]
  out[#out + 1] = t[2]
end
return out
"""


class ImpressionLike(Protocol):
    """What the script needs of one impression (consumers/impression_events.Impression)."""

    impression_id: str
    user_id: str
    lang: str
    list: str
    items: tuple[int, ...]
    ts: int

    @property
    def cell(self) -> str: ...


def impression_args(keys: Keys, config: AttributionConfig, guards: Sequence[Guard],
                    impressions: Sequence[ImpressionLike]) -> list:
    """The script's flat ARGV (IMPRESSIONS_LUA's header)."""
    args = guard_args(guards) + list(config.args())
    langs: dict[str, int] = {}
    for imp in impressions:
        langs.setdefault(imp.lang, len(langs) + 1)
    args.append(len(langs))
    for lang in langs:
        args += (lang, keys.impression_window(lang, ""), keys.view_window(lang, ""),
                 keys.ctr(lang, ""), keys.ctr_users(lang, ""), keys.ctr_items(lang, ""),
                 keys.ctr_cells(lang), keys.experiment_users_prefix(lang))
    args.append(len(impressions))
    for imp in impressions:
        args += (langs[imp.lang], imp.user_id, imp.impression_id, imp.ts, imp.cell, imp.list,
                 len(imp.items), *imp.items)
    return args


def parse_impressions_reply(reply: list) -> Applied:
    """The script's reply as :class:`~store.counts.Applied` (``counted``, ``duplicates``)."""
    if not reply or not isinstance(reply[0], int):
        return Applied(refused=mismatches(reply))
    text = [v.decode() if isinstance(v, bytes) else v for v in reply[2:]]
    counted = {(text[j], text[j + 1]): (int(text[j + 2]), int(text[j + 3]))
               for j in range(0, len(text), 4)}
    return Applied(counted=counted, duplicates=int(reply[1]))


class Impressions:
    """The impressions write path (a consumers/writer.py store), its script registered once."""

    def __init__(self, client: redis.Redis, keys: Keys,
                 config: AttributionConfig | None = None) -> None:
        self.client, self.keys = client, keys
        self.config = config or AttributionConfig()
        self._apply = client.register_script(IMPRESSIONS_LUA)

    def call(self, keys: list, args: list) -> Applied:
        """One call with ready KEYS and ARGV (a cluster's, store/cluster_impressions.py)."""
        return parse_impressions_reply(self._apply(keys=keys, args=args))

    def write(self, guard_key: str, guards: Sequence[Guard],
              items: Mapping[int, ImpressionLike] | Sequence[ImpressionLike]) -> Applied:
        """Apply ``items`` (offset order; an OrderedBatch's ``{index: impression}``) if every
        guard holds."""
        impressions = list(items.values()) if isinstance(items, Mapping) else list(items)
        reply = self._apply(keys=[guard_key],
                            args=impression_args(self.keys, self.config, guards, impressions))
        return parse_impressions_reply(reply)
