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

Why a guard list rather than "skip if already applied": a writer that sees its guard
refused learns what Redis holds and can resume from there, which also covers Redis losing
its latest writes (failover to a lagging replica, restore from a snapshot).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import redis

from store.keys import Keys

Views = Mapping[str, Mapping[str, Mapping[int, int]]]
"""``{lang: {user_id: {resource_id: views}}}``, every count >= 1."""
Guard = tuple[str | int, str | int | None, str | int | None]
"""``(field, expected value or None for absent, new value or None for check only)``."""

APPLY_LUA = """
-- Apply one batch of view counts, guarded by compare-and-set fields of one hash.
-- KEYS[1]  langs SET
-- KEYS[2]  guard HASH (partition offsets, or backfill progress)
-- ARGV     flat, in this order:
--   n_guards, then n_guards x (field, expected, new); '' = absent / check only
--   n_langs, then per language:
--     lang, views key prefix (views key = prefix .. user_id), item_views, users, seq,
--     dirty, touched, n_users,
--     then n_users x (user_id, n_pairs, n_pairs x (resource_id, views))
-- Returns {} when applied; else {field, held value or '', ...} for every guard that
-- failed, and nothing was written.
local guard = KEYS[2]
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
if #bad > 0 then
  return bad
end

-- Variadic commands take at most this many arguments per call (Lua's C stack is 8000).
local CHUNK = 4000
local function variadic(cmd, key, args)
  for s = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, s, math.min(s + CHUNK - 1, #args)))
  end
end

local sets = {}
for g = 2, 1 + 3 * n, 3 do
  if ARGV[g + 2] ~= '' then
    sets[#sets + 1] = ARGV[g]
    sets[#sets + 1] = ARGV[g + 2]
  end
end
if #sets > 0 then
  variadic('HSET', guard, sets)
end

local n_langs = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_langs do
  local lang, prefix, item_key, users_key = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local seq_key, dirty_key, touched_key = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local n_users = tonumber(ARGV[i + 7])
  i = i + 8
  local seq = redis.call('INCR', seq_key)
  local users, scored, items = {}, {}, {}
  for u = 1, n_users do
    local user = ARGV[i]
    local n_pairs = tonumber(ARGV[i + 1])
    local views_key = prefix .. user
    i = i + 2
    for _ = 1, n_pairs do
      local rid, c = ARGV[i], ARGV[i + 1]
      redis.call('HINCRBY', views_key, rid, c)
      items[rid] = (items[rid] or 0) + tonumber(c)
      i = i + 2
    end
    users[u] = user
    scored[2 * u - 1] = seq
    scored[2 * u] = user
  end
  for rid, c in pairs(items) do
    redis.call('HINCRBY', item_key, rid, c)
  end
  redis.call('SADD', KEYS[1], lang)
  if n_users > 0 then
    variadic('SADD', users_key, users)
    variadic('ZADD', dirty_key, scored)
    variadic('ZADD', touched_key, scored)
  end
end
return {}
"""


def _opt(value: str | int | None) -> str | int:
    return "" if value is None else value


def apply_args(keys: Keys, guards: Sequence[Guard], views: Views) -> list:
    """The script's flat ARGV for ``guards`` and ``views`` (see APPLY_LUA's header)."""
    args: list = [len(guards)]
    for field, expected, new in guards:
        args += (field, _opt(expected), _opt(new))
    langs = [(lang, users) for lang, users in views.items() if users]
    args.append(len(langs))
    for lang, users in langs:
        args += (lang, keys.views(lang, ""), keys.item_views(lang), keys.users(lang),
                 keys.seq(lang), keys.dirty(lang), keys.touched(lang), len(users))
        extend = args.extend
        for user, pairs in users.items():
            extend((user, len(pairs)))
            for item in pairs.items():
                extend(item)
    return args


class Counts:
    """The counts write path, its script registered once per client."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._apply = client.register_script(APPLY_LUA)

    def apply(self, guard_key: str, guards: Sequence[Guard], views: Views,
              pipeline: redis.client.Pipeline | None = None) -> dict[str, str | None] | None:
        """Apply ``views`` if every guard holds; return ``{}`` then, else ``{field: held value
        or None}`` of the guards that failed (nothing written). With ``pipeline`` the call
        is queued there and None is returned (the pipeline's result is the raw reply; see
        :func:`mismatches`)."""
        args = apply_args(self.keys, guards, views)
        keys = [self.keys.langs, guard_key]
        if pipeline is not None:
            self._apply(keys=keys, args=args, client=pipeline)
            return None
        return mismatches(self._apply(keys=keys, args=args))


def mismatches(reply: list) -> dict[str, str | None]:
    """The script's reply as ``{field: held value or None}``; empty when it applied."""
    out: dict[str, str | None] = {}
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
    """The next offset to apply per partition, as recorded with the counts."""
    return {int(p): int(o) for p, o in read_guards(client, keys.offsets(group, topic)).items()}
