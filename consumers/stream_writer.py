"""The writer of a views consumer on a Redis Cluster (docs/CLUSTER.md section 0, "Counts,
exactly once per (partition, stream)"): :class:`StreamWriter`, the single-Redis
:class:`~consumers.writer.BatchWriter` with progress per stream.

A *stream* is one field ``partition`` of one progress hash: a language's ``item_offsets``
(its item totals) or a slot group's ``group_offsets`` (its users' views and queues).
Invariants:

- ``held[hash][p]`` is the offset this consumer believes Redis holds for the stream; every
  call is guarded with it (expected) and the partition's batch end (new), and sets the
  stream's offset in the same script as its counts: a stream's events apply once.
- A stream's events are a subsequence of its partition: before a call the events of that
  stream below its held offset are dropped (replay from an earlier restart point is exact
  per stream).
- A stream has a field only after its registration (HSETNX at the batch start) reached the
  node's replica (WAIT), and ``langs`` holds the language before that: a stream without a
  field never had a write, so the restart point of a partition, the minimum over every
  registered stream of every language in ``langs``, misses nothing.
- A stream that had no event since its held offset is moved up to where its partition is
  written through (:meth:`StreamWriter.advance`, between batches): otherwise one idle slot
  group would hold every restart point back.
- A refused guard, or a re-read (:meth:`StreamWriter.check`) finding a stream below what we
  hold (its node failed over and lost writes, counts and offsets together), lowers the
  partition's restart point: the consumer seeks it back there (``Applied.refused`` =
  ``{partition: new restart point}``).
- A cluster's topology errors (a slot moving, a node gone, no node for a slot) are retried
  like an outage (consumers/cluster_nodes.py), and a call's answer is never dropped.

Per batch: per language one item-side call first, then one call per touched slot group,
those pipelined per node; ``calls`` counts them (benchmarks/ingest.py).
"""

from __future__ import annotations

import logging

from consumers.cluster_nodes import cluster_transient, evalsha_per_node, on_node
from consumers.dead_letters import DeadLetters
from consumers.metrics import ConsumerMetrics
from consumers.retry import Wait
from consumers.writer import BatchWriter
from store.counts import Applied, group_call, item_call, parse_reply, progress_call
from store.guards import Guard
from store.progress import read_streams, restart_points, stream_keys

log = logging.getLogger("recs.consume")


