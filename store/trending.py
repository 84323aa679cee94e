"""The trending list: per language, what is being viewed now, for users the model cannot place.

No change to the consumer's write path: a refresh (every ``every`` seconds, run by
``recs update``'s loop or ``recs trending --every``) compares ``item_views`` with the totals
it saw last time (``trending_seen``) and adds the positive difference to an exponentially
decayed score per resource (``trending_scores``): a view applied ``a`` seconds ago weighs
``0.5 ** (a / half_life)``. ``trending(lang)`` is the top ``size`` of those scores without
hidden resources and without resources whose all-time total reached ``max_item_views`` (the
platform's too-popular cap: serendipity, not the front page).

How, without ever stalling Redis for long:

- Scores are kept in "forward decay" form: a difference ``d`` found at time ``t`` adds
  ``d * 2 ** ((t - t0) / half_life)`` for a landmark ``t0``, so nothing has to be decayed
  between refreshes; the list's scores are those values times ``2 ** (-(now - t0) /
  half_life)``. The landmark moves forward (every score rescaled once) after 40 half-lives.
- A refresh walks ``item_views`` with HSCAN, a chunk of 200 fields per script
  (:data:`STEP_LUA`): each field's difference and its new reference are written together,
  so a refresh cut short (a crash, two refreshes at once) never counts a view twice or
  loses one; the next one carries on. Then :data:`FINISH_LUA` rewrites the list in one
  step, so readers see the old list or the new one.

On a Redis Cluster every key both scripts touch (``item_views``, ``trending*``, ``hidden``)
is on the language's item side, one slot, so a refresh is the same calls on that node.

Invariants and edge cases:

- Time is Redis server time. Refreshing more often (several updaters) changes nothing but
  freshness; a refresh within ``min_interval`` of the previous one does nothing.
- The first refresh of a language only records the totals: views counted before the
  trending list existed are not "now".
- A view counts in the window when the consumer APPLIES it (by the time it reaches the
  counts), not by the event's ``ts``.
- A ``recs forget`` takes the user's views back from the totals AND from the reference in
  the same step (store/control.py), so the forgotten views keep only their already-decayed
  share in the scores and later views count normally. Any other fall of a total is a
  negative difference: clamped to 0, the lower total becomes the reference.
- After a Redis rollback (restore, failover to a lagging replica) the totals, the reference
  and the scores all roll back together (same Redis); the consumer then replays the lost
  events, and the next refresh counts them once, as views applied at that moment (a burst
  in the list, decaying with the half-life like any other).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from store.keys import Keys

STEP_LUA = """
-- KEYS[1] item_views HASH, KEYS[2] trending_seen HASH, KEYS[3] trending_scores ZSET,
-- KEYS[4] trending_state HASH (t0: landmark ms, ready: '1' once a first pass is done).
-- ARGV[1] HSCAN cursor, ARGV[2] HSCAN count, ARGV[3] half-life (ms).
-- Adds each scanned resource's positive difference to the last seen total, weighted for
-- the landmark, and records the new total; before the first pass completed, only records.
-- Returns the next cursor ('0': done).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local t0 = tonumber(redis.call('HGET', KEYS[4], 't0') or '')
if not t0 then
  t0 = now
  redis.call('HSET', KEYS[4], 't0', t0)
end
local ready = redis.call('HGET', KEYS[4], 'ready') == '1'
local weight = 2 ^ ((now - t0) / tonumber(ARGV[3]))
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
local fields = page[2]
for i = 1, #fields, 2 do
  local rid, v = fields[i], tonumber(fields[i + 1])
  local seen = tonumber(redis.call('HGET', KEYS[2], rid) or '0')
  if v ~= seen then
    if ready and v > seen then redis.call('ZINCRBY', KEYS[3], (v - seen) * weight, rid) end
    redis.call('HSET', KEYS[2], rid, v)
  end
end
return page[1]
"""

FINISH_LUA = """
-- KEYS[1] trending_scores ZSET, KEYS[2] trending ZSET (contract), KEYS[3] hidden HASH,
-- KEYS[4] item_views HASH, KEYS[5] trending_state HASH.
-- ARGV[1] half-life (ms), ARGV[2] max item views (0: no cap), ARGV[3] list length.
-- Rewrites the list: the best scores decayed to now, hidden and too-popular left out;
-- drops negligible scores; moves the landmark after 40 half-lives. Returns {scored, length}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local hl = tonumber(ARGV[1])
local t0 = tonumber(redis.call('HGET', KEYS[5], 't0') or now)
local f = 2 ^ (-(now - t0) / hl)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (0.001 / f))
if (now - t0) / hl > 40 then
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do redis.call('ZADD', KEYS[1], tonumber(all[i + 1]) * f, all[i]) end
  redis.call('HSET', KEYS[5], 't0', now)
  f = 1
