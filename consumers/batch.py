"""The batch in hand of a Kafka consumer loop (consumers/consume.py), with no I/O: what was
read, aggregated, found invalid, and where each owned partition stands.

Invariants:
- ``owned`` holds exactly the partitions this member owns; for each, ``applied`` is the
  next offset Redis holds as far as we know (None: no record) and ``read`` the next offset
  to read: a message below it is skipped (already applied, or already in hand).
- :meth:`guards` gives, for every owned partition, the offset Redis should hold and the
  one to write with this batch (None: nothing read there); the writer sends them with the
  batch so a batch applies at most once.
- :meth:`clear` forgets the batch in hand, never the partitions.

Messages need only ``error()``, ``partition()``, ``offset()``, ``value()`` (and
``topic()``, ``key()``, ``headers()`` for dead letters), so tests can feed plain objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from confluent_kafka import KafkaError, KafkaException

from consumers.events import MAX_VALUE_BYTES, InvalidEvent, parse_view

log = logging.getLogger("recs.consume")


class PartitionState:
    """Where one owned partition stands."""

    __slots__ = ("applied", "read", "eof")

    def __init__(self, applied: int | None) -> None:
        self.applied = applied  # the next offset Redis holds (None: no record)
        self.read = applied or 0  # the next offset to read: a message below it is skipped
        self.eof = -1  # the offset at which a fetch last reported the end (-1: none yet)


class DeadLetter:
    """One invalid message on its way to the dead-letter topic."""

    __slots__ = ("value", "key", "original", "own", "headers", "delivered", "failed",
                 "refusals", "cuts")

    def __init__(self, value, key, original: list, own: list) -> None:
        self.value, self.key = value, key
        self.original, self.own = original, own  # the message's headers; ours
        self.headers = original + own
        self.delivered = False
        self.failed: KafkaError | None = None
        self.refusals = 0  # sends refused for good
        self.cuts = 0  # 1: value cut to MAX_VALUE_BYTES; 2: no value, only our headers

    @classmethod
    def of(cls, m, reason: str) -> DeadLetter:
        own = [("error", reason.encode()), ("source.topic", m.topic().encode()),
               ("source.partition", str(m.partition()).encode()),
               ("source.offset", str(m.offset()).encode())]
        return cls(m.value(), m.key(), list(m.headers() or ()), own)

    def shrink(self) -> bool:
        """Cut the copy to fit a size limit (consumers/dead_letters.py docstring); False when
        nothing is left to cut."""
        if self.cuts >= 2:
            return False
        size = len(self.value or b"")
        if self.cuts == 0:
            self.own = self.own + [("truncated", b"true"), ("original-size", str(size).encode())]
        if self.cuts == 0 and size > MAX_VALUE_BYTES:
            self.value, self.headers, self.cuts = (self.value[:MAX_VALUE_BYTES],
                                                   self.original + self.own, 1)
        else:
            self.value, self.headers, self.cuts = b"", list(self.own), 2
        return True

    def on_delivery(self, err, _msg) -> None:
        if err is None:
            self.delivered = True
        else:
            self.failed = err


class Batch:
    """The views batch: events aggregated per language, user and resource. ``touches`` (a
    :class:`TouchBatch`'s) also keeps each view's time and impression id, for clicks."""

    touches: Any = None

    def __init__(self) -> None:
        self.owned: dict[int, PartitionState] = {}
        self.clear()

    def payload(self) -> Any:
        """What the store writes (consumers/writer.py)."""
        return self.items

    def clear(self) -> None:
        self.items: Any = {}
        self.dead: list[DeadLetter] = []
        self.invalid: dict[str, int] = {}
        self.in_hand = self.valid = self.view_sum = self.skipped = 0

    # -- reading ---------------------------------------------------------------------------
    def add(self, msgs: list) -> list[DeadLetter]:
        """Take ``msgs`` in; returns the dead letters they gave (to send before writing)."""
        owned, views, parse, touches = self.owned, self.items, parse_view, self.touches
        dead: list[DeadLetter] = []
        valid = view_sum = skipped = events = 0
        for m in msgs:
            if m.error() is not None:
                self.message_error(m)
                continue
            events += 1
            p = m.partition()
            offset = m.offset()
            part = owned.get(p)
            if part is None or offset < part.read:  # not ours any more, or already applied
                skipped += 1
                continue
            part.read = offset + 1
            try:
                lang, user, rid, n, ts, imp = parse(m.value())
            except InvalidEvent as exc:
                dead.append(self.dead_letter(m, exc.reason))
                continue
            if touches is not None:
                # The view's own time, else the broker's: the same on every replay.
                touch = (rid, ts or m.timestamp()[1], imp or "")
                seen = touches.get(lang)
                if seen is None:
                    touches[lang] = {user: [touch]}
                elif user in seen:
                    seen[user].append(touch)
                else:
                    seen[user] = [touch]
            users = views.get(lang)
            if users is None:
                users = views[lang] = {}
            items = users.get(user)
            if items is None:
                users[user] = {rid: n}
            else:
                items[rid] = items.get(rid, 0) + n
            valid += 1
            view_sum += n
        self.in_hand += events
        self.valid += valid
        self.view_sum += view_sum
        self.skipped += skipped
        return dead

    def message_error(self, m) -> None:
        err = m.error()
        if err.code() == KafkaError._PARTITION_EOF:
            # The fetch reached the end (the fetch's own high watermark: some brokers'
            # ListOffsets answer is stale, Tansu's among them).
            part = self.owned.get(m.partition())
            if part is not None:
                part.eof = m.offset()
            return
        if err.fatal():
            raise KafkaException(err)
        log.warning("kafka message error", extra={"fields": {"error": str(err)}})

    def dead_letter(self, m, reason: str) -> DeadLetter:
        dead = DeadLetter.of(m, reason)
        self.dead.append(dead)
        self.invalid[reason] = self.invalid.get(reason, 0) + 1
        log.debug("invalid event", extra={"fields": {
            "reason": reason, "partition": m.partition(), "offset": m.offset()}})
        return dead

    # -- offsets ---------------------------------------------------------------------------
    def guards(self) -> list[tuple[int, int | None, int | None]]:
        """Every owned partition: (partition, offset Redis should hold, new offset or None)."""
        return [(p, part.applied, part.read if part.read != (part.applied or 0) else None)
                for p, part in self.owned.items()]

    def written(self, guards: list[tuple[int, int | None, int | None]]) -> None:
        """The batch written with ``guards``: Redis now holds their new offsets."""
        for p, _held, new in guards:
            if new is not None and p in self.owned:
                self.owned[p].applied = new
        self.clear()

    def held(self, held: dict[int, int | None]) -> None:
        """Redis holds ``held`` (other offsets than we thought)."""
        for p, offset in held.items():
            part = self.owned.get(p)
            if part is not None:
                part.applied = offset

    def rewind(self, sought: Collection[int] = ()) -> list[tuple[int, int | None]]:
        """Drop the batch; every owned partition read past what Redis holds, and every
        ``sought`` one, goes back there. Returns the ``(partition, offset)`` to seek."""
        seeks = []
        for p, part in self.owned.items():
            floor = part.applied or 0
            if p in sought or part.read != floor:
                part.read = floor
                part.eof = -1
                seeks.append((p, part.applied))
        self.clear()
        return seeks

    def drained(self) -> bool:
        """Every owned partition's fetch reported its end at the offset we have written."""
        return all(part.eof >= part.read for part in self.owned.values())


class TouchBatch(Batch):
    """The views batch of a consumer that attributes clicks (store/attribution.py): the
    counts and, per language and user, every view's ``(resource_id, t, impression_id)``."""

    def clear(self) -> None:
        super().clear()
        self.touches = {}

    def payload(self) -> Any:
        return self.items, self.touches


class OrderedBatch(Batch):
    """A batch that keeps each operation, in offset order (no aggregation): control events.
    ``items`` maps a running index to the operation ``parse`` returned."""

    def __init__(self, parse: Callable[[bytes | None], Any]) -> None:
        self.parse = parse
        super().__init__()

    def add(self, msgs: list) -> list[DeadLetter]:
        owned, ops = self.owned, self.items
        dead: list[DeadLetter] = []
        events = skipped = 0
        for m in msgs:
            if m.error() is not None:
                self.message_error(m)
                continue
            events += 1
            part = owned.get(m.partition())
            if part is None or m.offset() < part.read:
                skipped += 1
                continue
            part.read = m.offset() + 1
            try:
                op = self.parse(m.value())
            except InvalidEvent as exc:
                dead.append(self.dead_letter(m, exc.reason))
                continue
            ops[len(ops)] = op
            self.valid += 1
        self.in_hand += events
        self.skipped += skipped
        return dead


class StreamBatch(Batch):
    """The views batch of a consumer on a Redis Cluster: each valid event kept with its
    partition and offset, ``items`` = ``{partition: [(offset, lang, user, resource, n)]}``,
    so the writer can aggregate per stream (item side, slot group) and drop a stream's
    events below the offset that stream holds (consumers/stream_writer.py ``StreamWriter``).
    ``first`` is each partition's first offset in the batch (what a stream first seen in
    it is registered at when Redis holds nothing for the partition yet)."""

    def clear(self) -> None:
        super().clear()
        self.first: dict[int, int] = {}

    def add(self, msgs: list) -> list[DeadLetter]:
        owned, events_of, entry, first = self.owned, self.items, self.entry, self.first
        dead: list[DeadLetter] = []
        valid = view_sum = skipped = events = 0
        for m in msgs:
            if m.error() is not None:
                self.message_error(m)
                continue
            events += 1
            p, offset = m.partition(), m.offset()
            part = owned.get(p)
            if part is None or offset < part.read:
                skipped += 1
                continue
            part.read = offset + 1
            if p not in first:
                first[p] = offset
            try:
                event, n = entry(m, offset)
            except InvalidEvent as exc:
                dead.append(self.dead_letter(m, exc.reason))
                continue
            kept = events_of.get(p)
            if kept is None:
                kept = events_of[p] = []
            kept.append(event)
            valid += 1
            view_sum += n
        self.in_hand += events
        self.valid += valid
        self.view_sum += view_sum
        self.skipped += skipped
        return dead

    def entry(self, m, offset: int) -> tuple[tuple, int]:
        """(what ``items`` keeps of message ``m``, its views); raises ``InvalidEvent``.
        A cluster consumer of another topic keeps other entries (consumers/click_streams.py,
        consumers/impression_streams.py)."""
        lang, user, rid, n, _ts, _imp = parse_view(m.value())
        return (offset, lang, user, rid, n), n
