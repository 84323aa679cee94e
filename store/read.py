"""How published values are read back: the decoding rules both read clients share.

``store.client.RecsClient`` (synchronous, for apps and the CLI) and
``store.aclient.AsyncRecsClient`` (asyncio, for ``recs serve``) send the same commands and
hand their raw replies to these pure functions, so the two can never disagree on what a list,
a model hash or a resource's details mean. Nothing here talks to Redis.

Invariants:
- a list is ``ZREVRANGE key 0 n-1 WITHSCORES``, best first; ``n <= 0`` asks nothing;
- a reply may be bytes or str (decoding and non-decoding clients alike);
- resource details are the JSON objects ``store.resources`` writes (title, folder, subject,
  tags, all strings); a missing or damaged entry reads as None, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import orjson

# Model hash fields with a known type; anything else comes back as a string.
INT_FIELDS = {"factors", "iterations", "users", "items", "nnz", "seq", "top_n", "seed",
              "min_item_views", "max_item_views", "min_user_views"}
FLOAT_FIELDS = {"regularization", "alpha", "train_seconds", "publish_seconds",
                "test_fraction"}
JSON_FIELDS = {"metrics", "filters"}
DETAIL_FIELDS = ("title", "folder", "subject", "tags")
"""The resources extract's columns after ``id``, as stored per resource."""


class Scored(NamedTuple):
    """One list entry: a resource id and its score (higher is better)."""

    resource_id: int
    score: float


def text(value) -> str:
    """A reply element as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def top_range(n: int) -> tuple[int, int] | None:
    """The ZREVRANGE start/stop for the ``n`` best entries; None when nothing is asked."""
    return (0, n - 1) if n > 0 else None


def decode_scored(rows: Iterable[tuple]) -> list[Scored]:
    """``ZREVRANGE ... WITHSCORES`` rows as ``Scored``; members are resource ids."""
    return [Scored(int(member), float(score)) for member, score in rows]


def typed_field(name: str, value: str):
    """One model hash field as its type (int, float, parsed JSON); else the string."""
    try:
        if name in INT_FIELDS:
            return int(value)
        if name in FLOAT_FIELDS:
            return float(value)
        if name in JSON_FIELDS:
            return json.loads(value)
    except ValueError:
        pass
    return value


def decode_model(raw: Mapping) -> dict | None:
    """``HGETALL model`` as a typed dict; None when nothing is published."""
    if not raw:
        return None
    return {text(k): typed_field(text(k), text(v)) for k, v in raw.items()}


def encode_details(details: Mapping[str, object]) -> str:
    """One resource's stored value: a JSON object of the detail fields (strings)."""
    return orjson.dumps({f: str(details.get(f, "") or "") for f in DETAIL_FIELDS}).decode()


def decode_details(value) -> dict | None:
    """One stored resource value as ``{title, folder, subject, tags}``; None if absent or
    not the JSON object ``encode_details`` writes."""
    if value is None:
        return None
    try:
        obj = orjson.loads(value)  # a list's details are decoded per request: orjson is fast
    except (ValueError, TypeError):
        return None
    if not isinstance(obj, dict):
        return None
    return {f: str(obj.get(f, "") or "") for f in DETAIL_FIELDS}


def decode_views(raw: Mapping) -> dict[int, int]:
    """``HGETALL views`` (resource_id -> count) as ints; fields that are not both integers
    are left out (the counts are written only by the consumer's script)."""
    out = {}
    for k, v in raw.items():
        try:
            out[int(k)] = int(v)
        except ValueError:
            continue
    return out


# -- a user's list on a Redis Cluster (docs/CLUSTER.md section 0) --------------------------
#
# A user's list, factors and views live in the user's slot group; the model hash, the
# catalogue, ``hidden`` and trending on the language's item side: two slots, so a look-up is
# two scripts, each in one slot. The reader's promise holds per read set: the personal list
# comes with the model version of the group's copy of the model hash (``group_model``), read
# in the SAME script as the list; the list and the user's factors are replaced together by
# the publisher and the updater (one script in that slot, which compares the version there),
# so a list is never reported with another model's version, nor mixed with another model's
# factors. Take-downs are checked in the group's copy of ``hidden`` for the personal list and
# in ``hidden`` itself for trending.

