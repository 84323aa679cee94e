"""Take-downs and forgetting, on the Redis side: the atomic control step (store/settle.py holds
the scripts that find, clean and refill the lists a hidden resource was in). No ALS math
here (trainer/pipeline/takedown.py computes the refilled lists) and no Kafka
(consumers/control.py feeds control events in).

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
  published lists in steps of about ``LIST_STEP_OPS`` lookups (store/settle.py), each
  looking up a list's ids in the hidden hash when many resources are queued (its cost then
  does not grow with their number) or ZSCOREs of the few queued; refills are
  ``write_refilled`` calls of 25 lists.
- A forget removes, in one step per language, the user's views (their counts taken back
  from ``item_views``), factors, lists and every queue entry, and leaves a tombstone
  ``forgotten(lang)`` sha1(user) -> seq: a publish computed from counts read before that
  seq writes nothing for the user (REPLACE_LISTS). The next publish trims the tombstone.

On a Redis Cluster (docs/CLUSTER.md section 0) a script may touch one slot only, so the one
call becomes a call per slot, every key declared (:class:`Control` picks the path from the
layout; on one Redis it is the one CONTROL_LUA call above, names unchanged):

- hide/unhide: the item side first (:data:`ITEM_LUA`: ``hidden``, the similar list,
  ``published_items``, ``trending``, the queue), then one :data:`GROUP_LUA` call per slot
  group writing the field into (or out of) that group's ``group_hidden``, where the
  updater's commit and the publisher's per-group writes check take-downs.
- forget: one GROUP_LUA call on the user's group removes every trace and the tombstone
  (scored with the group's ``seq``) and parks the views it removed in the group's
  ``forget_pending``; :data:`TAKE_BACK_LUA` then takes them from ``item_views`` on the item
  side, recording the forget's id in ``forget_done`` in the same step, and the parked entry
  is dropped last. A retry at any point finishes what is parked and never subtracts twice.
- exactly once per stream: each slot keeps the control topic's progress per partition
  (``item_offsets`` / ``group_offsets``, field partition -> next offset applied there), and
  its script applies an event only at or past that offset and moves it in the same step.
  The consumer's own guard (the batch's partition offsets) is checked first and set last,
  so a replay after a crash starts at or before every slot, and each slot skips what it
  holds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from store.cluster_keys import layout
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

ACTIONS = ("hide", "unhide", "forget")
OPS_PER_CALL = 200
"""Control operations per unguarded script call (a hide is five writes per language)."""


# -- on a Redis Cluster: one call per slot, every key declared ------------------------------

DUE_LUA = """
-- due(offsets, field, offset): whether this slot applies the event at ``offset`` of
-- partition ``field`` (it holds nothing past it), moving the slot's progress past it in
-- the same step. field '' = unguarded (the CLI): always.
local function due(offsets, field, offset)
  if field == '' then return true end
  local held = redis.call('HGET', offsets, field)
  if held and tonumber(offset) < tonumber(held) then return false end
  redis.call('HSET', offsets, field, tonumber(offset) + 1)
  return true
end
"""

ITEM_LUA = DUE_LUA + """
-- The item side of hides and unhides of one language (one slot, {L}).
-- KEYS: 1 hidden, 2 published_items, 3 trending, 4 takedown_work, 5 takedown_seq,
-- 6 the item side's control progress HASH, 7.. the similar list of each op, in order.
-- ARGV: per op (field, offset, action, resource id, value). Returns the ops applied.
local n = 0
for j = 0, #ARGV / 5 - 1 do
  local a = j * 5
  local action, rid = ARGV[a + 3], ARGV[a + 4]
  if due(KEYS[6], ARGV[a + 1], ARGV[a + 2]) then
    n = n + 1
    local queue = false
    if action == 'hide' then
      redis.call('HSET', KEYS[1], rid, ARGV[a + 5])
      redis.call('DEL', KEYS[7 + j])
      redis.call('SREM', KEYS[2], rid)
      redis.call('ZREM', KEYS[3], rid)
      queue = true
    elseif redis.call('HDEL', KEYS[1], rid) == 1 then
      queue = true
    end
    if queue then
      local seq = redis.call('INCR', KEYS[5])
      redis.call('HSET', KEYS[4], rid, action .. ':' .. seq)
    end
  end
