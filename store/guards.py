"""Compare-and-set guards: how every batch script (views, impressions, control) applies
exactly once however often a batch is sent.

A guard is a field of one Redis HASH with the value the writer expects it to hold and the
value to set. A guarded script first checks every guard (:data:`GUARDS_LUA`
``check_guards``); if any field holds something else it writes NOTHING and returns the
mismatching fields with what they hold (:func:`mismatches` reads that reply). Otherwise it
does its writes and sets the guards (``set_guards``) in the same atomic step. A guard whose
expected value is ``None`` requires the field to be absent; a guard whose new value is
``None`` only checks.

The Kafka consumer guards with the partition offsets (field partition, expected = the next
offset it believes Redis holds, new = the next offset after the batch). The CSV backfill
guards with its progress record in ``Keys.backfills``.

Why a guard list rather than "skip if already applied": a writer that sees its guard
refused learns what Redis holds and can resume from there, which also covers Redis losing
its latest writes (failover to a lagging replica, restore from a snapshot).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis

Guard = tuple[str | int, str | int | None, str | int | None]
"""``(field, expected value or None for absent, new value or None for check only)``."""

GUARDS_LUA = """
-- Guards (store/guards.py). ARGV starts with n_guards, then n_guards x (field, expected, new).
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


def _opt(value: str | int | None) -> str | int:
    return "" if value is None else value


def guard_args(guards: Sequence[Guard]) -> list:
    """The guards' part of a guarded script's ARGV (GUARDS_LUA's header)."""
    args: list = [len(guards)]
    for field, expected, new in guards:
        args += (field, _opt(expected), _opt(new))
    return args


def mismatches(reply: list) -> dict[str, str | None]:
    """The script's reply as ``{field: held value or None}``; empty when it applied."""
    out: dict[str, str | None] = {}
    if reply and isinstance(reply[0], int):  # applied, with a report (e.g. views parked)
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