GROUP_LIST_LUA = """
-- KEYS[1] recs(lang, user), KEYS[2] group_hidden(lang), KEYS[3] group_model(lang),
-- KEYS[4] group_experiment(lang), KEYS[5..] group_model(lang) of each experiment arm named
-- (the caller's idea of the running experiment's arms). ARGV[1] n (>= 1)
-- The n best entries of the user's own list that are not hidden, with what tags it, read
-- together: {version or false, {member, score, ...}, {field, value, ...} of the group's
-- copy of the experiment hash, {version or false, ...} of each arm's model copy}.
local n = tonumber(ARGV[1])
local rows = redis.call('ZREVRANGE', KEYS[1], 0, n + 19, 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  if #out >= 2 * n then break end
  if redis.call('HEXISTS', KEYS[2], rows[i]) == 0 then
    out[#out + 1] = rows[i]
    out[#out + 1] = rows[i + 1]
  end
end
local arms = {}
for i = 5, #KEYS do arms[#arms + 1] = redis.call('HGET', KEYS[i], 'version') end
return {redis.call('HGET', KEYS[3], 'version'), out, redis.call('HGETALL', KEYS[4]), arms}
"""


def group_list_keys(keys, lang: str, user_id: str, arm_names: list[str]) -> list[str]:
    """The KEYS of :data:`GROUP_LIST_LUA` for ``user_id`` (``keys``: a cluster layout)."""
    group = keys.for_user(user_id)
    return [keys.recs(lang, user_id), group.group_hidden(lang), group.group_model(lang),
            group.group_experiment(lang),
            *(group.arm(name).group_model(lang) for name in arm_names)]


def tag_replies(reply) -> list:
    """A :data:`GROUP_LIST_LUA` reply's tag part in the order ``store.experiments.tag_of``
    reads a MULTI's: the experiment hash (a dict), the model version, each arm's."""
    flat = reply[2]
    return [dict(zip(flat[::2], flat[1::2], strict=True)), reply[0], *reply[3]]


ITEM_LIST_LUA = """
-- KEYS[1] model, KEYS[2] resources, KEYS[3] hidden, KEYS[4] trending: one language's item side
-- ARGV[1] '1': the trending list's visible entries too (read whole: it is short), '0': none
-- ARGV[2] '1': details wanted, '0': none
-- ARGV[3..] resource ids whose details are wanted (a personal list's entries)
-- Returns {published 0|1, {member, score, ...} of trending, {details or false, ...} of
--          ARGV[3..] then of the trending entries (empty unless ARGV[2] = '1')}
local published = redis.call('EXISTS', KEYS[1])
local kept, members = {}, {}
for j = 3, #ARGV do members[#members + 1] = ARGV[j] end
if ARGV[1] == '1' then
  local rows = redis.call('ZREVRANGE', KEYS[4], 0, -1, 'WITHSCORES')
  for j = 1, #rows, 2 do
    if redis.call('HEXISTS', KEYS[3], rows[j]) == 0 then
      kept[#kept + 1] = rows[j]
      kept[#kept + 1] = rows[j + 1]
      members[#members + 1] = rows[j]
    end
  end
end
local details = {}
if ARGV[2] == '1' and #members > 0 then details = redis.call('HMGET', KEYS[2], unpack(members)) end
return {published, kept, details}
"""


def pairs_of(rows) -> list[Scored]:
    """A flat ``{member, score, ...}`` script reply as ``Scored``."""
    return [Scored(int(rows[i]), float(rows[i + 1])) for i in range(0, len(rows), 2)]


def unviewed(candidates: list[Scored], viewed: list, n: int) -> list[Scored]:
    """The first ``n`` of ``candidates`` whose ``HMGET views`` reply (``viewed``, one per
    candidate) is empty: the trending fallback leaves out what the user viewed."""
    return [c for c, v in zip(candidates, viewed, strict=True) if v is None][:n]
