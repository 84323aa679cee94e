"""The one write path into the view counts: the views script's KEYS and ARGV, and its reply.

A batch is the aggregate ``{lang: {user_id: {resource_id: views}}}`` of some events and a
list of guards (store/guards.py). The script (store/counts_script.py) either writes
nothing and reports the guards that failed, or adds every count, parks what a poisoned key
refused in ``quarantine(lang)`` (re-applied by ``recs repair``, store/quarantine.py), and
sets the guards, all in one atomic step: a batch is applied exactly once however often it
is sent.

Every key the script touches is declared in KEYS (``apply_keys``; the views keys too), in
the order of its ARGV. On one Redis a batch is one call (all languages, one guard hash). On
a cluster a batch is split by slot (``item_call``: a language's item totals, guarded by
``item_offsets``; ``group_call``: one slot group's users, guarded by its ``group_offsets``;
``progress_call``: guards only), and ``langs`` is added outside the script (it has a slot
of its own). A user parked there has its views in the item totals already (the item-side
call adds every valid view of the batch), so ``recs repair`` re-applies only its user side
(store/quarantine.py). store/progress.py reads the progress per stream back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import redis

from store.counts_script import APPLY_LUA
from store.guards import Guard, guard_args, mismatches
from store.keys import Keys

Views = Mapping[str, Mapping[str, Mapping[int, int]]]
"""``{lang: {user_id: {resource_id: views}}}``, every count >= 1."""


def apply_args(keys: Keys, guards: Sequence[Guard], views: Views) -> list:
    """The script's flat ARGV for ``guards`` and ``views`` (see COUNT_VIEWS_LUA's header,
    store/counts_script.py)."""
    args = guard_args(guards)
    langs = [(lang, users) for lang, users in views.items() if users]
    args.append(len(langs))
    for lang, users in langs:
        args += (lang, keys.views(lang, ""), keys.item_views(lang), keys.users(lang),
                 keys.seq(lang), keys.dirty(lang), keys.touched(lang), keys.quarantine(lang),
                 len(users))
    extend = args.extend
    for _lang, users in langs:
        for user, pairs in users.items():
            extend((user, len(pairs)))
            for item in pairs.items():
                extend(item)
    return args


def apply_keys(keys: Keys, guard_key: str, views: Views) -> list[str]:
    """The script's KEYS for :func:`apply_args`'s ARGV on one Redis: langs, the guard, then
    per language its six keys and its users' views keys, in ARGV order."""
    out = [keys.langs, guard_key]
    langs = [(lang, users) for lang, users in views.items() if users]
    views_key = keys.views
    for lang, users in langs:
        out += (keys.item_views(lang), keys.users(lang), keys.seq(lang), keys.dirty(lang),
                keys.touched(lang), keys.quarantine(lang))
        out += [views_key(lang, user) for user in users]
    return out


def item_call(keys: Keys, lang: str, guard_key: str, guards: Sequence[Guard],
              totals: Mapping[int, int]) -> tuple[list, list]:
    """(KEYS, ARGV) of a cluster's item-side call: ``totals`` added to ``item_views(lang)``,
    refusals parked in ``item_quarantine(lang)``, guarded by ``guard_key`` (the language's
    ``item_offsets``); every key in the language's item slot. ``langs`` is not touched."""
    args = guard_args(guards)
    args += (1, lang, "", keys.item_views(lang), "", "", "", "", keys.item_quarantine(lang),
             len(totals))
    for item in totals.items():
        args.extend(item)
    return [guard_key, guard_key, keys.item_views(lang), keys.item_quarantine(lang)], args