end
return n
"""

GROUP_LUA = DUE_LUA + """
-- One slot group's part of hides, unhides and forgets of one language ({L:g}).
-- KEYS: 1 group_hidden, 2 the group's control progress HASH, 3 dirty, 4 touched,
-- 5 claims, 6 users, 7 published_users, 8 forgotten, 9 seq, 10 forget_pending,
-- then per forget op, in order: views, factors, recs of its user.
-- ARGV: per op (field, offset, action, target, value).
-- A forget removes the user's every key and queue entry, leaves the tombstone scored with
-- the group's seq and parks the views it removed in forget_pending (``sha1:seq`` -> JSON
-- flat list) for the item side (TAKE_BACK_LUA). Returns the ops applied.
local n, f = 0, 0
for j = 0, #ARGV / 5 - 1 do
  local a = j * 5
  local action, target = ARGV[a + 3], ARGV[a + 4]
  local base = 10 + f * 3
  if action == 'forget' then f = f + 1 end
  if due(KEYS[2], ARGV[a + 1], ARGV[a + 2]) then
    n = n + 1
    if action == 'hide' then redis.call('HSET', KEYS[1], target, ARGV[a + 5])
    elseif action == 'unhide' then redis.call('HDEL', KEYS[1], target)
    else
      local views = redis.call('HGETALL', KEYS[base + 1])
      local gone = redis.call('DEL', KEYS[base + 1], KEYS[base + 2], KEYS[base + 3])
      for q = 3, 5 do gone = gone + redis.call('ZREM', KEYS[q], target) end
      gone = gone + redis.call('SREM', KEYS[6], target) + redis.call('SREM', KEYS[7], target)
      if gone > 0 then
        local seq = redis.call('INCR', KEYS[9])
        local id = redis.sha1hex(target)
        redis.call('ZADD', KEYS[8], seq, id)
        if #views > 0 then
          redis.call('HSET', KEYS[10], id .. ':' .. seq, cjson.encode(views))
        end
      end
    end
  end
end
return n
"""

TAKE_BACK_LUA = """
-- A forget's counts taken back on the item side ({L}), once per forget id.
-- KEYS: 1 item_views, 2 trending_seen, 3 forget_done. ARGV[1]: now (ms); then pairs
-- (forget id, JSON flat list resource, count, ...). An id already in forget_done is
-- skipped (a retry); the ids are recorded in the same step; entries older than a week go.
local done = 0
for j = 2, #ARGV, 2 do
  local id = ARGV[j]
  if not redis.call('ZSCORE', KEYS[3], id) then
    local h = cjson.decode(ARGV[j + 1])
    for k = 1, #h, 2 do
      local c = -tonumber(h[k + 1])
      if redis.call('HINCRBY', KEYS[1], h[k], c) <= 0 then redis.call('HDEL', KEYS[1], h[k]) end
      -- The trending reference drops too: no negative difference, no views lost after it.
      if redis.call('HEXISTS', KEYS[2], h[k]) == 1 and
          redis.call('HINCRBY', KEYS[2], h[k], c) <= 0 then
        redis.call('HDEL', KEYS[2], h[k])
      end
    end
    redis.call('ZADD', KEYS[3], ARGV[1], id)
    done = done + 1
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[1]) - 7 * 86400000)
return done
"""

CHECK_AND_SET_LUA = GUARDS_LUA + """
-- KEYS[1] guard HASH; ARGV the guards. Sets them if every one holds (a guard whose new
-- value is '' only checks); else returns {field, held, ...} and writes nothing.
local bad, _, n = check_guards(KEYS[1])
if #bad > 0 then return bad end
set_guards(KEYS[1], n)
return {}
"""

TAKE_BACK_PAIRS = 50
"""Parked forgets one TAKE_BACK_LUA call gives back (each a few hundred increments)."""


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
    at: tuple[int, int] | None = None
    """The event's (partition, offset) on the control topic (consumers/control.py): what a
    cluster's per-slot progress guards with. None: unguarded (the CLI)."""

    def value(self) -> str:
        """What ``hidden(lang)`` holds for a hidden resource: JSON {reason, ts}."""
        ts = self.ts if self.ts is not None else int(time.time() * 1000)
        return json.dumps({"reason": self.reason or "", "ts": ts}, sort_keys=True)


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


