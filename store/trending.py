"""The trending list: per language, what is being viewed now, for users the model cannot place.

No change to the consumer's write path: a refresh (every ``every`` seconds, run by
``recs update``'s loop or ``recs trending --every``) compares ``item_views`` with the totals
it saw last time (``trending_seen``) and adds the positive difference to an exponentially
decayed score per resource (``trending_scores``): a view applied ``a`` seconds ago weighs
``0.5 ** (a / half_life)``. ``trending(lang)`` is the top ``size`` of those scores without
hidden resources and without resources whose all-time total reached ``max_item_views`` (the
platform's too-popular cap: serendipity, not the front page). Everything happens in ONE
script (:data:`REFRESH_LUA`), so readers see the old list or the new one.

Invariants and edge cases:

- Time is Redis server time, and the decay uses the real time since the last refresh, so
  refreshing more often (several updaters) or late changes nothing but freshness: decays
  compose. A refresh within ``min_interval`` of the previous one does nothing.
- The first refresh of a language only records the totals: views counted before the
  trending list existed are not "now".
- A view counts in the window when the consumer APPLIES it (by the time it reaches the
  counts), not by the event's ``ts``.
- A negative difference (a ``recs forget`` took a user's views back) is clamped to 0 and the
  new, lower total becomes the reference: the forgotten views keep their already-decayed
  share, and nothing is counted twice.
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

REFRESH_LUA = """
-- KEYS[1] item_views HASH, KEYS[2] trending_seen HASH, KEYS[3] trending_scores ZSET,
-- KEYS[4] trending ZSET (contract), KEYS[5] hidden HASH, KEYS[6] trending_state HASH.
-- ARGV[1] half-life (ms); ARGV[2] max item views (0: no cap); ARGV[3] list length;
-- ARGV[4] least ms since the previous refresh (else nothing is done).
-- Returns {refreshed 0/1, resources scored, list length}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('HGET', KEYS[6], 'at') or '')
if last and now - last < tonumber(ARGV[4]) then return {0, 0, 0} end
local CHUNK = 4000
local function variadic(cmd, key, args)
  for s = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, s, math.min(s + CHUNK - 1, #args)))
  end
end
if last and now > last then
  local f = 0.5 ^ ((now - last) / tonumber(ARGV[1]))
  local all = redis.call('ZRANGE', KEYS[3], 0, -1, 'WITHSCORES')
  local keep, drop = {}, {}
  for i = 1, #all, 2 do
    local s = tonumber(all[i + 1]) * f
    if s < 0.001 then drop[#drop + 1] = all[i]
    else keep[#keep + 1] = s; keep[#keep + 1] = all[i] end
  end
  variadic('ZADD', KEYS[3], keep)
  variadic('ZREM', KEYS[3], drop)
end
local seen = {}
local prev = redis.call('HGETALL', KEYS[2])
for i = 1, #prev, 2 do seen[prev[i]] = tonumber(prev[i + 1]) end
local totals = redis.call('HGETALL', KEYS[1])
local total_of = {}
for i = 1, #totals, 2 do
  local rid, v = totals[i], tonumber(totals[i + 1])
  total_of[rid] = v
  local d = v - (seen[rid] or 0)
  if last and d > 0 then redis.call('ZINCRBY', KEYS[3], d, rid) end
end
redis.call('DEL', KEYS[2])
variadic('HSET', KEYS[2], totals)
local cap, size = tonumber(ARGV[2]), tonumber(ARGV[3])
local ranked = redis.call('ZREVRANGE', KEYS[3], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #ranked, 2 do
  if #out >= 2 * size then break end
  local rid = ranked[i]
  if (cap == 0 or (total_of[rid] or 0) < cap) and redis.call('HEXISTS', KEYS[5], rid) == 0 then
    out[#out + 1] = ranked[i + 1]
    out[#out + 1] = rid
  end
end
redis.call('DEL', KEYS[4])
variadic('ZADD', KEYS[4], out)
redis.call('HSET', KEYS[6], 'at', now)
return {1, #ranked / 2, #out / 2}
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
        """From ``--trending-*`` and ``--max-item-views`` (recs/cli_takedown.py)."""
        d = cls()
        return cls(half_life=getattr(args, "trending_half_life", d.half_life),
                   max_item_views=getattr(args, "max_item_views", d.max_item_views),
                   size=getattr(args, "trending_size", d.size),
                   every=getattr(args, "trending_every", d.every))


class Trending:
    """:data:`REFRESH_LUA` bound to one client, with a clock for periodic refreshes."""

    def __init__(self, client: redis.Redis, keys: Keys, config: TrendingConfig) -> None:
        self.client, self.keys, self.config = client, keys, config
        self._script = client.register_script(REFRESH_LUA)
        self._next = 0.0

    def refresh(self, lang: str, min_interval: float | None = None) -> tuple[bool, int, int]:
        """Refresh ``lang`` now (unless refreshed within ``min_interval`` seconds, default
        half of ``every``); returns (refreshed, resources scored, list length)."""
        k, c = self.keys, self.config
        if min_interval is None:
            min_interval = c.every / 2
        out = self._script(keys=[k.item_views(lang), k.trending_seen(lang),
                                 k.trending_scores(lang), k.trending(lang), k.hidden(lang),
                                 k.trending_state(lang)],
                           args=[int(c.half_life * 1000), int(c.max_item_views), int(c.size),
                                 int(min_interval * 1000)])
        return bool(int(out[0])), int(out[1]), int(out[2])

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
