"""The views script: applies one batch of view counts and its guards atomically.

The script first checks every guard (store/guards.py); if one fails it writes NOTHING.
Otherwise, in the same atomic step, it adds the counts and then sets the guards:

- ``views(lang, user)`` HINCRBY and ``item_views(lang)`` HINCRBY (contract),
- ``langs`` SADD (contract), ``users(lang)`` SADD,
- ``seq(lang)`` INCR once per batch, and ``dirty(lang)`` / ``touched(lang)`` ZADD seq user
  for every user in the batch (the updater and the trainer rely on these).

Poisoned keys (a views hash someone made a STRING, a field holding ``abc``, a count near
2^63): Redis does not roll back a script that errors, so the script never lets one error
out. Each user's increments run under ``redis.pcall``; on the first refusal that user's
increments are undone and its views go to ``quarantine(lang)`` with the reason, and the
other users are counted as usual (an item total that refuses is parked the same way). The
guards are written last, so the offsets advance exactly once with whatever was counted or
parked. An internal key of the wrong type is found before the first write: the script then
refuses with an error and writes nothing. A Redis user without HINCRBY is not a poisoned
key: the first refusal, before anything is counted, fails the whole call with Redis's
permission error (only the language's ``seq`` has moved on) instead of parking it all.

Every key the script touches is declared in KEYS (the views keys too), so one Lua source
serves one Redis and a Redis Cluster. The script is in two parts (:data:`COUNT_VIEWS_LUA`,
:data:`SET_GUARDS_LUA`) so that a store can insert a section between the counts and the
guards (store/attribution.py's clicks); its KEYS and ARGV are built by store/counts.py.
"""

from __future__ import annotations

from store.guards import GUARDS_LUA

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