class ClusterControl:
    """The control step on a Redis Cluster: a call per slot (module docstring)."""

    def __init__(self, client, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self._guard = client.register_script(CHECK_AND_SET_LUA)
        self._item = client.register_script(ITEM_LUA)

    def apply(self, guard_key: str, guards: Sequence[Guard],
              ops: Sequence[ControlOp]) -> dict[str, str | None]:
        """The consumer's guards checked, every op applied slot by slot (each slot once per
        event), then the guards set; ``{}`` when applied, else the failed guards."""
        if guards:
            bad = mismatches(self._guard(keys=[guard_key], args=guard_args(
                [(f, expected, None) for f, expected, _new in guards])))
            if bad:
                return bad
        stream = _stream(self.keys.prefix, guard_key)
        for lang, lang_ops in self._by_lang(ops).items():
            self._apply_lang(lang, lang_ops, stream)
        if guards:
            return mismatches(self._guard(keys=[guard_key], args=guard_args(guards)))
        return {}

    def _by_lang(self, ops: Sequence[ControlOp]) -> dict[str, list[ControlOp]]:
        """The ops of each language, in order (lang None: every language in ``langs``)."""
        every = None
        out: dict[str, list[ControlOp]] = {}
        for op in ops:
            if op.lang is None and every is None:
                every = sorted(text(m) for m in self.client.smembers(self.keys.langs))
            for lang in [op.lang] if op.lang else every:
                out.setdefault(lang, []).append(op)
        return out

    def _apply_lang(self, lang: str, ops: list[ControlOp], stream: tuple[str, str]) -> None:
        keys = self.keys
        takedowns = [op for op in ops if op.action != "forget"]
        if takedowns:  # the item side first: from then on no list writer keeps it
            self._item(keys=[keys.hidden(lang), keys.published_items(lang),
                             keys.trending(lang), keys.takedown_work(lang),
                             keys.takedown_seq(lang), keys.item_offsets(lang, *stream),
                             *(keys.similar(lang, op.target) for op in takedowns)],
                       args=[x for op in takedowns for x in _op_args(op)])
        forgets: dict[int, list[ControlOp]] = {}
        for op in ops:
            if op.action == "forget":
                forgets.setdefault(keys.group_of(op.target), []).append(op)
        pipe = self.client.pipeline(transaction=False)
        for group in keys.slot_groups():
            mine = forgets.get(group.group, [])
            if takedowns or mine:
                _group_call(pipe, group, lang, stream,
                            [op for op in ops if op.action != "forget" or op in mine], mine)
        if takedowns or forgets:
            pipe.execute()
        if forgets:
            finish_forgets(self.client, keys, lang, list(forgets))


def _group_call(pipe, group: Keys, lang: str, stream: tuple[str, str],
                ops: list[ControlOp], forgets: list[ControlOp]) -> None:
    """One :data:`GROUP_LUA` call of slot group ``group`` queued on ``pipe`` (EVAL, not
    EVALSHA: a node a reshard or failover brings has no script cache to miss)."""
    call_keys = [group.group_hidden(lang), group.group_offsets(lang, *stream),
                 group.dirty(lang), group.touched(lang), group.claims(lang),
                 group.users(lang), group.published_users(lang), group.forgotten(lang),
                 group.seq(lang), group.forget_pending(lang)]
    for op in forgets:
        call_keys += [group.views(lang, op.target), group.factors(lang, op.target),
                      group.recs(lang, op.target)]
    pipe.execute_command("EVAL", GROUP_LUA, len(call_keys), *call_keys,  # a cluster pipeline
                         *(x for op in ops for x in _op_args(op)))  # has no eval()


def _op_args(op: ControlOp) -> tuple:
    field, offset = ("", 0) if op.at is None else (str(op.at[0]), op.at[1])
    return (field, offset, op.action, op.target, op.value() if op.action == "hide" else "")


def _stream(prefix: str, guard_key: str) -> tuple[str, str]:
    """(consumer group, topic) of the consumer's guard hash ``{prefix}:_offsets:{group}:
    {topic}`` (topic names have no ':'); another guard key names a stream of its own."""
    head = f"{prefix}:_offsets:"
    if guard_key.startswith(head) and ":" in guard_key[len(head):]:
        group, _, topic = guard_key[len(head):].rpartition(":")
        return group, topic
    return "control", guard_key


def finish_forgets(client, keys: Keys, lang: str, groups: Sequence[int] | None = None) -> int:
    """On a cluster: give back from ``item_views`` the counts of every forget parked in
    these slot groups (None: all), once each, then drop them from the groups: what a forget
    interrupted between its two steps left is finished here. Returns the forgets given
    back now (0 on one Redis, where a forget is one step)."""
    if not keys.cluster:
        return 0
    chosen = keys.slot_groups() if groups is None else [keys.in_group(g) for g in groups]
    pipe = client.pipeline(transaction=False)
    for group in chosen:
        pipe.hgetall(group.forget_pending(lang))
    script = client.register_script(TAKE_BACK_LUA)
    side = [keys.item_views(lang), keys.trending_seen(lang), keys.forget_done(lang)]
    given = 0
    for group, parked in zip(chosen, pipe.execute(), strict=True):
        if not parked:
            continue
        pairs = [x for item in parked.items() for x in item]
        for s in range(0, len(pairs), 2 * TAKE_BACK_PAIRS):
            given += int(script(keys=side, args=[int(time.time() * 1000),
                                                 *pairs[s:s + 2 * TAKE_BACK_PAIRS]]))
        client.hdel(group.forget_pending(lang), *parked)
    return given


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
