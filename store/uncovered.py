"""Removing what a newly switched-to model no longer covers (step 3 of ``store.publish``).

Invariants:
- removed: the lists (and users' factors) of the ids in ``published_items`` /
  ``published_users`` that the publish did not write;
- spared: users with views newer than the counts the model was trained on (``touched``
  after the seq, per slot group its S_g): the updater is about to fold them into the new
  model, and a new user would otherwise lose the list the updater just gave them;
- a key is deleted before its entry leaves the published SET: a crash in between leaves the
  SET naming a key that is gone (the next run removes it again, harmless), never a key the
  SET does not name;
- removed users who still have views are queued in ``dirty`` for the updater only after
  their old-model lists are gone, so versions never mix;
- forgets recorded up to the seq are trimmed from ``forgotten``: no older publish is in
  flight (one trainer per language), so those tombstones have done their job.

On a Redis Cluster the users' part runs per slot group (its ``published_users``,
``touched``, ``dirty``, ``forgotten``, S_g); each multi-key DEL names keys of one slot
(the item side, or one group).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import redis

from store.groups import delete, per_primary, seq_of
from store.keys import Keys


class Removed(NamedTuple):
    """What :func:`remove_uncovered` did."""

    resources: int
    """Similar lists removed."""
    users: int
    """Users whose lists and factors were removed."""
    spared: int
    """Uncovered users kept because they have views newer than the training counts."""
    refolded: int
    """Removed users who still have views, queued for the updater to fold in."""


def remove_uncovered(client: redis.Redis, keys: Keys, lang: str, seq: int | Mapping[Keys, int],
                     items_written: set[int], users_written: set[str],
                     chunk: int = 500) -> Removed:
    """Delete the lists (and factors) of resources and users a publish did not write
    (``items_written``, ``users_written``), sparing users touched after ``seq`` (a mapping
    {group keys: S_g}, or one number for all groups)."""
    # SSCAN may return a member twice (during a rehash): hence the sets.
    stale_items = [m for m in set(client.sscan_iter(keys.published_items(lang), count=1000))
                   if int(m) not in items_written]
    found = per_primary(client, keys, lang, lambda group: _stale_users(
        client, group, lang, seq_of(seq, group), users_written))
    groups = [(g, found[g][0]) for g in keys.slot_groups()]
    spared = sum(kept for _, kept in found.values())
    # Chunks of DEL/SREM (each command short for readers), all in one round trip.
    pipe = client.pipeline(transaction=False)
    for s in range(0, len(stale_items), chunk):
        part = stale_items[s:s + chunk]
        delete(pipe, *(keys.similar(lang, m.decode()) for m in part))
        pipe.srem(keys.published_items(lang), *part)
    for group, stale in groups:
        for s in range(0, len(stale), chunk):
            part = stale[s:s + chunk]
            delete(pipe, *(group.recs(lang, u) for u in part),
                   *(group.factors(lang, u) for u in part))
            pipe.srem(group.published_users(lang), *part)
    for group, stale in groups:
        for user in stale:
            pipe.exists(group.views(lang, user))
    replies = pipe.execute()
    n_stale = sum(len(stale) for _, stale in groups)
    has_views = iter(replies[len(replies) - n_stale:])
    # Users filtered out (too few views) who still have views: the updater folds them into
    # the new model right away, so they lose their lists for moments, not until their next
    # view.
    refolded = 0
    for group, stale in groups:
        alive = [u for u in stale if next(has_views)]
        refolded += len(alive)
        group_seq = seq_of(seq, group)
        for s in range(0, len(alive), chunk):
            pipe.zadd(group.dirty(lang), dict.fromkeys(alive[s:s + chunk], group_seq), gt=True)
        pipe.zremrangebyscore(group.forgotten(lang), "-inf", group_seq)
    pipe.execute()
    return Removed(len(stale_items), n_stale, spared, refolded)


def _stale_users(client: redis.Redis, group: Keys, lang: str, seq: int,
                 users_written: set[str]) -> tuple[list[str], int]:
    """(the published users of ``group`` not in ``users_written`` and with no views after
    ``seq``, how many were spared for such views)."""
    spared = {m.decode() for m in client.zrangebyscore(group.touched(lang), f"({seq}", "+inf")}
    stale, kept = [], 0
    for m in set(client.sscan_iter(group.published_users(lang), count=1000)):
        user = m.decode()
        if user in users_written:
            continue
        if user in spared:
            kept += 1
            continue
        stale.append(user)
    return stale, kept