class StreamWriter(BatchWriter):
    """Dead letters, then a batch written per stream, each call guarded by its stream's
    progress (module docstring)."""

    def __init__(self, store, keys, group: str, topic: str, dead_letters: DeadLetters,
                 metrics: ConsumerMetrics, retry_initial: float, retry_max: float) -> None:
        super().__init__(store, "", dead_letters, metrics, retry_initial, retry_max)
        self.client, self.keys, self.group, self.topic = store.client, keys, group, topic
        self.held: dict[str, dict[int, int]] = {}
        self.langs: set[str] = set()
        self.calls = 0
        self._names: dict[str, tuple[str, list[str]]] = {}

    # -- names ----------------------------------------------------------------------------
    def _streams_of(self, lang: str) -> tuple[str, list[str]]:
        """(item-side progress hash, every group's progress hash) of ``lang``."""
        names = self._names.get(lang)
        if names is None:
            item, *groups = stream_keys(self.keys, lang, self.group, self.topic)
            names = self._names[lang] = (item, groups)
        return names

    # -- writing a batch --------------------------------------------------------------------
    def write(self, batch, wait: Wait) -> tuple[list[Guard], Applied]:
        self.dead_letters.deliver(batch.dead, wait)
        guards = batch.guards()
        ends = {p: new for p, _held, new in guards if new is not None}
        starts = {p: batch.owned[p].applied if batch.owned[p].applied is not None
                  else batch.first.get(p, 0) for p in ends}
        tagged = self._tag(batch.items)
        self.call(lambda: self._register(tagged, starts), wait)
        total = Applied()
        plan = self._plan(tagged, ends)
        # The item side of each language first, one call at a time...
        for stream in (s for s in plan if s[2] is None):
            applied = self.call(lambda s=stream: self._send(s, ends), wait)
            if applied.refused:
                return guards, Applied(refused=self._rollback(stream[0], applied.refused,
                                                              starts))
            _add(total, applied)
        # ...then every slot group's call, pipelined per node.
        pending = [s for s in plan if s[2] is not None]
        refused: dict = {}
        while pending:
            for stream, applied in self.call(lambda: self._send_many(pending, ends), wait):
                if applied.refused:
                    refused.update(self._rollback(stream[0], applied.refused, starts))
                _add(total, applied)
        if refused:
            return guards, Applied(refused=refused)
        return guards, total

    def _send_many(self, pending: list, ends: dict[int, int]) -> list:
        """The calls of ``pending``, pipelined per node; returns ``(stream, Applied)`` of
        those answered and leaves the others in ``pending`` for the next round. An error is
        raised, for the caller's retry, only when nothing was answered: an answer (a
        refusal above all) is never dropped."""
        calls = [self._call_of(stream, ends) for stream in pending]
        self.calls += len(calls)
        answered, error = evalsha_per_node(self.client, self.store._apply,
                                           [(keys_, args) for _g, keys_, args in calls])
        done = [(pending[i], self._noted(pending[i][0], calls[i][0], self._parse(reply),
                                         ends)) for i, reply in answered]
        answered_at = {i for i, _reply in answered}
        pending[:] = [s for i, s in enumerate(pending) if i not in answered_at]
        if error is not None and not done:
            raise error  # retried by the caller (nothing answered, nothing to note)
        return done

    def _tag(self, events_of: dict) -> list:
        """Each event with its two streams: [(p, offset, lang, user, rid, n, item, group)]."""
        group_of = self.keys.group_of if self.keys.cluster else (lambda _user: 0)
        out = []
        for p, events in events_of.items():
            for offset, lang, user, rid, n in events:
                item, groups = self._streams_of(lang)
                g = group_of(user)
                out.append((p, offset, lang, user, rid, n, item, groups[g]))
        return out

    def _register(self, tagged: list, starts: dict[int, int]) -> None:
        """Register every stream of the batch Redis may hold nothing for: its language in
        ``langs`` first, then HSETNX field p = the batch start, each replicated (WAIT)."""
        for lang in sorted({t[2] for t in tagged} - self.langs):
            on_node(self.client, self.keys.langs,
                    lambda pipe, lang=lang: pipe.sadd(self.keys.langs, lang))
            self.langs.add(lang)
        missing = sorted({(name, t[0]) for t in tagged for name in (t[6], t[7])
                          if t[0] not in self.held.get(name, ())})
        by_node: dict[str, list] = {}
        for name, p in missing:
            by_node.setdefault(self.client.get_node_from_key(name).name, []).append((name, p))
        for pairs in by_node.values():
            def commands(pipe, pairs=pairs):
                for name, p in pairs:
                    pipe.hsetnx(name, p, starts[p])
                    pipe.hget(name, p)
            replies = on_node(self.client, pairs[0][0], commands)
            for (name, p), held in zip(pairs, replies[1::2], strict=True):
                self.held.setdefault(name, {})[p] = int(held)

    def _plan(self, tagged: list, ends: dict[int, int]) -> list:
        """The batch's calls: per language the item side first, then one per slot group;
        each ``(progress hash, lang, group name or None, partitions, payload)`` without the
        events the stream already holds."""
        held = self.held
        items: dict[str, tuple[str, set, dict]] = {}
        groups: dict[str, tuple[str, str, set, dict]] = {}
        for p, offset, lang, user, rid, n, item, group in tagged:
            if offset >= held[item][p]:
                _lang, parts, totals = items.setdefault(item, (lang, set(), {}))
                parts.add(p)
                totals[rid] = totals.get(rid, 0) + n
            if offset >= held[group][p]:
                _lang, _user, parts, users = groups.setdefault(group, (lang, user, set(), {}))
                parts.add(p)
                views = users.setdefault(user, {})
                views[rid] = views.get(rid, 0) + n
        plan = [(name, lang, None, parts, totals)
                for name, (lang, parts, totals) in items.items()]
        plan += [(name, lang, user, parts, users)
                 for name, (lang, user, parts, users) in groups.items()]
        return plan

    def _call_of(self, stream, ends: dict[int, int]) -> tuple[list, list, list]:
        """(guards, KEYS, ARGV) of one stream's call."""
        name, lang, a_user, parts, payload = stream
        guards = [(p, self.held[name][p], ends[p]) for p in sorted(parts)]
        if a_user is None:
            keys_, args = item_call(self.keys, lang, name, guards, payload)
        else:
            keys_, args = group_call(self.keys.for_user(a_user), lang, name, guards, payload)
        return guards, keys_, args

    def _parse(self, reply) -> Applied:
        """A call's raw reply (the store's script's)."""
        return parse_reply(reply)

    def _progress(self, name: str, guards: list) -> tuple[list, list]:
        """(KEYS, ARGV) of a call that only moves ``name``'s guards."""
        return progress_call(name, guards)

    def _send(self, stream, ends: dict[int, int]) -> Applied:
        guards, keys_, args = self._call_of(stream, ends)
        self.calls += 1
        return self._noted(stream[0], guards, self.store.call(keys_, args), ends)

    def _noted(self, name: str, guards: list, applied: Applied, ends: dict[int, int]
               ) -> Applied:
        """A call's reply, its stream's held offsets moved on where it applied. Refused
        with every guard already at its new value: an earlier attempt applied it (its reply
        was lost), so it counts as applied."""
        if applied.refused and all(
                held is not None and int(held) == ends[int(p)]
                for p, held in applied.refused.items()):
            applied = Applied()
        if not applied.refused:
            for p, _expected, new in guards:
                self.held[name][p] = new
        return applied

    def _rollback(self, name: str, refused: dict, starts: dict[int, int]) -> dict:
        """Stream ``name`` holds other offsets in Redis than we thought: note them; returns
        ``{partition: where to read again}`` (the batch start, or lower where the stream
        went back; None: it lost its field, read from the beginning). The batch's other
        partitions are read again from their start by the loop anyway."""
        out = {}
        for p, held in refused.items():
            p = int(p)
            if held is None:
                self.held.get(name, {}).pop(p, None)
                out[str(p)] = None
            else:
                self.held[name][p] = int(held)
                out[str(p)] = str(min(starts[p], int(held)))
        return out

    def restart_points(self, partitions) -> dict[int, int]:
        """The minimum held offset over every stream we know of, for ``partitions``."""
        points = restart_points(self.held)
        return {p: points[p] for p in partitions if p in points}

    # -- between batches --------------------------------------------------------------------
    def assigned(self, partitions: list[int]) -> dict[int, int]:
        """Read every stream's progress for ``partitions`` (newly assigned): their restart
        points."""
        self._reload(partitions)
        return self.restart_points(partitions)

    def forget(self, partitions: list[int]) -> None:
        for held in self.held.values():
            for p in partitions:
                held.pop(p, None)

    def _reload(self, partitions) -> dict[tuple[str, int], int]:
        """Re-read the streams of ``partitions``; returns those Redis holds below what we
        held (rolled back), as ``{(hash, p): held}``."""
        self.langs = {v.decode() if isinstance(v, bytes) else v
                      for v in self.client.smembers(self.keys.langs)}
        streams = read_streams(self.client, self.keys, self.group, self.topic,
                               langs=sorted(self.langs))
        lower = {}
        for name in set(streams) | set(self.held):
            there = streams.get(name, {})
            mine = self.held.setdefault(name, {})
            for p in partitions:
                now, before = there.get(p), mine.get(p)
                if before is not None and (now is None or now < before):
                    lower[(name, p)] = now
                if now is None:
                    mine.pop(p, None)
                else:
                    mine[p] = now
        return lower

    def check(self, owned: dict) -> dict[int, int | None]:
        """The periodic re-read: ``{partition: new restart point}`` for every owned partition
        a stream of which went below what we held (and below where the partition is
        written through); empty when nothing rolled back."""
        lower = self._reload(list(owned))
        if lower:
            log.warning("a stream's progress went back (its node lost writes)",
                        extra={"fields": {"streams": {f"{n}/{p}": o
                                                      for (n, p), o in lower.items()}}})
        out: dict[int, int | None] = {}
        for (_name, p), now in lower.items():
            if p in out and out[p] is None:
                continue
            written = owned[p].applied
            out[p] = None if now is None else now if written is None else min(now, written,
                                                                              out.get(p, now))
        return out

    def advance(self, owned: dict) -> dict[int, int | None]:
        """Move every stream that had no event since its held offset up to where its
        partition is written through (nothing in hand: ``applied`` is that). Returns what
        :meth:`check` does when a guard finds a rollback instead."""
        for name, held in self.held.items():
            guards = [(p, o, owned[p].applied) for p, o in sorted(held.items())
                      if p in owned and owned[p].applied is not None and o < owned[p].applied]
            if not guards:
                continue
            self.calls += 1
            applied = self.store.call(*self._progress(name, guards))
            if applied.refused:
                return self.check(owned)
            for p, _o, new in guards:
                held[p] = new
        return {}

    def call(self, call, wait: Wait, message: str = "redis unavailable, retrying"):
        """:meth:`BatchWriter.call`; a cluster's own failures (no node for a slot, a
        redirection loop during a failover or a reshard) are transient as well."""
        return super().call(lambda: cluster_transient(call), wait, message)


def _add(total: Applied, applied: Applied) -> None:
    """``applied`` (one stream's call, applied) added to the batch's ``total``."""
    total.parked += applied.parked
    total.duplicates += applied.duplicates
    for key, (n, clicks) in applied.counted.items():
        was = total.counted.get(key, (0, 0))
        total.counted[key] = (was[0] + n, was[1] + clicks)
