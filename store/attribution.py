"""Click attribution (docs/CONTRACT.md "Clicks"): the per-user windows both consumers keep,
and the views script with its click section.

Invariants:

- A click is an (impression, shown resource) pair; it is counted by whichever script applies
  the second half of the pair (the views script when the impression is already in the
  user's impression window, the impressions script, store/impressions.py, when the view is
  already in the user's view window), in the same atomic script call that moves that
  consumer's offsets. Each pair is counted at most once: an impression window holds, per
  resource, only the *unclicked* pairs (``r:{rid}`` -> ``id/pos ...``), and the script that
  counts a pair removes it (the impressions script never adds a pair it counted).
- Window formats (strings chosen so that no allowed id holds a separator):
  impression window ``i:{id}`` -> ``"{ts} {cell} {rid},{rid},..."``, ``r:{rid}`` -> unclicked
  ``{id}/{pos}`` pairs, ``q`` -> impression ids in consumption order (the cap evicts the
  first); view window ``{rid}`` -> the last ``keep`` view times ``{t}`` or ``{t}/{id}``,
  ``q`` -> resources, least recently viewed first (the cap evicts the first).
- Nothing here errors once writing began: the Redis user's permissions are probed first
  (``redis.acl_check_cmd``: a missing one refuses the call, nothing written), a window key of
  another type is skipped (that user gets no attribution), and counter increments run under
  ``redis.pcall`` (a poisoned counter loses its increment).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from store.counts import Counts, Views, apply_args
from store.counts_script import COUNT_VIEWS_LUA, SET_GUARDS_LUA
from store.guards import Guard
from store.keys import Keys

Touches = Mapping[str, Mapping[str, Sequence[tuple[int, int, str]]]]
"""``{lang: {user_id: [(resource_id, t ms, impression_id or ""), ...]}}`` in offset order."""


@dataclass(frozen=True)
class AttributionConfig:
    """How clicks are attributed; both consumers must be given the same values."""

    window: float = 1800.0
    """Click window W in seconds (docs/CONTRACT.md "Clicks")."""
    impression_cap: int = 50
    """Impressions kept per (language, user); the oldest consumed goes first."""
    view_cap: int = 200
    """Viewed resources kept per (language, user); the least recently viewed goes first."""
    view_times: int = 4
    """View times (with their impression ids) kept per resource in a view window."""
    state_ttl: float = 86400.0
    """Wall-clock seconds a user's windows live after their last write."""

    def args(self) -> list:
        return [int(self.window * 1000), self.impression_cap, self.view_cap,
                int(self.state_ttl * 1000), self.view_times]


WINDOW_LUA = """
-- store.attribution helpers (no KEYS/ARGV of their own). W_ms etc. are set by the caller.
local function split(s, sep)  -- plain split on one character, empty fields kept
  local out, start = {}, 1
  while true do
    local j = string.find(s, sep, start, true)
    if not j then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, j - 1)
    start = j + 1
  end
end
local function words(s)  -- the space-separated tokens of s (false or nil: none)
  local out = {}
  if s then
    for w in string.gmatch(s, '%S+') do out[#out + 1] = w end
  end
  return out
end
local function hmget(key, fields)  -- HMGET in chunks (Lua's C stack: 8000 arguments)
  local out = {}
  for s = 1, #fields, 1000 do
    local got = redis.call('HMGET', key, unpack(fields, s, math.min(s + 999, #fields)))
    for k = 1, #got do out[s + k - 1] = got[k] end
  end
  return out
end
-- Is a view at t carrying impression id x ('' for none) a click on impression id shown at T?
local function is_click(t, x, T, id, W)
  if x == '' then return T <= t and t <= T + W end
  return x == id and math.abs(t - T) <= W
end
-- A view window entry as (t, impression id or '').
local function view_entry(e)
  local slash = string.find(e, '/', 1, true)
  if slash then return tonumber(string.sub(e, 1, slash - 1)), string.sub(e, slash + 1) end
  return tonumber(e), ''
end
-- One click on position pos of an impression of `cell` (day|list|model|arm|experiment).
-- Returns the cell's list (for the callers' tallies).
local function count_click(ctr_prefix, exp_prefix, cell, pos, user)
  local c = ctr_prefix .. cell
  redis.pcall('HINCRBY', c, 'clicks', 1)
  redis.pcall('HINCRBY', c, 'p' .. pos, 1)
  local f = split(cell, '|')
  if f[5] and f[5] ~= '' then
    redis.pcall('HINCRBY', exp_prefix .. f[5] .. '|' .. f[4], 'c:' .. user, 1)
  end
  return f[2]
end
local function usable(key)  -- a window key holds our hash or nothing; else it is skipped
  local t = redis.call('TYPE', key)['ok']
  return t == 'hash' or t == 'none'
end
-- Refuse the call before any write when the Redis user lacks a command used here.
local function probe(key, commands)
  for _, c in ipairs(commands) do
    if not redis.acl_check_cmd(unpack(c)) then
      return redis.error_reply('NOPERM this user has no permissions to run the ' ..
                               string.lower(c[1]) .. ' command (click attribution)')
    end
  end
end
local PROBE_ARGS = function(key)
  return {{'HMGET', key, 'f'}, {'HGET', key, 'f'}, {'HSET', key, 'f', '1'},
          {'HDEL', key, 'f'}, {'HINCRBY', key, 'f', '1'}, {'PEXPIRE', key, '1'},
          {'TYPE', key}}
end
"""

