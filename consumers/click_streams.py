"""``recs consume --clicks`` on a Redis Cluster: the per-stream writer
(consumers/stream_writer.py) with the views script's click section in each slot group's
call (store/cluster_impressions.py ``group_click_args``), so a user's view window, the
impressions a view clicks and the group's click counters move in the call that adds the
user's views and sets the group's progress: each view attributes exactly once per
(partition, stream). The item side is the view counts' call with an empty click section.

Invariant: a slot group's touches are its users' views at or past the group's held offset,
in offset order per partition (as :class:`~consumers.batch.TouchBatch` keeps them).
"""

from __future__ import annotations

from consumers.batch import StreamBatch
from consumers.events import parse_view
from consumers.stream_writer import StreamWriter
from store.cluster_impressions import group_click_args, no_clicks, touched_windows


class TouchStreamBatch(StreamBatch):
    """``items`` = ``{partition: [(offset, lang, user, resource, n, touch)]}``, ``touch`` =
    ``(resource, t ms, impression id or "")`` (the view's own time, else the broker's)."""

    def entry(self, m, offset: int) -> tuple[tuple, int]:
        lang, user, rid, n, ts, imp = parse_view(m.value())
        return (offset, lang, user, rid, n, (rid, ts or m.timestamp()[1], imp or "")), n


class ClickStreamWriter(StreamWriter):
    """The stream writer whose store is store/attribution.py ``ClickCounts``."""

    def _tag(self, events_of: dict) -> list:
        """:meth:`StreamWriter._tag`'s tuples, each with its touch last."""
        plain = {p: [e[:5] for e in events] for p, events in events_of.items()}
        touches = [e[5] for events in events_of.values() for e in events]
        return [(*t, touch) for t, touch in zip(super()._tag(plain), touches, strict=True)]

    def _plan(self, tagged: list, ends: dict[int, int]) -> list:
        """:meth:`StreamWriter._plan`, each slot group's payload ``(views, touches)``."""
        held, touches = self.held, {}
        for t in tagged:
            p, offset, user, group = t[0], t[1], t[3], t[7]
            if offset >= held[group][p]:
                touches.setdefault(group, {}).setdefault(user, []).append(t[8])
        plan = super()._plan([t[:8] for t in tagged], ends)
        return [s if s[2] is None else (*s[:4], (s[4], {s[1]: touches[s[0]]})) for s in plan]

    def _call_of(self, stream, ends: dict[int, int]) -> tuple[list, list, list]:
        name, lang, a_user, parts, payload = stream
        config = self.store.config
        if a_user is None:
            guards, keys_, args = super()._call_of(stream, ends)
            return guards, keys_, args + no_clicks(config)
        views, touches = payload
        guards, keys_, args = super()._call_of((name, lang, a_user, parts, views), ends)
        group = self.keys.for_user(a_user)
        return (guards, keys_ + touched_windows(group, touches),
                args + group_click_args(group, config, touches))

    def _progress(self, name: str, guards: list) -> tuple[list, list]:
        keys_, args = super()._progress(name, guards)
        return keys_, args + no_clicks(self.store.config)
