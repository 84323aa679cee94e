"""A small read client for Python apps: the published lists and the model description.

Usage::

    from store.client import RecsClient

    recs = RecsClient("redis://localhost:6379/0")          # or RecsClient(redis.Redis(...))
    recs.similar("en", 489473, n=5)     # [(512001, 0.93), (77310, 0.91), ...] best first
    recs.recommend("en", "8b0c2f0e-...", n=10)              # [(resource_id, score), ...]
    recs.model_info("en")   # {"version": "...", "trained_at": "...", "factors": 40, ...}

Each call is one Redis command, so any language's client does the same::

    ZREVRANGE recs:en:similar:489473 0 4 WITHSCORES
    ZREVRANGE recs:en:recs:8b0c2f0e-... 0 9 WITHSCORES
    HGETALL recs:en:model

During an A/B experiment (docs/CONTRACT.md "Experiments") ``for_user_tagged`` also says
which model version and arm the list came from, read in the same MULTI as the list.

On a Redis Cluster (``redis+cluster://``, docs/CLUSTER.md) the same calls work: the key
names come from ``store.cluster_keys.layout`` (hash-tagged, users in slot groups), and the calls
that read a user's list with something of the language's item side (``for_user``,
``for_user_tagged``) make two reads, each in one slot: the user's group first (the list,
the group's copy of the model version, its copy of ``hidden``), then, only when the user
has no visible list of their own, the item side (trending, ``hidden``) and the user's views
of those trending entries. The model version a list is tagged with is the one read in the
same script as the list (``store.read`` "a user's list on a Redis Cluster"), and during an
experiment so are the arm and the arm's model version (the group's copies of the
experiment hash and of each arm's model hash).

An id the published model does not cover (or a language with nothing published) gives an
empty list, so an app can fall back to, say, popular resources; ``model_info`` returns None
when nothing is published. Lists are replaced whole while a new model is published, so a
reader never sees a half-written one.
"""

from __future__ import annotations

import redis

from store.cluster_keys import layout
from store.connection import connect
from store.experiments import Tag, queue_tag_reads, tag_of
from store.keys import Keys
from store.read import (
    GROUP_LIST_LUA,
    ITEM_LIST_LUA,
    Scored,
    decode_details,
    decode_model,
    decode_scored,
    group_list_keys,
    pairs_of,
    tag_replies,
    text,
    top_range,
    unviewed,
)

__all__ = ["RecsClient", "Scored"]


FOR_USER_LUA = """
-- KEYS[1] recs(lang, user), KEYS[2] trending(lang), KEYS[3] views(lang, user),
-- KEYS[4] hidden(lang). ARGV[1] n.
-- The user's own list if they have one, else the trending list without what they viewed;
-- hidden resources skipped in both (a hide is enforced here even in the seconds before its
-- lists are refilled). Returns {source, {member, score, ...}}.
local n = tonumber(ARGV[1])
local function pick(key, skip_viewed)
  local out = {}
  local stop = skip_viewed and -1 or (n + 9)
  local rows = redis.call('ZREVRANGE', key, 0, stop, 'WITHSCORES')
  for i = 1, #rows, 2 do
    if #out >= 2 * n then break end
    if redis.call('HEXISTS', KEYS[4], rows[i]) == 0 and not (skip_viewed
        and redis.call('HEXISTS', KEYS[3], rows[i]) == 1) then
      out[#out + 1] = rows[i]
      out[#out + 1] = rows[i + 1]
    end
  end
  return out
end
local own = pick(KEYS[1], false)
if #own > 0 then return {'personal', own} end
local hot = pick(KEYS[2], true)
if #hot > 0 then return {'trending', hot} end
return {'none', {}}
"""