def group_call(group: Keys, lang: str, guard_key: str, guards: Sequence[Guard],
               users: Mapping[str, Mapping[int, int]]) -> tuple[list, list]:
    """(KEYS, ARGV) of a cluster's call for one slot group (``group`` bound to it): the
    users' views, ``users``, ``seq``, ``dirty``, ``touched`` and the group's quarantine, no
    item totals (the item-side call adds those), guarded by ``guard_key`` (the group's
    ``group_offsets``, or its quarantine for a repair)."""
    args = guard_args(guards)
    args += (1, lang, "", "", group.users(lang), group.seq(lang), group.dirty(lang),
             group.touched(lang), group.quarantine(lang), len(users))
    keys_ = [guard_key, guard_key, group.users(lang), group.seq(lang), group.dirty(lang),
             group.touched(lang), group.quarantine(lang)]
    keys_ += [group.views(lang, user) for user in users]
    extend = args.extend
    for user, pairs in users.items():
        extend((user, len(pairs)))
        for item in pairs.items():
            extend(item)
    return keys_, args


def progress_call(guard_key: str, guards: Sequence[Guard]) -> tuple[list, list]:
    """(KEYS, ARGV) of a call that only moves guards (no counts): a stream that had no
    events since its held offset is set to where its partition is written through."""
    return [guard_key, guard_key], guard_args(guards) + [0]


@dataclass(frozen=True)
class Parked:
    """Views the script could not add and kept in ``Keys.quarantine(lang)`` instead."""

    lang: str
    user: str
    """The user whose views key refused; "" for item totals that refused."""
    reason: str


@dataclass
class Applied:
    """What one script call did: ``refused`` guards (nothing written) or, when applied,
    the users whose views went to the quarantine instead of the counts."""

    refused: dict[str, str | None] = dataclasses.field(default_factory=dict)
    parked: list[Parked] = dataclasses.field(default_factory=list)
    counted: dict[tuple[str, str], tuple[int, int]] = dataclasses.field(default_factory=dict)
    """``{(lang, list): (impressions, clicks)}`` counted: by the impressions script, and
    (impressions 0) by the views script's click section."""
    duplicates: int = 0
    """Impressions script only: impressions whose id was already in the user's window."""


class Counts:
    """The counts write path, its script registered once per client."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._apply = client.register_script(APPLY_LUA)

    def apply(self, guard_key: str, guards: Sequence[Guard], views: Views
              ) -> dict[str, str | None]:
        """Apply ``views`` if every guard holds; return ``{}`` then, else ``{field: held value
        or None}`` of the guards that failed (nothing written). Views parked in the
        quarantine count as applied here; use :meth:`write` to learn about them."""
        return mismatches(self._apply(keys=self._keys(guard_key, views),
                                      args=self._args(guards, views)))

    def write(self, guard_key: str, guards: Sequence[Guard], views: Views) -> Applied:
        """:meth:`apply`, also reporting the users whose views were quarantined."""
        reply = self._apply(keys=self._keys(guard_key, views), args=self._args(guards, views))
        return parse_reply(reply)

    def call(self, keys: list, args: list) -> Applied:
        """One call of the views script with ready KEYS and ARGV (:func:`item_call`,
        :func:`group_call`, :func:`progress_call`: a cluster's calls)."""
        return parse_reply(self._apply(keys=keys, args=args))

    def _keys(self, guard_key: str, items) -> list[str]:
        """The script's KEYS. ``items`` is a store's payload: the views, or (a store with a
        click section, store/attribution.py) a tuple whose first part is the views."""
        views = items[0] if isinstance(items, tuple) else items
        return apply_keys(self.keys, guard_key, views)

    def _args(self, guards: Sequence[Guard], views) -> list:
        """The script's ARGV (a store with more sections appends theirs)."""
        return apply_args(self.keys, guards, views)


def parse_reply(reply: list) -> Applied:
    """The script's raw reply as :class:`Applied`."""
    if reply and isinstance(reply[0], int):
        text = [v.decode() if isinstance(v, bytes) else v for v in reply[1:]]
        n = 3 * reply[0]
        clicks = text[n + 1:]  # after the 'clicks' marker: (lang, list, clicks) triples
        return Applied(parked=[Parked(*text[j:j + 3]) for j in range(0, n, 3)],
                       counted={(clicks[j], clicks[j + 1]): (0, int(clicks[j + 2]))
                                for j in range(0, len(clicks), 3)})
    return Applied(refused=mismatches(reply))