CLICKS_LUA = """
-- Click section of the views script, after the view counts (ARGV from index i on):
--   W_ms, impression_cap (unused here), view_cap, ttl_ms, view_times, n_langs, then per
--   language: impression window prefix, view window prefix, ctr prefix, experiment prefix,
--   n_users, lang, then n_users x (user, n_touches, n_touches x (resource_id, t_ms, id or ''))
-- Adds (lang, list, clicks counted) triples to the reply (store/counts.py parse_reply).
local W, view_cap, ttl, keep = tonumber(ARGV[i]), tonumber(ARGV[i + 2]), ARGV[i + 3],
                               tonumber(ARGV[i + 4])
local n_click_langs = tonumber(ARGV[i + 5])
i = i + 6

-- Impressions already in the window that these touches click: counted, pair removed.
local function click_impressions(impw, user, rids, by, ctr_p, exp_p, held, tally)
  local fields = {}
  for k, rid in ipairs(rids) do fields[k] = 'r:' .. rid end
  local records = {}
  for k, rid in ipairs(rids) do
    if held[k] then
      local kept = {}
      for _, e in ipairs(words(held[k])) do
        local slash = string.find(e, '/', 1, true)
        local id, pos = string.sub(e, 1, slash - 1), string.sub(e, slash + 1)
        if records[id] == nil then
          records[id] = words(redis.call('HGET', impw, 'i:' .. id))
        end
        local rec, hit = records[id], false
        if rec[1] then
          local T = tonumber(rec[1])
          for _, j in ipairs(by[rid]) do
            if is_click(tonumber(ARGV[j + 1]), ARGV[j + 2], T, id, W) then hit = true break end
          end
          if hit then
            local list = count_click(ctr_p, exp_p, rec[2], pos, user)
            tally[list] = (tally[list] or 0) + 1
          else
            kept[#kept + 1] = e
          end
        end  -- an entry whose impression record is gone is dropped
      end
      if #kept == 0 then
        redis.call('HDEL', impw, fields[k])
      elseif #kept < #words(held[k]) then
        redis.call('HSET', impw, fields[k], table.concat(kept, ' '))
      end
    end
  end
end

-- The touches join the view window (for impressions consumed later); the cap evicts.
local function remember_views(vieww, rids, by, held)
  local sets, seen = {}, {}
  for k, rid in ipairs(rids) do
    local ts = words(held[k])
    for _, j in ipairs(by[rid]) do
      ts[#ts + 1] = ARGV[j + 2] == '' and ARGV[j + 1] or (ARGV[j + 1] .. '/' .. ARGV[j + 2])
    end
    sets[#sets + 1] = rid
    sets[#sets + 1] = table.concat(ts, ' ', math.max(1, #ts - keep + 1), #ts)
    seen[rid] = true
  end
  local q = {}
  for _, rid in ipairs(words(held[#rids + 1])) do
    if not seen[rid] then q[#q + 1] = rid end
  end
  for _, rid in ipairs(rids) do q[#q + 1] = rid end
  local drop = math.max(0, #q - view_cap)
  sets[#sets + 1] = 'q'
  sets[#sets + 1] = table.concat(q, ' ', drop + 1, #q)
  variadic('HSET', vieww, sets)
  if drop > 0 then variadic('HDEL', vieww, {unpack(q, 1, drop)}) end
  redis.call('PEXPIRE', vieww, ttl)
end

-- The user's unclicked pairs of these resources, and their view window entries (and 'q');
-- nil when either key holds another type.
local function window_reads(impw, vieww, rids)
  local f1, f2 = {}, {}
  for k, rid in ipairs(rids) do
    f1[k] = 'r:' .. rid
    f2[k] = rid
  end
  f2[#rids + 1] = 'q'
  local shown, viewed = {}, {}
  for s = 1, #f2, 1000 do
    local e = math.min(s + 999, #f2)
    local a = redis.pcall('HMGET', vieww, unpack(f2, s, e))
    if a['err'] then return nil end
    for k = 1, #a do viewed[s + k - 1] = a[k] end
    if s <= #f1 then
      local b = redis.pcall('HMGET', impw, unpack(f1, s, math.min(e, #f1)))
      if b['err'] then return nil end
      for k = 1, #b do shown[s + k - 1] = b[k] end
    end
  end
  return shown, viewed
end

for _ = 1, n_click_langs do
  local impw_p, vieww_p, ctr_p, exp_p = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local n_users = tonumber(ARGV[i + 4])
  local lang, tally = ARGV[i + 5], {}
  i = i + 6
  for _ = 1, n_users do
    local user, n_t = ARGV[i], tonumber(ARGV[i + 1])
    local first = i + 2
    i = first + 3 * n_t
    local impw, vieww = impw_p .. user, vieww_p .. user
    local rids, by = {}, {}
    for j = first, i - 3, 3 do
      local rid = ARGV[j]
      if not by[rid] then
        by[rid] = {}
        rids[#rids + 1] = rid
      end
      local list = by[rid]
      list[#list + 1] = j
    end
    -- Both windows read first, under pcall: a key of another type (an error table here)
    -- skips the user before anything of theirs is written (no TYPE calls on the hot path).
    local shown, viewed = window_reads(impw, vieww, rids)
    if shown then
      click_impressions(impw, user, rids, by, ctr_p, exp_p, shown, tally)
      remember_views(vieww, rids, by, viewed)
    end
  end
  for list, c in pairs(tally) do
    extra_reply[#extra_reply + 1] = lang
    extra_reply[#extra_reply + 1] = list
    extra_reply[#extra_reply + 1] = c
  end
end
"""