class RecsClient:
    """Reads what ``recs train`` and ``recs update`` publish. Thread-safe (redis-py pools)."""

    def __init__(self, url_or_redis: str | redis.Redis, prefix: str = "recs") -> None:
        self.redis = connect(url_or_redis) if isinstance(url_or_redis, str) else url_or_redis
        self.keys: Keys = layout(self.redis, prefix)
        self._for_user = None
        self._group_list = self._item_list = None
        self._arm_names: dict[str, list[str]] = {}
        self._for_user_sha: str | None = None

    def similar(self, lang: str, resource_id: int | str, n: int = 10) -> list[Scored]:
        """The ``n`` resources most similar to ``resource_id``, best first (score = cosine)."""
        return self._top(self.keys.similar(lang, int(resource_id)), n)

    def recommend(self, lang: str, user_id: str, n: int = 10) -> list[Scored]:
        """The ``n`` best resources for ``user_id`` that they have not viewed, best first."""
        return self._top(self.keys.recs(lang, user_id), n)

    def for_user(self, lang: str, user_id: str, n: int = 10) -> tuple[list[Scored], str]:
        """The user's own list, or for a user the model cannot place the trending list
        (without what they viewed), in one round trip: ``(rows, source)`` with source
        ``"personal"``, ``"trending"`` or ``"none"`` (both empty)."""
        if n <= 0:
            return [], "none"
        k = self.keys
        if k.cluster:
            pairs, source, _ = self._for_user_cluster(lang, user_id, int(n), [])
            return pairs, source
        if self._for_user is None:
            self._for_user = self.redis.register_script(FOR_USER_LUA)
        source, rows = self._for_user(
            keys=[k.recs(lang, user_id), k.trending(lang), k.views(lang, user_id),
                  k.hidden(lang)], args=[int(n)])
        pairs = [Scored(int(rows[i]), float(rows[i + 1])) for i in range(0, len(rows), 2)]
        return pairs, text(source)

    def for_user_tagged(self, lang: str, user_id: str, n: int = 10
                        ) -> tuple[list[Scored], str, Tag]:
        """:meth:`for_user` plus the model version, experiment arm and experiment id the
        list came from, all in ONE MULTI/EXEC (the fields an impression event carries):
        ``(rows, source, Tag(model_version, arm, experiment))``."""
        k = self.keys
        keys = [k.recs(lang, user_id), k.trending(lang), k.views(lang, user_id), k.hidden(lang)]
        for _ in range(3):  # the experiment changed between two reads: once more
            names = self._arm_names.get(lang, [])
            if k.cluster:
                pairs, source, replies = self._for_user_cluster(lang, user_id, max(int(n), 1),
                                                                names)
            else:
                pairs, source, replies = self._tagged_pairs(keys, max(int(n), 1), lang, names)
            tag, experiment = tag_of(lang, user_id, names, replies, source)
            if tag is not None:
                return pairs[:max(int(n), 0)], source, tag
            self._arm_names[lang] = [a.name for a in experiment.arms[1:]]
        raise RuntimeError("the experiment keeps changing; try again")

    def _tagged_pairs(self, keys: list, n: int, lang: str, names: list[str]
                      ) -> tuple[list[Scored], str, list]:
        """One Redis: ``(rows, source, the tag reads)`` from one MULTI (:meth:`_tagged`)."""
        try:
            (source, rows), *replies = self._tagged(keys, n, lang, names)
        except redis.exceptions.NoScriptError:  # Redis lost its scripts (a restart): load again
            self._for_user_sha = None
            (source, rows), *replies = self._tagged(keys, n, lang, names)
        return pairs_of(rows), text(source), replies

    def _for_user_cluster(self, lang: str, user_id: str, n: int, names: list[str]
                          ) -> tuple[list[Scored], str, list]:
        """:meth:`for_user` on a cluster: ``(rows, source, the tag reads)``, the tag (model
        version, experiment and the arms' versions) read in the group's script with the
        personal list (module doc); two or three reads, each in one slot."""
        k = self.keys
        if self._group_list is None:
            self._group_list = self.redis.register_script(GROUP_LIST_LUA)
            self._item_list = self.redis.register_script(ITEM_LIST_LUA)
        reply = self._group_list(keys=group_list_keys(k, lang, user_id, names), args=[n])
        replies, rows = tag_replies(reply), reply[1]
        if rows:
            return pairs_of(rows), "personal", replies
        _, trending, _ = self._item_list(
            keys=[k.model(lang), k.resources(lang), k.hidden(lang), k.trending(lang)],
            args=["1", "0"])
        candidates = pairs_of(trending)
        if not candidates:
            return [], "none", replies
        viewed = self.redis.hmget(k.views(lang, user_id), [c.resource_id for c in candidates])
        hot = unviewed(candidates, viewed, n)
        return hot, "trending" if hot else "none", replies

    def _tagged(self, keys: list, n: int, lang: str, names: list[str]) -> list:
        """EVALSHA of the list script and the tag reads in one MULTI (the script loaded with
        SCRIPT LOAD first: redis-py's own pipeline path asks SCRIPT EXISTS, which a
        read-only Redis user may lack)."""
        if self._for_user_sha is None:
            self._for_user_sha = self.redis.script_load(FOR_USER_LUA)
        pipe = self.redis.pipeline(transaction=True)
        pipe.evalsha(self._for_user_sha, len(keys), *keys, n)
        queue_tag_reads(pipe, self.keys, lang, names)
        return pipe.execute()

    def recommend_or_trending(self, lang: str, user_id: str, n: int = 10
                              ) -> tuple[list[Scored], str]:
        """Same as :meth:`for_user`."""
        return self.for_user(lang, user_id, n)

    def trending(self, lang: str, n: int = 10) -> list[Scored]:
        """What is being viewed now in ``lang`` (see store/trending.py), best first."""
        return self._top(self.keys.trending(lang), n)

    def model_info(self, lang: str) -> dict | None:
        """The published model's description (version, trained_at, hyperparameters, sizes,
        ``metrics`` when evaluated) with numbers as numbers; None if nothing is published."""
        return decode_model(self.redis.hgetall(self.keys.model(lang)))

    def knows_user(self, lang: str, user_id: str) -> bool:
        """Whether the published model holds this user's factors (a covered user whose list
        happens to be empty, rather than a user the model does not cover)."""
        return bool(self.redis.exists(self.keys.factors(lang, user_id)))

    def close(self) -> None:
        self.redis.close()

    def details(self, lang: str, resource_ids) -> dict[int, dict]:
        """Title, folder, subject and tags of each resource loaded with ``recs resources
        load`` (one HMGET); resources without details are left out."""
        ids = [int(r) for r in resource_ids]
        if not ids:
            return {}
        values = self.redis.hmget(self.keys.resources(lang), ids)
        found = {rid: decode_details(v) for rid, v in zip(ids, values, strict=True)}
        return {rid: d for rid, d in found.items() if d is not None}

    def _top(self, key: str, n: int) -> list[Scored]:
        span = top_range(n)
        if span is None:
            return []
        return decode_scored(self.redis.zrevrange(key, *span, withscores=True))

