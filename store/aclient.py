"""The asyncio read client behind ``recs serve``: the same commands and decoding as
``store.client.RecsClient`` (both use ``store.read``), one round trip per look-up.

Invariants:
- a list look-up is ONE round trip (the Lua script ``LIST_WITH_DETAILS_LUA``): whether the
  language has a published model (so "nothing published" and "not covered" are told apart),
  the first candidate list with a visible entry (the user's own, then the trending list),
  and the details of its entries; the sync client sends the same ZREVRANGE and HMGET as two
  commands, and both decode with ``store.read``;
- what the contract keeps out of lists is kept out at read time too: hidden resources
  (``Keys.hidden``) from every list, even in the moments before ``recs hide`` has cleaned
  them, and the user's viewed resources from the trending fallback (as ``RecsClient.for_user``);
- the title search reads the title index (store/titles.py), never the whole catalogue;
- ``Keys.history`` for quality over retrains is used when ``Keys`` defines it, its records
  read as ``store.quality.history_record`` shapes them;
- Redis errors propagate (``redis.RedisError``); the HTTP layer turns them into 503.

On a Redis Cluster (``redis+cluster://``: a ``redis.asyncio.RedisCluster`` from
``store.aconnect.connect_async``, key names from ``store.cluster_keys.layout``) every read is in one
slot: a similar list, the model, the catalogue, the title index and trending are the
language's item side, read as on one Redis; a user's list is two reads (``store.read`` "a
user's list on a Redis Cluster"): the user's group (the list, the group's copies of the
model version and of ``hidden``), then the item side (is a model published, the details, and
trending when the user has no visible list of their own, whose viewed entries a third read,
HMGET of the user's views, leaves out). The reader's promise: the model version a list is
tagged with is the one read in the same script as the list, and so are the arm and the
arm's model version during an experiment (the group's copies, store/experiments.py). The
backlog sums every group's ``dirty``; the consumer's applied offset of a partition is the
minimum over every progress stream of every
language (docs/CLUSTER.md: the restart point).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis

from store import titles
from store.cluster_keys import layout
from store.experiments import Tag, queue_tag_reads, tag_of
from store.keys import Keys
from store.published_model import PublishedItems, decode_published_items, queue_published_items
from store.quality import read_history_records
from store.read import (
    GROUP_LIST_LUA,
    ITEM_LIST_LUA,
    Scored,
    decode_details,
    decode_model,
    decode_scored,
    decode_views,
    group_list_keys,
    pairs_of,
    tag_replies,
    text,
    top_range,
    unviewed,
)

LIST_WITH_DETAILS_LUA = """
-- The n best entries of the first list with a visible entry, each with its resource's
-- details, and whether a model is published: a decorated list in one round trip.
-- KEYS[1]   model HASH (a model is published when it exists)
-- KEYS[2]   resources HASH (resource_id -> details JSON)
-- KEYS[3]   hidden HASH: its resources are never listed (even before the lists are cleaned)
-- KEYS[4]   the user's views HASH (any key when no list skips viewed resources)
-- KEYS[5..] candidate ZSETs in order of preference (the own list, then fallbacks)
-- ARGV[1]   n (>= 1)
-- ARGV[2]   one character per candidate list: '1' leaves out what KEYS[4] holds
-- ARGV[3..] resource ids whose details are wanted too (the resource a similar list is for)
-- Returns {published 0|1, position of the list used (0: none has a visible entry),
--          {member, score, ...}, {details or false, ...} (one per member, then one per
--          ARGV[3..]; empty when no list is used)}
local published = redis.call('EXISTS', KEYS[1])
local n = tonumber(ARGV[1])
for i = 5, #KEYS do
  local skip_viewed = string.sub(ARGV[2], i - 4, i - 4) == '1'
  -- A few more than n, for hidden entries; a fallback list is read whole (it is short).
  local rows = redis.call('ZREVRANGE', KEYS[i], 0, skip_viewed and -1 or (n + 19),
                          'WITHSCORES')
  local kept, members = {}, {}
  for j = 1, #rows, 2 do
    if #members >= n then break end
    if redis.call('HEXISTS', KEYS[3], rows[j]) == 0 and not (skip_viewed and
        redis.call('HEXISTS', KEYS[4], rows[j]) == 1) then
      kept[#kept + 1] = rows[j]
      kept[#kept + 1] = rows[j + 1]
      members[#members + 1] = rows[j]
    end
  end
  if #members > 0 then
    for j = 3, #ARGV do
      members[#members + 1] = ARGV[j]
    end
    return {published, i - 4, kept, redis.call('HMGET', KEYS[2], unpack(members))}
  end
end
return {published, 0, {}, {}}
"""


@dataclass(frozen=True)
class Listed:
    """A list as the API serves it: whether the language has a published model, where the
    list came from (for users: ``personal``, ``trending`` or ``none``), the entries best
    first, and the details of those entries that have them."""

    published: bool
    source: str
    items: list[Scored]
    details: dict[int, dict]
    tag: Tag | None = None
    """Users' lists: the model version, experiment arm and experiment it came from."""


@dataclass(frozen=True)
class LangStatus:
    """What the operator page shows for one language (see ``AsyncRecsClient.status``)."""

    lang: str
    model: dict | None
    backlog: int
    idle_seconds: int | None
    """Seconds since the language's ``item_views`` was last written (each applied batch of
    views writes it); None when there are no counts."""
    resources: int
    """Resources with details loaded."""
    history: list[dict]
    """Quality over retrains, oldest first (from ``Keys.history`` when it exists)."""


class AsyncRecsClient:
    """Reads what ``recs train``, ``recs update`` and ``recs resources load`` publish."""

    def __init__(self, client: aioredis.Redis, prefix: str = "recs") -> None:
        self.redis = client
        self.keys: Keys = layout(client, prefix)
        self._list_script = client.register_script(LIST_WITH_DETAILS_LUA)
        self._group_list = client.register_script(GROUP_LIST_LUA)
        self._item_list = client.register_script(ITEM_LIST_LUA)
        self._arm_names: dict[str, list[str]] = {}
        self._list_sha: str | None = None

    async def ping(self) -> bool:
        return bool(await self.redis.ping())

    async def langs(self) -> list[str]:
        """Every language seen by the consumer, sorted."""
        return sorted(text(v) for v in await self.redis.smembers(self.keys.langs))

    async def similar(self, lang: str, resource_id: int, n: int) -> Listed:
        """The ``n`` resources most similar to ``resource_id``, best first (source
        ``similar``, or ``none`` when the model does not cover it); ``details`` include the
        resource's own."""
        return await self._listed(lang, [("similar", self.keys.similar(lang, resource_id),
                                          False)], n, also=[resource_id])

    async def recommend(self, lang: str, user_id: str, n: int) -> Listed:
        """The user's own list, else the language's trending list without what the user
        viewed, else nothing; hidden resources never. With the model version and arm it came
        from (``tag``), read in the same MULTI (store/experiments.py ``tag_of``)."""
        lists = [("personal", self.keys.recs(lang, user_id), False),
                 ("trending", self.keys.trending(lang), True)]
        for _ in range(3):  # the experiment changed since the arms were cached: once more
            names = self._arm_names.get(lang, [])
            if self.keys.cluster and top_range(n) is not None:
                listed = await self._recommend_in_slots(lang, user_id, n, names)
            else:
                listed = await self._listed(lang, lists, n, views=self.keys.views(lang, user_id),
                                            tag_for=(user_id, names))
            if listed.tag is not None:
                return listed
        raise redis.ResponseError("the experiment keeps changing; try again")

    async def _recommend_in_slots(self, lang: str, user_id: str, n: int,
                                  names: list[str]) -> Listed:
        """:meth:`recommend` on a cluster: the user's group, then the item side (module
        doc), each one script in one slot; the tag is the one read with the list (no tag:
        the experiment's arms are not ``names``, which are then updated)."""
        k = self.keys
        reply = await self._group_list(keys=group_list_keys(k, lang, user_id, names), args=[n])
        own = pairs_of(reply[1])
        item_keys = [k.model(lang), k.resources(lang), k.hidden(lang), k.trending(lang)]
        if own:
            ids = [s.resource_id for s in own]
            published, _, details = await self._item_list(keys=item_keys,
                                                          args=["0", "1", *ids])
            items, source = own, "personal"
        else:
            published, trending, details = await self._item_list(keys=item_keys,
                                                                 args=["1", "1"])
            candidates = pairs_of(trending)
            ids = [s.resource_id for s in candidates]
            viewed = await self.redis.hmget(k.views(lang, user_id), ids) if ids else []
            items = unviewed(candidates, viewed, n)
            source = "trending" if items else "none"
        found = {rid: decode_details(d) for rid, d in zip(ids, details, strict=True)}
        shown = {s.resource_id for s in items}
        tag, experiment = tag_of(lang, user_id, names, tag_replies(reply), source)
        if tag is None:
            self._arm_names[lang] = [a.name for a in experiment.arms[1:]]
        return Listed(bool(published), source, items,
                      {rid: d for rid, d in found.items() if d is not None and rid in shown},
                      tag)

    async def _listed(self, lang: str, lists: list[tuple[str, str, bool]], n: int,
                      also: list[int] = (), views: str | None = None,
                      tag_for: tuple[str, list[str]] | None = None) -> Listed:
        if top_range(n) is None:
            return Listed(bool(await self.redis.exists(self.keys.model(lang))), "none", [], {},
                          Tag("", "default", None))
        keys = [self.keys.model(lang), self.keys.resources(lang), self.keys.hidden(lang),
                views or self.keys.hidden(lang), *(key for _, key, _ in lists)]
        flags = "".join("1" if skip else "0" for *_, skip in lists)
        if tag_for is None:
            replies = [await self._list_script(keys=keys, args=[n, flags, *also])]
        else:
            replies = await self._in_multi(keys, [n, flags, *also], lambda pipe:
                                           queue_tag_reads(pipe, self.keys, lang, tag_for[1]))
        (published, used, rows, details), *replies = replies
        tag = None
        if tag_for is not None:
            source = lists[used - 1][0] if used else "none"
            tag, experiment = tag_of(lang, tag_for[0], tag_for[1], replies, source)
            if tag is None:
                self._arm_names[lang] = [a.name for a in experiment.arms[1:]]
                return Listed(bool(published), "none", [], {})
        items = decode_scored(zip(rows[::2], rows[1::2], strict=True))
        ids = [s.resource_id for s in items] + [int(r) for r in also] if items else []
        found = {rid: decode_details(d) for rid, d in zip(ids, details, strict=True)}
        return Listed(bool(published), lists[used - 1][0] if used else "none", items,
                      {rid: d for rid, d in found.items() if d is not None}, tag)

    async def _in_multi(self, keys: list, args: list, more) -> list:
        """The list script by EVALSHA and ``more(pipe)``'s reads in one MULTI. The script is
        loaded first (SCRIPT LOAD) rather than by redis-py's pipeline, which asks SCRIPT
        EXISTS, a command the serve user's ACL does not grant; a Redis that lost its scripts
        (a restart) gets it loaded again."""
        for attempt in (0, 1):
            if self._list_sha is None or attempt:
                self._list_sha = await self.redis.script_load(LIST_WITH_DETAILS_LUA)
            pipe = self.redis.pipeline(transaction=True)
            pipe.evalsha(self._list_sha, len(keys), *keys, *args)
            more(pipe)
            try:
                return await pipe.execute()
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def model_info(self, lang: str) -> dict | None:
        return decode_model(await self.redis.hgetall(self.keys.model(lang)))

    async def details(self, lang: str, resource_ids) -> dict[int, dict]:
        """Details of each resource that has them (one HMGET), as ``RecsClient.details``."""
        ids = [int(r) for r in resource_ids]
        if not ids:
            return {}
        values = await self.redis.hmget(self.keys.resources(lang), ids)
        found = {rid: decode_details(v) for rid, v in zip(ids, values, strict=True)}
        return {rid: d for rid, d in found.items() if d is not None}

    async def search_titles(self, lang: str, query: str, n: int) -> list[tuple[int, dict]]:
        """Resources whose title matches ``query`` (store/titles.py: each word of the query
        starts a word of the title), titles starting with it first; a number also finds the
        resource with that id. Hidden resources are left out. Reads the title index a few
        pages at a time and the details of at most ``titles.CANDIDATES`` resources."""
        query_words = titles.words(query)[:titles.MAX_QUERY_WORDS]
        exact = [int(query)] if query.isascii() and query.isdigit() and len(query) <= 10 else []
        candidates = await self._title_candidates(lang, query_words) if query_words else []
        ids = list(dict.fromkeys(exact + candidates))
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.keys.resources(lang), ids)
        pipe.hmget(self.keys.hidden(lang), ids)
        values, hidden = await pipe.execute()
        found = {rid: d for rid, v, h in zip(ids, values, hidden, strict=True)
                 if h is None and (d := decode_details(v)) is not None}
        first = [rid for rid in exact if rid in found]
        rest = titles.ranked({r: d for r, d in found.items() if r not in first}, query,
                             query_words, n - len(first)) if query_words else []
        return [(rid, found[rid]) for rid in first + rest][:n]

    async def _title_candidates(self, lang: str, query_words: list[str]) -> list[int]:
        key = self.keys.titles(lang)
        for _ in range(2):  # a load that swapped the index between the reads: once more
            version, directory = await self.redis.hmget(key, ["version", "dir"])
            if not directory:
                return []
            span = titles.rarest(titles.spans(directory, query_words))
            wanted = [str(p) for p in titles.page_numbers(span)]
            got = await self.redis.hmget(key, ["version", *wanted])
            if got[0] == version:
                return titles.ids_in(span, [blob for blob in got[1:] if blob])
        return []

    async def views(self, lang: str, user_id: str) -> dict[int, int]:
        """The user's view counts (personal data: callers gate this)."""
        return decode_views(await self.redis.hgetall(self.keys.views(lang, user_id)))

    async def offsets(self, group: str, topic: str) -> dict[int, int]:
        """The next offset the consumer group has applied, per partition of ``topic``; on a
        cluster the minimum over every registered progress stream (item side and slot
        groups) of every language: where the consumer would restart (docs/CLUSTER.md)."""
        if not self.keys.cluster:
            return _offsets(await self.redis.hgetall(self.keys.offsets(group, topic)))
        langs = await self.langs()
        pipe = self.redis.pipeline(transaction=False)
        for lang in langs:
            pipe.hgetall(self.keys.item_offsets(lang, group, topic))
            for g in self.keys.slot_groups():
                pipe.hgetall(g.group_offsets(lang, group, topic))
        held: dict[int, int] = {}
        for raw in (await pipe.execute()) if langs else []:
            for p, o in _offsets(raw).items():
                held[p] = min(held.get(p, o), o)
        return held

    async def ease_rows(self, lang: str, version: str, resource_ids) -> dict[int, bytes]:
        """EASE's rows of B (raw little-endian float32) for these resources, where the
        model ``version`` has them (one HMGET, as the updater reads them)."""
        ids = [int(r) for r in resource_ids]
        if not ids:
            return {}
        raw = await self.redis.hmget(self.keys.ease_rows(lang, version), ids)
        return {rid: row for rid, row in zip(ids, raw, strict=True) if row is not None}

    async def published_items(self, lang: str) -> PublishedItems | None:
        """The model's item side, read in one MULTI as the updater reads it."""
        pipe = self.redis.pipeline(transaction=True)
        queue_published_items(pipe, self.keys, lang)
        return decode_published_items(lang, *await pipe.execute())

    async def status(self, lang: str) -> LangStatus:
        """Model, updater backlog, time since the last batch of views, loaded details."""
        k = self.keys
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.model(lang))
        pipe.exists(k.item_views(lang))
        pipe.hlen(k.resources(lang))
        for g in k.slot_groups():  # one on a single Redis
            pipe.zcard(g.dirty(lang))
        model_raw, has_counts, resources, *dirty = await pipe.execute()
        backlog = sum(int(d) for d in dirty)
        idle = None
        if has_counts:
            # OBJECT IDLETIME does not touch the key; only the consumer's batches write it.
            idle = await self.redis.object("idletime", k.item_views(lang))
        model = decode_model(model_raw)
        return LangStatus(lang, model, int(backlog), None if idle is None else int(idle),
                          int(resources), await self.history(lang, model))

    async def history(self, lang: str, model: dict | None) -> list[dict]:
        """Quality of past retrains, oldest first: ``{"trained_at", "version", "metrics"}``
        entries from ``Keys.history`` when the layout has it, else the live model's own."""
        key_of = getattr(self.keys, "history", None)
        entries = await read_history_records(self.redis, key_of(lang)) if key_of else []
        if not entries and model and isinstance(model.get("metrics"), dict):
            entries = [{"trained_at": model.get("trained_at"), "version": model.get("version"),
                        "metrics": model["metrics"]}]
        return entries


def _offsets(raw) -> dict[int, int]:
    """An offsets hash's partition -> next offset fields (others ignored)."""
    return {int(p): int(o) for p, o in raw.items() if text(p).isdigit()
            and text(o).lstrip("-").isdigit()}

