"""The calls of the impressions script (store/impressions.py) and of the views script with
its click section (store/attribution.py) on a Redis Cluster, split by slot like the view
counts' (store/counts.py ``item_call``, ``group_call``; docs/CLUSTER.md).

Invariants:

- A user's impression window, view window and the counters their impressions and clicks
  move are written by ONE call in the user's slot group, guarded by the group's progress
  and setting it: the windows decide what counts (a duplicate impression, a click), so the
  counts cannot be split from them. Each group keeps its share of a cell's counters
  (``group_ctr``: impressions, clicks, ``p{k}``; ``group_ctr_users``: its users, disjoint
  from every other group's; the per-user experiment hashes): a reader sums the groups
  (store/ctr.py).
- A language's item side holds what is not per user: ``ctr_cells`` and ``ctr_items`` (the
  distinct resources shown per cell), added by one item-side call per batch, guarded by the
  language's item progress. Both are idempotent (SADD, PFADD), so a duplicate impression
  adds nothing there either.
- Every call declares its guard hash as its first key (the node it runs on) and every
  other key it touches that the caller can name (all of the impressions script's; the
  windows, not the cell-named click counters, of the click section); every key carries the
  same hash tag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from store.attribution import AttributionConfig, Touches
from store.guards import Guard, guard_args
from store.impressions import ImpressionLike
from store.keys import Keys


def impression_item_call(keys: Keys, config: AttributionConfig, lang: str, guard_key: str,
                         guards: Sequence[Guard], cells: Mapping[str, Sequence[int]]
                         ) -> tuple[list, list]:
    """(KEYS, ARGV) of the impressions script's item-side call: every ``{cell: resources}``
    into ``ctr_cells(lang)`` and ``ctr_items(lang, cell)``, no counters."""
    args = guard_args(guards) + list(config.args())
    args += (1, lang, "", "", "", "", keys.ctr_items(lang, ""), keys.ctr_cells(lang), "")
    args.append(len(cells))
    for cell, items in cells.items():
        args += (1, "", "", 0, cell, "", len(items), *items)
    return [guard_key, keys.ctr_cells(lang), *(keys.ctr_items(lang, c) for c in cells)], args


def impression_group_call(group: Keys, config: AttributionConfig, lang: str, guard_key: str,
                          guards: Sequence[Guard], impressions: Sequence[ImpressionLike]
                          ) -> tuple[list, list]:
    """(KEYS, ARGV) of the impressions script's call for one slot group (``group`` bound to
    it): the windows and the group's counters of ``impressions`` (offset order)."""
    args = guard_args(guards) + list(config.args())
    args += (1, lang, group.user_prefix("impression_window", lang),
             group.user_prefix("view_window", lang), group.group_ctr(lang, ""),
             group.group_ctr_users(lang, ""), "", "", group.group_experiment_users_prefix(lang))
    args.append(len(impressions))
    for imp in impressions:
        args += (1, imp.user_id, imp.impression_id, imp.ts, imp.cell, imp.list,
                 len(imp.items), *imp.items)
    return [guard_key, *_impression_keys(group, lang, impressions)], args


def _impression_keys(group: Keys, lang: str, impressions: Sequence[ImpressionLike]
                     ) -> dict[str, None]:
    """Every key the group call touches but its guard, in first-use order (declared, so
    that a slot being moved answers the call with TRYAGAIN or ASK before it starts rather
    than a key gone mid-script)."""
    out: dict[str, None] = {}
    exp = group.group_experiment_users_prefix(lang)
    for imp in impressions:
        cell = imp.cell
        out[group.impression_window(lang, imp.user_id)] = None
        out[group.view_window(lang, imp.user_id)] = None
        out[group.group_ctr(lang, cell)] = None
        out[group.group_ctr_users(lang, cell)] = None
        _day, _list, _model, arm, experiment = cell.split("|")
        if experiment:
            out[f"{exp}{experiment}|{arm}"] = None
    return out


def impression_progress_call(config: AttributionConfig, guard_key: str,
                             guards: Sequence[Guard]) -> tuple[list, list]:
    """(KEYS, ARGV) of an impressions script call that only moves guards."""
    return [guard_key], guard_args(guards) + list(config.args()) + [0, 0]


def touched_windows(group: Keys, touches: Touches) -> list[str]:
    """The windows of a slot group's touched users, for the call's KEYS (after the views
    keys). The counters a click moves are named by the impression's cell, read from the
    window in the script: those cannot be declared (docs/CLUSTER.md section 5)."""
    out = []
    for lang, users in touches.items():
        for user in users:
            out += (group.impression_window(lang, user), group.view_window(lang, user))
    return out


def group_click_args(group: Keys, config: AttributionConfig, touches: Touches) -> list:
    """The click section's ARGV (store/attribution.py CLICKS_LUA) for one slot group's users
    (``group`` bound to it): their windows and the group's counters."""
    langs = [(lang, users) for lang, users in touches.items() if users]
    args: list = [*config.args(), len(langs)]
    for lang, users in langs:
        args += (group.user_prefix("impression_window", lang),
                 group.user_prefix("view_window", lang), group.group_ctr(lang, ""),
                 group.group_experiment_users_prefix(lang), len(users), lang)
        for user, seen in users.items():
            args += (user, len(seen))
            for rid, t, imp in seen:
                args += (rid, t, imp)
    return args


def no_clicks(config: AttributionConfig) -> list:
    """An empty click section: what a views script call with clicks appends on the item side
    and to a call that only moves guards."""
    return [*config.args(), 0]