PROBE_LUA = WINDOW_LUA + """
-- KEYS[2] (the guard hash) stands for every key: ACL key patterns cover the prefix.
local denied = probe(KEYS[2], PROBE_ARGS(KEYS[2]))
if denied then return denied end
"""

VIEWS_WITH_CLICKS_LUA = PROBE_LUA + COUNT_VIEWS_LUA + CLICKS_LUA + SET_GUARDS_LUA
"""The views script (store/counts_script.py) with the click section between counts and guards.
KEYS and ARGV as APPLY_LUA's, then CLICKS_LUA's section."""


def click_args(keys: Keys, config: AttributionConfig, touches: Touches) -> list:
    """The click section's ARGV (CLICKS_LUA's header)."""
    langs = [(lang, users) for lang, users in touches.items() if users]
    args: list = [*config.args(), len(langs)]
    for lang, users in langs:
        args += (keys.impression_window(lang, ""), keys.view_window(lang, ""),
                 keys.ctr(lang, ""), keys.experiment_users_prefix(lang), len(users),
                 lang)
        for user, seen in users.items():
            args += (user, len(seen))
            for rid, t, imp in seen:
                args += (rid, t, imp)
    return args


class ClickCounts(Counts):
    """The views write path with click attribution: ``write`` takes ``(views, touches)``."""

    def __init__(self, client: redis.Redis, keys: Keys,
                 config: AttributionConfig | None = None) -> None:
        self.client, self.keys = client, keys
        self.config = config or AttributionConfig()
        self._apply = client.register_script(VIEWS_WITH_CLICKS_LUA)

    def _args(self, guards: Sequence[Guard], items: tuple[Views, Touches]) -> list:
        views, touches = items
        return apply_args(self.keys, guards, views) + click_args(self.keys, self.config,
                                                                 touches)
