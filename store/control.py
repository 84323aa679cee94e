"""Take-downs and forgetting, on the Redis side: the atomic control step, and reading what is
hidden (store/takedown_scan.py finds the lists a hidden resource was in, store/settle.py
cleans and refills them). No ALS math here (trainer/pipeline/takedown.py computes the
refilled lists) and no Kafka (consumers/control.py feeds control events in).

Invariants:

- A hide, unhide or forget is ONE script (:data:`CONTROL_LUA`), optionally guarded by the
  control topic's partition offsets exactly like the view counts (store/counts.py), so a
  control event applies exactly once however often it is sent. The CLI calls the same
  script without guards.
- A hide records the resource in ``hidden(lang)``, deletes its own similar list, takes it
  out of the trending list and queues it in ``takedown_work(lang)`` in the same step. From
  that moment every list writer drops it inside its own write script (store/publish.py
  REPLACE_LISTS, store/updates.py COMMIT_SCRIPT, store/settle.py REFILL_LUA, all reading
  lists with store.lists.LISTS_LUA): a writer that scored before the hide cannot bring it back. The
  lists that already hold it are found and refilled afterwards
  (trainer/pipeline/takedown.py); the queue entry is removed only when that is done, so a
  crash in between is finished by the next ``recs hide``/``recs control``.
- No script call holds Redis for long, however many resources are hidden at once: the CLI
  sends :data:`OPS_PER_CALL` operations per call; finding the lists is a scan of the
  published lists in steps of about ``LIST_STEP_OPS`` lookups (store/takedown_scan.py), each
  looking up a list's ids in the hidden hash when many resources are queued (its cost then
  does not grow with their number) or ZSCOREs of the few queued; refills are
  ``write_refilled`` calls of 25 lists.
- A forget removes, in one step per language, the user's views (their counts taken back
  from ``item_views``), factors, lists and every queue entry, and leaves a tombstone
  ``forgotten(lang)`` sha1(user) -> seq: a publish computed from counts read before that
  seq writes nothing for the user (REPLACE_LISTS). The next publish trims the tombstone.

The same step on a Redis Cluster is store/control_cluster.py (:class:`Control` picks the
path from the layout; on one Redis it is the one CONTROL_LUA call above, names unchanged).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis

from store.cluster_keys import layout
from store.control_cluster import ClusterControl
from store.control_op import ControlOp
from store.counts import Applied
from store.guards import GUARDS_LUA, Guard, guard_args, mismatches
from store.keys import Keys
from store.read import text

# The key templates CONTROL_LUA fills in: '\1' stands for the language, '\2' for an id.
LANG_MARK, ID_MARK = "\1", "\2"
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
set_guards(guard, n)

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
-- starting seq (store/takedown_scan.py begin_scan).
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

OPS_PER_CALL = 200
"""Control operations per unguarded script call (a hide is five writes per language)."""


class Control:
    """:data:`CONTROL_LUA` bound to one client; ``apply`` has the shape of
    ``store.counts.Counts.apply`` so the Kafka consumer loop can drive either."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        # The consumer loop hands plain Keys whatever the client: the layout decides.
        self.client = client
        self.keys = keys if keys.cluster else layout(client, keys.prefix)
        self._cluster = ClusterControl(client, self.keys) if self.keys.cluster else None
        if self._cluster is None:
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
        items = list(ops.values()) if isinstance(ops, dict) else list(ops)
        if self._cluster is not None:
            return self._cluster.apply(guard_key, guards, items)
        args = guard_args(guards) + list(self._templates)
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
        return method(LANG_MARK, ID_MARK)
    return method(LANG_MARK)


# -- reading --------------------------------------------------------------------------------


def read_hidden(client: redis.Redis, keys: Keys, lang: str) -> dict[int, dict]:
    """The hidden resources of ``lang``: resource_id -> {"reason", "ts"} (read with HSCAN,
    a bounded step at a time)."""
    out = {}
    for rid, value in client.hscan_iter(keys.hidden(lang), count=1000):
        try:
            meta = json.loads(value)
        except ValueError:
            meta = {"reason": text(value), "ts": None}
        out[int(rid)] = meta
    return out