end
local cap, size = tonumber(ARGV[2]), tonumber(ARGV[3])
local out, start = {}, 0
while #out < 2 * size do
  local rows = redis.call('ZREVRANGE', KEYS[1], start, start + 2 * size - 1, 'WITHSCORES')
  if #rows == 0 then break end
  for i = 1, #rows, 2 do
    local rid = rows[i]
    if #out < 2 * size and redis.call('HEXISTS', KEYS[3], rid) == 0 and (cap == 0
        or tonumber(redis.call('HGET', KEYS[4], rid) or '0') < cap) then
      out[#out + 1] = tonumber(rows[i + 1]) * f
      out[#out + 1] = rid
    end
  end
  start = start + 2 * size
end
redis.call('DEL', KEYS[2])
if #out > 0 then redis.call('ZADD', KEYS[2], unpack(out)) end
redis.call('HSET', KEYS[5], 'ready', '1', 'at', now)
return {redis.call('ZCARD', KEYS[1]), #out / 2}
"""


@dataclass(frozen=True)
class TrendingConfig:
    """How the trending list is computed and how often."""

    half_life: float = 1800.0
    """Seconds after which a view weighs half: the list reflects roughly the last hour or
    two (a view two hours old weighs 1/16)."""
    max_item_views: int = 20000
    """Resources with this many all-time views or more are left out (0: no cap); the
    commands pass the training filter's ``--max-item-views`` default."""
    size: int = 100
    """Resources kept in the list."""
    every: float = 60.0
    """Seconds between refreshes (0: ``recs update`` does not refresh)."""

    @classmethod
    def from_args(cls, args) -> TrendingConfig:
        """From ``--trending-*`` and ``--max-item-views`` (recs/cli.py; their defaults are
        this class's fields)."""
        return cls(half_life=args.trending_half_life, max_item_views=args.max_item_views,
                   size=args.trending_size, every=args.trending_every)


class Trending:
    """:data:`REFRESH_LUA` bound to one client, with a clock for periodic refreshes."""

    def __init__(self, client: redis.Redis, keys: Keys, config: TrendingConfig,
                 chunk: int = 200) -> None:
        self.client, self.keys, self.config = client, keys, config
        self.chunk = chunk
        """Fields of ``item_views`` per step script (bounds how long a reader waits)."""
        self._step = client.register_script(STEP_LUA)
        self._finish = client.register_script(FINISH_LUA)
        self._next = 0.0

    def refresh(self, lang: str, min_interval: float | None = None) -> tuple[bool, int, int]:
        """Refresh ``lang`` now (unless refreshed within ``min_interval`` seconds, default
        half of ``every``); returns (refreshed, resources scored, list length)."""
        k, c = self.keys, self.config
        if min_interval is None:
            min_interval = c.every / 2
        if min_interval > 0:
            at = self.client.hget(k.trending_state(lang), "at")
            now_s, now_us = self.client.time()
            if at is not None and now_s * 1000 + now_us // 1000 - int(at) < min_interval * 1000:
                return False, 0, 0
        half_life = int(c.half_life * 1000)
        step_keys = [k.item_views(lang), k.trending_seen(lang), k.trending_scores(lang),
                     k.trending_state(lang)]
        cursor = "0"
        while True:
            cursor = self._step(keys=step_keys, args=[cursor, self.chunk, half_life])
            cursor = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
            if cursor == "0":
                break
        scored, length = self._finish(
            keys=[k.trending_scores(lang), k.trending(lang), k.hidden(lang),
                  k.item_views(lang), k.trending_state(lang)],
            args=[half_life, int(c.max_item_views), int(c.size)])
        return True, int(scored), int(length)

    def tick(self, langs) -> bool:
        """Refresh every language in ``langs`` if ``every`` seconds have passed since the
        last tick (a loop calls this each round); True when it refreshed."""
        now = time.monotonic()
        if self.config.every <= 0 or now < self._next:
            return False
        self._next = now + self.config.every
        for lang in langs:
            self.refresh(lang)
        return True
