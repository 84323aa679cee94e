"""Resource details (title, folder, subject, tags) in Redis, from the platform's extract.

``recs resources load FILE --lang L`` calls :func:`replace_details`: the rows go into a
fresh, expiring staging hash in chunks, their title index (store/titles.py) into a second
one, and one script (:data:`SWAP_LUA`) renames both over ``Keys.resources(lang)`` and
``Keys.titles(lang)``. Readers (apps, ``recs similar/recommend``, ``recs serve``) therefore
see either the previous catalogue and index or the new ones, whole; a resource missing from
the new file loses its details. The replaced hashes are renamed aside and UNLINKed, so Redis
frees them in the background instead of inside the swap. A load that dies leaves only the
staging hashes, which expire.

On a Redis Cluster the catalogue, the index and their staging and trash names all carry the
language's item-side tag (``store.cluster_keys.ClusterKeys``), so they share one slot: SWAP_LUA's
RENAMEs and the final UNLINK stay on one node.

Values are the JSON objects of ``store.read.encode_details`` (never a pickle), so one HMGET
decorates a whole list in any language's client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

import redis

from store.keys import Keys
from store.read import encode_details
from store.titles import Records, pages

STAGING_TTL_SECONDS = 3600
"""How long a dead load's staging hash survives."""
CHUNK = 1000
"""Fields per HSET while staging."""

SWAP_LUA = """
-- KEYS[1] resources, KEYS[2] its staging hash, KEYS[3] titles, KEYS[4] its staging hash,
-- KEYS[5], KEYS[6] trash names for the replaced ones. ARGV[1] '1' when there is a catalogue
-- to put in place, '0' to remove it. Returns the fields the catalogue holds.
local function swap(target, staged, trash)
  if redis.call('EXISTS', target) == 1 then redis.call('RENAME', target, trash) end
  if ARGV[1] == '1' and redis.call('EXISTS', staged) == 1 then
    redis.call('RENAME', staged, target)
    redis.call('PERSIST', target)
  end
end
swap(KEYS[1], KEYS[2], KEYS[5])
swap(KEYS[3], KEYS[4], KEYS[6])
redis.call('UNLINK', KEYS[5], KEYS[6])
return redis.call('HLEN', KEYS[1])
"""


def replace_details(client: redis.Redis, keys: Keys, lang: str,
                    rows: Iterable[tuple[int, Mapping[str, object]]]) -> int:
    """Make ``rows`` (resource id, details) the whole catalogue of ``lang`` and index its
    titles; returns how many resources it holds. An empty ``rows`` removes the catalogue."""
    token = uuid.uuid4().hex
    staging = keys.resources_loading(lang, token)
    index = keys.titles_loading(lang, token)
    written = 0
    chunk: dict[int, str] = {}
    titles = Records()
    try:
        for rid, details in rows:
            chunk[int(rid)] = encode_details(details)
            titles.add(int(rid), str(details.get("title", "") or ""))
            if len(chunk) >= CHUNK:
                written += _stage(client, staging, chunk)
        written += _stage(client, staging, chunk)
        if written:
            for fields in pages(titles.sorted(), token):
                _stage(client, index, fields)
        held = client.register_script(SWAP_LUA)(
            keys=[keys.resources(lang), staging, keys.titles(lang), index,
                  keys.resources_trash(lang, token + "r"), keys.resources_trash(lang, token + "t")],
            args=["1" if written else "0"])
    finally:
        client.unlink(staging, index)
    return int(held)


def _stage(client: redis.Redis, staging: str, chunk: dict) -> int:
    if not chunk:
        return 0
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(staging, mapping=chunk)
        pipe.expire(staging, STAGING_TTL_SECONDS)
        pipe.execute()
    n = len(chunk)
    chunk.clear()
    return n
