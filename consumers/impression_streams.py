"""``recs impressions`` on a Redis Cluster: the views consumer's per-stream writer
(consumers/stream_writer.py) with the impressions script's calls
(store/cluster_impressions.py), so each impression applies exactly once per (partition,
stream) by the same progress, registration and restart points as the view counts.

Invariants: a language's item-side stream carries the cells and the distinct resources shown
of every impression at or past its held offset; a slot group's stream carries its users'
impressions at or past its held offset, in offset order per partition (the app keys
impressions by user id, so a user's come from one partition, in the order one Redis applies
them).
"""

from __future__ import annotations

from consumers.batch import StreamBatch
from consumers.impression_events import parse_impression
from consumers.stream_writer import StreamWriter
from store.cluster_impressions import (
    impression_group_call,
    impression_item_call,
    impression_progress_call,
)
from store.impressions import parse_impressions_reply


class ImpressionStreamBatch(StreamBatch):
    """``items`` = ``{partition: [(offset, lang, user, impression, 1)]}``."""

    def entry(self, m, offset: int) -> tuple[tuple, int]:
        imp = parse_impression(m.value())
        return (offset, imp.lang, imp.user_id, imp, 1), 1


class ImpressionStreamWriter(StreamWriter):
    """The stream writer whose store is store/impressions.py ``Impressions``."""

    def _plan(self, tagged: list, ends: dict[int, int]) -> list:
        """Per language the item side (``{cell: resources}``), then per slot group its
        impressions, each without the events its stream already holds."""
        held = self.held
        items: dict[str, tuple[str, set, dict]] = {}
        groups: dict[str, tuple[str, str, set, list]] = {}
        for p, offset, lang, user, imp, _n, item, group in tagged:
            if offset >= held[item][p]:
                _lang, parts, cells = items.setdefault(item, (lang, set(), {}))
                parts.add(p)
                cells.setdefault(imp.cell, set()).update(imp.items)
            if offset >= held[group][p]:
                _lang, _user, parts, imps = groups.setdefault(group, (lang, user, set(), []))
                parts.add(p)
                imps.append(imp)
        plan = [(name, lang, None, parts, {c: sorted(r) for c, r in cells.items()})
                for name, (lang, parts, cells) in items.items()]
        plan += [(name, lang, user, parts, imps)
                 for name, (lang, user, parts, imps) in groups.items()]
        return plan

    def _call_of(self, stream, ends: dict[int, int]) -> tuple[list, list, list]:
        name, lang, a_user, parts, payload = stream
        guards = [(p, self.held[name][p], ends[p]) for p in sorted(parts)]
        config = self.store.config
        if a_user is None:
            keys_, args = impression_item_call(self.keys, config, lang, name, guards, payload)
        else:
            keys_, args = impression_group_call(self.keys.for_user(a_user), config, lang,
                                                name, guards, payload)
        return guards, keys_, args

    def _parse(self, reply):
        return parse_impressions_reply(reply)

    def _progress(self, name: str, guards: list) -> tuple[list, list]:
        return impression_progress_call(self.store.config, name, guards)
