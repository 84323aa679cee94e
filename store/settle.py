"""Settling take-downs, on the Redis side: refill the lists a scan found holding a hidden
resource and take settled entries off the queue. No ALS math here
(trainer/pipeline/takedown.py computes the refilled lists); store/takedown_scan.py finds
the lists, store/control.py records the hides themselves.

Invariants:

- Every script call is a bounded step: a refill writes 25 lists, a dequeue removes
  :data:`PAIRS_PER_CALL` entries.
- A refill's progress is kept with its write: each :data:`REFILL_LUA` call takes the ids
  it wrote out of the found set in the same step, so a settle that dies resumes with the
  lists not refilled yet (a call sent again rewrites the same lists: no harm).
- A refilled list never holds a hidden resource: :data:`REFILL_LUA` drops them inside the
  write, as every list writer does.
- A queue entry leaves ``takedown_work`` only if it still holds the action settled
  (:data:`DONE_LUA`): a newer hide or unhide of the resource stays queued.
- On a Redis Cluster (docs/CLUSTER.md) every key a script touches is declared and in one
  slot: similar lists are refilled on the item side (``published_items``, ``hidden``); user
  lists per slot group, with the group's ``published_users``, its copy of ``hidden``
  (``group_hidden``) and of the model (``group_model``) and its found set. On one Redis the
  scripts and names are those of before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import redis

from store.keys import Keys
from store.lists import LISTS_LUA, encode_lists
from store.read import text

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
