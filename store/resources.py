"""Resource details (title, folder, subject, tags) in Redis, from the platform's extract.

``recs resources load FILE --lang L`` calls :func:`replace_details`: the rows go into a
fresh, expiring staging hash in chunks, and one MULTI renames it over
``Keys.resources(lang)`` and drops the expiry. Readers (apps, ``recs similar/recommend``,
``recs serve``) therefore see either the previous catalogue or the new one, whole; a
resource missing from the new file loses its details. A load that dies leaves only the
staging hash, which expires.

Values are the JSON objects of ``store.read.encode_details`` (never a pickle), so one HMGET
decorates a whole list in any language's client.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

import redis

from store.keys import Keys
from store.read import encode_details

STAGING_TTL_SECONDS = 3600
"""How long a dead load's staging hash survives."""
CHUNK = 1000
"""Fields per HSET while staging."""


def replace_details(client: redis.Redis, keys: Keys, lang: str,
                    rows: Iterable[tuple[int, Mapping[str, object]]]) -> int:
    """Make ``rows`` (resource id, details) the whole catalogue of ``lang``; returns how many
    resources it holds. An empty ``rows`` removes the catalogue."""
    staging = keys.resources_loading(lang, uuid.uuid4().hex)
    target = keys.resources(lang)
    written = 0
    chunk: dict[int, str] = {}
    try:
        for rid, details in rows:
            chunk[int(rid)] = encode_details(details)
            if len(chunk) >= CHUNK:
                written += _stage(client, staging, chunk)
        written += _stage(client, staging, chunk)
        with client.pipeline(transaction=True) as pipe:
            if written:
                pipe.rename(staging, target)
                pipe.persist(target)
            else:
                pipe.delete(target)
            pipe.hlen(target)
            held = pipe.execute()[-1]
    finally:
        client.delete(staging)
    return int(held)


def _stage(client: redis.Redis, staging: str, chunk: dict[int, str]) -> int:
    if not chunk:
        return 0
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(staging, mapping=chunk)
        pipe.expire(staging, STAGING_TTL_SECONDS)
        pipe.execute()
    n = len(chunk)
    chunk.clear()
    return n
