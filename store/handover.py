"""The trainer's hand-over to the updater once a new model is live (docs in ``store.publish``,
step 4): users with views newer than the counts the model was trained on are queued for the
updater, and the users it had pending when the counts were read are settled.

Both are scripts (:data:`REQUEUE_TOUCHED`, :data:`SETTLE_PENDING`) run after the switch, so
a user is never folded into the old model after the new one published their lists.

Per slot group (docs/CLUSTER.md, checklist 4): ``touched``, ``dirty`` and ``forgotten`` are
per group on a Redis Cluster, each ordered by its group's own ``seq``, so
:func:`hand_over_groups` runs both scripts once per group with that group's S_g (read before
that group's counts), after the model copy of every group is written. On one Redis there is
one group and it is exactly :func:`requeue_touched` with S.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import redis

from store.groups import per_primary, preload, script_call, seq_of, split_users
from store.keys import Keys

REQUEUE_TOUCHED = """
-- KEYS[1]: touched(lang). KEYS[2]: dirty(lang).
-- ARGV[1]: seq S read before the counts. ARGV[2]: at most this many entries to trim.
-- ARGV[3]: '1' to queue the users touched after S (the first call), '0' to only trim.
-- Views of batches after S may be missing from the counts the new model was trained on:
-- queue those users for the updater (score = their touched seq, never lowering a dirty
-- score) so it folds them into the new model. Entries up to S are in the model: trim them,
-- a bounded number per call (a first retrain may trim every user; one ZREMRANGEBYSCORE of
-- that many would stall readers). Scores only grow, so trimming later is as good as now.
-- Returns {users queued, entries trimmed}.
local queued = 0
if ARGV[3] == '1' then
  local later = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES')
  for i = 1, #later, 2 do
    redis.call('ZADD', KEYS[2], 'GT', later[i + 1], later[i])
  end
  queued = #later / 2
end
local n = math.min(redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]), tonumber(ARGV[2]))
if n > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1) end
return {queued, n}
"""

SETTLE_PENDING = """
-- KEYS[1]: dirty(lang). KEYS[2] (optional): forgotten(lang); a user forgotten after S is
-- never queued again. ARGV[1]: seq S read before the counts. ARGV[2]: c.
-- ARGV[3 .. 2+c]: users that were pending (dirty) when the counts were read and that the
-- new model covers; ARGV[3+c ..]: pending users it does not cover.
-- Runs after the new model is live. A pending user no longer in dirty was finished by the
-- updater meanwhile, perhaps against the old model after this publish wrote them: queue
-- them again (score S). A covered user still dirty at a score <= S has every view in the
-- new model, which just published their lists: drop them from the queue (an updater
-- holding them fails its version check and writes nothing). Users with newer views have a
-- score > S and stay. Returns {queued again, dropped}.
local s = tonumber(ARGV[1])
local covered = tonumber(ARGV[2])
local again, dropped = 0, 0
for i = 3, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  local gone = KEYS[2] and redis.call('ZSCORE', KEYS[2], redis.sha1hex(ARGV[i]))
  if not score then
    if not (gone and tonumber(gone) > s) then
      redis.call('ZADD', KEYS[1], s, ARGV[i])
      again = again + 1
    end
  elseif i <= 2 + covered and tonumber(score) <= s then
    redis.call('ZREM', KEYS[1], ARGV[i])
    dropped = dropped + 1
  end
end
return {again, dropped}
"""

@dataclass
class Handover:
    """What :func:`requeue_touched` changed in the updater's queue."""

    newer: int = 0
    """Users with views after the counts were read, queued for the updater."""
    again: int = 0
    """Pending users the updater finished during the publish, queued again."""
    dropped: int = 0
    """Pending users fully covered by the new model, taken off the queue."""


def requeue_touched(client: redis.Redis, keys: Keys, lang: str, seq: int,
                    pending: Sequence[str] = (), covered: Collection[str] = (),
                    chunk: int = 1000) -> Handover:
    """After the new model is live, settle the updater's queue for ``lang``:

    - every user whose views are newer than ``seq`` is queued (:data:`REQUEUE_TOUCHED`), and
      ``touched`` is trimmed;
    - ``pending`` (users dirty when the counts were read) are settled against ``covered``
      (the users the new model has lists for): see :data:`SETTLE_PENDING`.
    """
    settle = client.register_script(SETTLE_PENDING)
    requeue = client.register_script(REQUEUE_TOUCHED)
    preload(client, settle, requeue)
    return _settle_group(client, keys, lang, seq, pending, covered, chunk, settle, requeue)


def _settle_group(client: redis.Redis, keys: Keys, lang: str, seq: int,
                  pending: Sequence[str], covered: Collection[str], chunk: int, settle,
                  requeue) -> Handover:
    """:func:`requeue_touched`'s work in one group, the scripts registered and loaded."""
    out = Handover()
    requeue_keys = [keys.touched(lang), keys.dirty(lang)]
    mine = [u for u in pending if u in covered]
    others = [u for u in pending if u not in covered]
    pipe = client.pipeline(transaction=False)
    for group, is_covered in ((mine, True), (others, False)):
        for s in range(0, len(group), chunk):
            part = group[s:s + chunk]
            script_call(pipe, settle, [keys.dirty(lang), keys.forgotten(lang)],
                        [seq, len(part) if is_covered else 0, *part])
    script_call(pipe, requeue, requeue_keys, [seq, chunk, 1])
    *settled, (queued, trimmed) = pipe.execute()
    for again, dropped in settled:
        out.again += int(again)
        out.dropped += int(dropped)
    while int(trimmed) >= chunk:
        _, trimmed = requeue(keys=requeue_keys, args=[seq, chunk, 0])
    out.newer = int(queued)
    return out


def queue_for_updater(client: redis.Redis, keys: Keys, lang: str, users: Sequence[str],
                      seq: int, chunk: int = 1000) -> int:
    """Queue ``users`` in ``dirty(lang)`` at score ``seq`` (never lowering a higher score), so
    the updater folds them into the model now live; returns how many."""
    pipe = client.pipeline(transaction=False)
    for s in range(0, len(users), chunk):
        pipe.zadd(keys.dirty(lang), dict.fromkeys(users[s:s + chunk], seq), gt=True)
    pipe.execute()
    return len(users)


def hand_over_groups(client: redis.Redis, keys: Keys, lang: str, seqs: Mapping[Keys, int],
                     pending: Sequence[str] = (), covered: Collection[str] = (),
                     chunk: int = 1000) -> Handover:
    """:func:`requeue_touched` in every slot group of ``lang``, each with its own S_g
    (``seqs``, read before that group's counts) and its own pending users; the totals."""
    out = Handover()
    settle = client.register_script(SETTLE_PENDING)
    requeue = client.register_script(REQUEUE_TOUCHED)
    preload(client, settle, requeue)  # once, not once per group
    pending_by_group = split_users(keys, pending)
    done = per_primary(client, keys, lang, lambda group: _settle_group(
        client, group, lang, seq_of(seqs, group), pending_by_group.get(group, ()), covered,
        chunk, settle, requeue))
    for one in done.values():
        out.newer += one.newer
        out.again += one.again
        out.dropped += one.dropped
    return out


def queue_groups(client: redis.Redis, keys: Keys, lang: str, users: Sequence[str],
                 seqs: int | Mapping[Keys, int], chunk: int = 1000) -> int:
    """:func:`queue_for_updater` per slot group, each group's users at its own seq."""
    for group, part in split_users(keys, users).items():
        queue_for_updater(client, group, lang, part, seq_of(seqs, group), chunk)
    return len(users)
