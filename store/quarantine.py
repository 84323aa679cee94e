"""Views parked by the counts script (store/counts_script.py) and putting them back.

The script parks a user's views in ``Keys.quarantine(lang)`` (field ``{seq}:{user}``,
value JSON ``{"user", "reason", "views": {resource_id: count}}``) when that user's views
hash refuses an increment, and an item total as field ``items:{seq}`` (``user`` "") when
``item_views`` refuses one. Nothing parked is counted anywhere, so re-applying it once the
key is repaired counts each view exactly once:

- a user's entry goes through the same counts script, guarded by the entry itself (its
  field must still hold the JSON read; the script then replaces it with ``REPAIRED`` in the
  same atomic step, and the marker is deleted afterwards). A key still poisoned parks the
  views again under a new field: nothing is lost or doubled;
- an item entry is added by :data:`REPAIR_ITEMS_LUA`, all or nothing.

Two repairs at once cannot both apply an entry: the second one's guard fails.

On a Redis Cluster (``keys.cluster``) the same holds per slot group: a user's entry is in
its group's quarantine and is re-applied by that group's call (store/counts.py
``group_call``), guarded by the entry in the same slot. That call adds **only the user
side** (the views, ``users``, ``dirty``, ``touched``): on a cluster the batch's item totals
were added by the language's item-side call, parked users' views included, so they are
counted already. Item totals that refused are parked in ``item_quarantine(lang)`` (item
side) and re-applied by :data:`REPAIR_ITEMS_LUA` there.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import redis

from store.counts import Counts, group_call
from store.keys import Keys

REPAIRED = "repaired"
"""What a re-applied entry's field holds until it is deleted."""

REPAIR_ITEMS_LUA = """
-- Re-apply one parked item-totals entry, all or nothing.
-- KEYS[1] quarantine HASH, KEYS[2] item_views HASH
-- ARGV[1] field, ARGV[2] the value read (the entry must be unchanged), then (rid, total)...
-- Returns 1 applied (entry deleted), 0 entry changed or gone, or the refusal as a string
-- (entry kept, nothing written).
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
for j = 3, #ARGV, 2 do
  local r = redis.pcall('HINCRBY', KEYS[2], ARGV[j], ARGV[j + 1])
  if type(r) == 'table' then
    for k = 3, j - 2, 2 do
      redis.call('HINCRBY', KEYS[2], ARGV[k], '-' .. ARGV[k + 1])
    end
    return 'resource ' .. ARGV[j] .. ': ' .. r['err']
  end
end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class Entry:
    """One parked entry."""

    field: str
    raw: str
    user: str
    """"" for item totals."""
    reason: str
    views: dict[int, int]


@dataclass
class RepairResult:
    applied: int = 0
    """Entries whose views are now counted."""
    still_parked: int = 0
    """Entries whose key still refuses (parked again, with the new reason), or that are not
    what the counts script writes (left in place, named in ``reasons``)."""
    reasons: list[str] | None = None


def _entry(field: str, raw: str) -> Entry:
    """One parked value as an Entry; ValueError when it is not what the script writes."""
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or not isinstance(doc.get("views") or {}, dict) or \
            not isinstance(doc.get("user", ""), str):
        raise ValueError("not an object with a user and views")
    views = {int(k): int(v) for k, v in (doc.get("views") or {}).items()}
    if any(v <= 0 for v in views.values()):
        raise ValueError("a count that is not positive")
    return Entry(field, raw, doc.get("user", ""), str(doc.get("reason", "")), views)


def quarantines(keys: Keys, lang: str) -> list[tuple[Keys, str]]:
    """Every quarantine hash of ``lang`` with the (group-bound) keys it belongs to: on one
    Redis the one; on a cluster every slot group's, then the item side's."""
    if not keys.cluster:
        return [(keys, keys.quarantine(lang))]
    return [(g, g.quarantine(lang)) for g in keys.slot_groups()] + [
        (keys, keys.item_quarantine(lang))]


def read_entries(client: redis.Redis, keys: Keys, lang: str,
                 malformed: list[str] | None = None) -> list[Entry]:
    """Every parked entry of ``lang`` (left-over REPAIRED markers are deleted); an entry that
    is not one the counts script writes is left in place and named in ``malformed``."""
    return [e for _keys, q_key in quarantines(keys, lang)
            for e in _read(client, q_key, malformed)]


def _read(client: redis.Redis, q_key: str, malformed: list[str] | None) -> list[Entry]:
    out = []
    for field, raw in client.hscan_iter(q_key, count=500):
        field = field.decode() if isinstance(field, bytes) else field
        raw = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        if raw == REPAIRED:
            client.hdel(q_key, field)
            continue
        try:
            out.append(_entry(field, raw))
        except (ValueError, TypeError, AttributeError) as exc:
            if malformed is not None:
                malformed.append(f"entry {field[:80]!r} is malformed ({exc}): left in place")
    return out


def repair(client: redis.Redis, keys: Keys, lang: str) -> RepairResult:
    """Re-apply every parked entry of ``lang``; see the module docstring. A malformed entry
    is skipped and reported; the others are repaired all the same."""
    counts = Counts(client, keys)
    items_script = client.register_script(REPAIR_ITEMS_LUA)
    result = RepairResult(reasons=[])
    for group, q_key in quarantines(keys, lang):
        malformed: list[str] = []
        entries = _read(client, q_key, malformed)
        result.still_parked += len(malformed)
        result.reasons.extend(malformed)
        for entry in entries:
            if entry.user:
                _repair_user(client, counts, group, lang, q_key, entry, result)
            else:
                _repair_items(items_script, keys, lang, q_key, entry, result)
    return result


def _repair_user(client, counts: Counts, group: Keys, lang: str, q_key: str, entry: Entry,
                 result: RepairResult) -> None:
    """One user's parked views through the counts script, guarded by the entry itself."""
    guards = [(entry.field, entry.raw, REPAIRED)]
    if group.cluster:  # the user side only: the item totals hold these views already
        applied = counts.call(*group_call(group, lang, q_key, guards,
                                          {entry.user: entry.views}))
    else:
        applied = counts.write(q_key, guards, {lang: {entry.user: entry.views}})
    if applied.refused:
        return  # another repair took it
    client.hdel(q_key, entry.field)
    if applied.parked:
        result.still_parked += 1
        result.reasons.append(f"{entry.user!r}: {applied.parked[0].reason}")
    else:
        result.applied += 1


def _repair_items(items_script, keys: Keys, lang: str, q_key: str, entry: Entry,
                  result: RepairResult) -> None:
    """One parked item-totals entry, all or nothing."""
    args = [entry.field, entry.raw]
    for rid, total in entry.views.items():
        args += (rid, total)
    reply = items_script(keys=[q_key, keys.item_views(lang)], args=args)
    if reply == 1:
        result.applied += 1
    elif reply != 0:
        result.still_parked += 1
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        result.reasons.append(f"item totals: {text}")
