"""Take-downs and forgetting on a Redis Cluster (docs/CLUSTER.md section 0): the control
step of store/control.py cut into a call per slot, every key declared.
:class:`store.control.Control` picks this path from the layout; on one Redis nothing here
runs (its one CONTROL_LUA call does the same in one step).

Invariants:

- hide/unhide: the item side first (:data:`ITEM_LUA`: ``hidden``, the similar list,
  ``published_items``, ``trending``, the queue), then one :data:`GROUP_LUA` call per slot
  group writing the field into (or out of) that group's ``group_hidden``, where the
  updater's commit and the publisher's per-group writes check take-downs. From the item
  step on no list writer keeps the resource, as on one Redis.
- forget: one GROUP_LUA call on the user's group removes every trace and the tombstone
  (scored with the group's ``seq``) and parks the views it removed in the group's
  ``forget_pending``; :data:`TAKE_BACK_LUA` then takes the views from ``item_views`` on the
  item side, recording the forget's id in ``forget_done`` in the same step, and the parked
  entry is dropped last (:func:`finish_forgets`). A retry at any point finishes what is parked
  and never subtracts twice.
- durable before the next step: every slot's step goes over one connection to its node
  with a WAIT for the node's replica (store/replicas.py), so the take-back follows a group
  step the replica holds, and the consumer's guard (set last) moves only past events every
  slot's replica holds: a failover keeps what the consumer's offsets say is done, and a
  restart from them loses nothing. A replica behind for longer than :data:`WAIT_TRIES`
  WAITs (frozen, cut off) is not waited for, with a warning.
- exactly once per stream: each slot keeps the control topic's progress per partition
  (``item_offsets`` / ``group_offsets``, field partition -> next offset applied there), and
  its script applies an event only at or past that offset and moves it in the same step.
  The consumer's own guard (the batch's partition offsets) is checked first and set last
  (:data:`CHECK_AND_SET_LUA`), so a replay after a crash starts at or before every slot,
  and each slot skips what it holds.
- No call holds a node for long: a take-back gives back :data:`TAKE_BACK_PAIRS` parked
  forgets at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import redis

from store.control_op import ControlOp
from store.guards import GUARDS_LUA, Guard, guard_args, mismatches
from store.keys import Keys
from store.read import text
from store.replicas import on_primary

log = logging.getLogger("recs.control")

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

WAIT_TRIES = 10
"""WAITs of REPLICA_WAIT_MS each a slot's step gets for its replica (a replica that stays
behind longer, frozen or cut off, must not stop the control stream)."""

MOVE_RETRIES = 3
"""Sends again of a slot's step whose slot moves or whose node is gone."""


class ClusterControl:
    """The control step on a Redis Cluster: a call per slot (module docstring)."""

    def __init__(self, client, keys: Keys) -> None:
        self.client, self.keys = client, keys
        self._guard = client.register_script(CHECK_AND_SET_LUA)

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
            item_keys = [keys.hidden(lang), keys.published_items(lang), keys.trending(lang),
                         keys.takedown_work(lang), keys.takedown_seq(lang),
                         keys.item_offsets(lang, *stream),
                         *(keys.similar(lang, op.target) for op in takedowns)]
            args = [x for op in takedowns for x in _op_args(op)]
            replicated(self.client, item_keys[0], lambda pipe: pipe.execute_command(
                "EVAL", ITEM_LUA, len(item_keys), *item_keys, *args))
        forgets: dict[int, list[ControlOp]] = {}
        for op in ops:
            if op.action == "forget":
                forgets.setdefault(keys.group_of(op.target), []).append(op)
        by_node: dict[str, list[tuple[Keys, list[ControlOp], list[ControlOp]]]] = {}
        for group in keys.slot_groups():
            mine = forgets.get(group.group, [])
            if takedowns or mine:
                node = self.client.get_node_from_key(group.seq(lang)).name
                by_node.setdefault(node, []).append(
                    (group, [op for op in ops if op.action != "forget" or op in mine], mine))
        for calls in by_node.values():
            def commands(pipe, calls=calls):
                for group, group_ops, mine in calls:
                    _group_call(pipe, group, lang, stream, group_ops, mine)
            replicated(self.client, calls[0][0].seq(lang), commands)
        if forgets:
            finish_forgets(self.client, keys, lang, list(forgets))


def replicated(client, key: str, commands) -> list:
    """:func:`store.replicas.on_primary` with :data:`WAIT_TRIES`, sent again while the slot
    moves or its node is replaced (each op is due once per slot; a take-back once per
    forget id; an unguarded forget sent again finds nothing more to remove)."""
    for attempt in range(MOVE_RETRIES + 1):
        try:
            replies, safe = on_primary(client, key, commands, WAIT_TRIES)
            break
        except redis.ConnectionError:
            if attempt == MOVE_RETRIES:
                raise
            time.sleep(0.2 * (attempt + 1))
    if not safe:
        log.warning("a control step is not on the replica yet; going on",
                    extra={"fields": {"key": key}})
    return replies


def _group_call(pipe, group: Keys, lang: str, stream: tuple[str, str],
                ops: list[ControlOp], forgets: list[ControlOp]) -> None:
    """One :data:`GROUP_LUA` call of slot group ``group`` queued on ``pipe``, a node's
    pipeline (EVAL, not EVALSHA: a node a reshard or failover brings has no script cache
    to miss)."""
    call_keys = [group.group_hidden(lang), group.group_offsets(lang, *stream),
                 group.dirty(lang), group.touched(lang), group.claims(lang),
                 group.users(lang), group.published_users(lang), group.forgotten(lang),
                 group.seq(lang), group.forget_pending(lang)]
    for op in forgets:
        call_keys += [group.views(lang, op.target), group.factors(lang, op.target),
                      group.recs(lang, op.target)]
    pipe.execute_command("EVAL", GROUP_LUA, len(call_keys), *call_keys,
                         *(x for op in ops for x in _op_args(op)))


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
    side = [keys.item_views(lang), keys.trending_seen(lang), keys.forget_done(lang)]
    given = 0
    for group, parked in zip(chosen, pipe.execute(), strict=True):
        if not parked:
            continue
        pairs = [x for item in parked.items() for x in item]
        for s in range(0, len(pairs), 2 * TAKE_BACK_PAIRS):
            args = [int(time.time() * 1000), *pairs[s:s + 2 * TAKE_BACK_PAIRS]]
            given += int(replicated(client, side[0], lambda pipe, args=args: pipe.execute_command(
                "EVAL", TAKE_BACK_LUA, len(side), *side, *args))[0])
        client.hdel(group.forget_pending(lang), *parked)
    return given
