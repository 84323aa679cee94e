"""Writing one batch (consumers/batch.py) of a Kafka consumer loop (consumers/consume.py):
its dead letters first (delivered, or the consumer stops), then the batch and its offsets
in ONE guarded script call, retried while Redis is unreachable.

The store is anything with ``write(guard_key, guards, items) -> store.counts.Applied``:
``store.counts.Counts`` for views, ``store.control.Control`` for control events. How the
time between attempts is spent is the loop's ``wait(seconds)`` (pause and poll, or sleep
inside a rebalance callback); it may raise to drop the batch.

A dead letter the broker refuses for good is tried ``DLQ_ATTEMPTS`` times, then
:class:`DeadLetterError` stops the consumer before the batch's offsets are written.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

import redis
from confluent_kafka import KafkaError, KafkaException, Producer

from consumers.batch import Batch, DeadLetter
from consumers.metrics import ConsumerMetrics
from consumers.retry import backoff, retry_redis
from core.errors import RecsError
from store.counts import Applied, Parked, group_call, item_call, parse_reply, progress_call
from store.guards import Guard
from store.progress import read_streams, restart_points, stream_keys

log = logging.getLogger("recs.consume")

DLQ_ATTEMPTS = 3
"""Sends of one dead letter the broker refuses for good before the consumer stops."""

Wait = Callable[[float], None]


class DeadLetterError(RecsError):
    """A dead letter cannot be delivered: the consumer stops before writing its batch."""


class Store(Protocol):
    def write(self, guard_key: str, guards: list[Guard], items) -> Applied: ...


class DeadLetters:
    """Sends dead letters to ``topic`` with ``producer``."""

    def __init__(self, producer: Producer, topic: str, metrics: ConsumerMetrics,
                 retry_initial: float, retry_max: float) -> None:
        self.producer, self.topic, self.metrics = producer, topic, metrics
        self.retry = (retry_initial, retry_max)

    def send(self, dead: DeadLetter) -> None:
        dead.failed = None
        while True:
            try:
                self.producer.produce(self.topic, value=dead.value, key=dead.key,
                                      headers=dead.headers, on_delivery=dead.on_delivery)
                return
            except BufferError:  # local queue full: let deliveries drain
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused before sending: too large, bad topic...
                cuts = dead.cuts
                self.refused(dead, exc.args[0])
                if dead.cuts == cuts:
                    self.producer.poll(0.5)

    def refused(self, dead: DeadLetter, err: KafkaError) -> None:
        """A send the producer or the broker refused: shrink a copy that is too large, retry
        a transient error, stop the consumer after DLQ_ATTEMPTS permanent refusals."""
        if err.code() in _TOO_LARGE and dead.shrink():
            self.metrics.dlq_truncated.inc()
            log.warning("dead letter too large for the dead-letter topic: sending it truncated",
                        extra={"fields": {"error": str(err), "cut": dead.cuts,
                                          "headers": _header_text(dead.own)}})
            return
        if (err.retriable() or err.code() in _TRANSIENT) and not err.fatal():
            return
        dead.refusals += 1
        if dead.refusals < DLQ_ATTEMPTS:
            return
        self.metrics.dlq_failures.labels(err.name()).inc()
        fields = {**_header_text(dead.own), "kafka_error": str(err), "dlq": self.topic}
        log.error("dead-letter topic refuses a dead letter for good: stopping before its batch "
                  "is written (a restart replays it)", extra={"fields": fields})
        raise DeadLetterError(f"dead-letter topic {self.topic!r} refused a dead letter "
                              f"{DLQ_ATTEMPTS} times ({err.str()}); nothing past it was "
                              "written or committed")

    def deliver(self, dead: list[DeadLetter], wait: Wait) -> None:
        """Every one of ``dead`` delivered (resent while refused), then the list emptied."""
        if not dead:
            return
        for delay in backoff(*self.retry):
            self.producer.flush(1.0)
            for d in dead:
                if d.failed is not None:
                    log.warning("dead-letter delivery failed, resending",
                                extra={"fields": {"error": str(d.failed)}})
                    self.refused(d, d.failed)
                    self.send(d)
            if all(d.delivered for d in dead):
                dead.clear()
                return
            self.metrics.dlq_retries.inc()
            log.warning("dead-letter topic not reachable, retrying", extra={"fields": {
                "pending": sum(not d.delivered for d in dead), "wait_s": delay}})
            wait(delay)


class BatchWriter:
    """Dead letters, then the guarded write of a batch and its offsets to ``guard_key``."""

    def __init__(self, store: Store, guard_key: str, dead_letters: DeadLetters,
                 metrics: ConsumerMetrics, retry_initial: float, retry_max: float) -> None:
        self.store, self.guard_key, self.dead_letters = store, guard_key, dead_letters
        self.metrics = metrics
        self.retry = (retry_initial, retry_max)

    def write(self, batch: Batch, wait: Wait) -> tuple[list[Guard], Applied]:
        """Write ``batch``; returns the guards sent and what the script answered (its
        ``refused`` non-empty: nothing was written)."""
        self.dead_letters.deliver(batch.dead, wait)
        guards = batch.guards()
        payload = batch.payload()
        applied = self.call(lambda: self.store.write(self.guard_key, guards, payload), wait)
        return guards, applied

    def call(self, call, wait: Wait, message: str = "redis unavailable, retrying"):
        """``call()``, retried while Redis is unavailable, ``wait`` between attempts."""
        return retry_redis(call, wait, backoff(*self.retry), log, message,
                           on_retry=self.metrics.redis_retries.inc)


_TOO_LARGE = (KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE)
# Delivery errors that pass once the broker is back: retried for as long as they last.
_TRANSIENT = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError._QUEUE_FULL, KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.NETWORK_EXCEPTION, KafkaError.BROKER_NOT_AVAILABLE,
}


def _header_text(headers: list) -> dict[str, str]:
    return {k: v.decode(errors="replace") if isinstance(v, bytes) else str(v)
            for k, v in headers}


class StreamWriter(BatchWriter):
    """The writer of a views consumer on a Redis Cluster (docs/CLUSTER.md section 0,
    "Counts, exactly once per (partition, stream)").

    A *stream* is one field ``partition`` of one progress hash: a language's
    ``item_offsets`` (its item totals) or a slot group's ``group_offsets`` (its users'
    views and queues). Invariants:

    - ``held[hash][p]`` is the offset this consumer believes Redis holds for the stream;
      every call is guarded with it (expected) and the partition's batch end (new), and sets
      the stream's offset in the same script as its counts: a stream's events apply once.
    - A stream's events are a subsequence of its partition: before a call the events of
      that stream below its held offset are dropped (replay from an earlier restart point
      is exact per stream).
    - A stream has a field only after its registration (HSETNX at the batch start) reached
      the node's replica (WAIT), and ``langs`` holds the language before that: a stream
      without a field never had a write, so the restart point of a partition, the minimum
      over every registered stream of every language in ``langs``, misses nothing.
    - A stream that had no event since its held offset is moved up to where its partition
      is written through (:meth:`advance`, between batches): otherwise one idle slot group
      would hold every restart point back.
    - A refused guard, or a re-read (:meth:`check`) finding a stream below what we hold
      (its node failed over and lost writes, counts and offsets together), lowers the
      partition's restart point: the consumer seeks it back there (``Applied.refused`` =
      ``{partition: new restart point}``).
    Per batch: per language one item-side call first, then one call per touched slot
    group, those in one pipeline; ``calls`` counts them (benchmarks/ingest.py)."""

    REPLICA_WAIT_MS = 500
    WAIT_TRIES = 4

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
        parked: list[Parked] = []
        plan = self._plan(tagged, ends)
        # The item side of each language first, one call at a time...
        for stream in (s for s in plan if s[2] is None):
            applied = self.call(lambda s=stream: self._send(s, ends), wait)
            if applied.refused:
                return guards, Applied(refused=self._rollback(stream[0], applied.refused,
                                                              starts))
            parked += applied.parked
        # ...then every slot group's call in one pipeline (redis-py splits it per node).
        pending = [s for s in plan if s[2] is not None]
        refused: dict = {}
        while pending:
            for stream, applied in self.call(lambda: self._send_many(pending, ends), wait):
                if applied.refused:
                    refused.update(self._rollback(stream[0], applied.refused, starts))
                parked += applied.parked
        if refused:
            return guards, Applied(refused=refused)
        return guards, Applied(parked=parked)

    def _send_many(self, pending: list, ends: dict[int, int]) -> list:
        """The calls of ``pending``, one pipeline per node (on a connection to that node:
        redis-py's cluster pipeline refuses EVALSHA); returns ``(stream, Applied)`` of those
        answered and leaves the others in ``pending`` for the next round: NOSCRIPT (a node
        that failed over or lost its script cache) loads the script first; a slot that moved
        (MOVED, ASK, TRYAGAIN) or a node that is gone reads the slot map again. An error is
        raised, for the caller's retry, only when nothing was answered: an answer (a
        refusal above all) is never dropped."""
        script = self.store._apply
        if not script.sha:
            script.sha = self.client.script_load(script.script)
        by_node: dict[str, list] = {}
        for stream in pending:
            guards, keys_, args = self._call_of(stream, ends)
            node = self.client.get_node_from_key(keys_[0])
            by_node.setdefault(node.name, [node]).append((stream, guards, keys_, args))
        done, again, error, reload = [], [], None, False
        for node, *calls in by_node.values():
            pipe = self.client.get_redis_connection(node).pipeline(transaction=False)
            for _stream, _guards, keys_, args in calls:
                pipe.evalsha(script.sha, len(keys_), *keys_, *args)
            self.calls += len(calls)
            try:
                replies = pipe.execute(raise_on_error=False)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                replies = [exc] * len(calls)
            for (stream, guards, _k, _a), reply in zip(calls, replies, strict=True):
                if isinstance(reply, redis.exceptions.NoScriptError):
                    reload = True
                elif isinstance(reply, _MOVING):
                    error = error or redis.ConnectionError(f"{type(reply).__name__}: {reply}")
                elif isinstance(reply, Exception):
                    error = error or reply
                else:
                    applied = self._noted(stream[0], guards, parse_reply(reply), ends)
                    done.append((stream, applied))
                    continue
                again.append(stream)
        pending[:] = again
        if reload:
            script.sha = self.client.script_load(script.script)
        if error is not None:
            self._new_slot_map()
            if not done:
                raise error  # retried by the caller (nothing answered, nothing to note)
        return done

    def _tag(self, events_of: dict) -> list:
        """Each event with its two streams: [(p, offset, lang, user, rid, n, item, group)]."""
        group_of, out = self.keys.for_user, []
        for p, events in events_of.items():
            for offset, lang, user, rid, n in events:
                item, groups = self._streams_of(lang)
                g = group_of(user).group if self.keys.cluster else 0
                out.append((p, offset, lang, user, rid, n, item, groups[g]))
        return out

    def _register(self, tagged: list, starts: dict[int, int]) -> None:
        """Register every stream of the batch Redis may hold nothing for: its language in
        ``langs`` first, then HSETNX field p = the batch start, each replicated (WAIT)."""
        for lang in sorted({t[2] for t in tagged} - self.langs):
            self._on_node(self.keys.langs, lambda pipe, lang=lang: pipe.sadd(self.keys.langs,
                                                                             lang))
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
            replies = self._on_node(pairs[0][0], commands)
            for (name, p), held in zip(pairs, replies[1::2], strict=True):
                self.held.setdefault(name, {})[p] = int(held)

    def _on_node(self, key: str, commands) -> list:
        """``commands(pipe)`` on one connection to the primary of ``key``'s slot, then WAIT
        there for its replica (WAIT counts the writes of its own connection). A node with no
        replica in sync has none that could be promoted without it: nothing to wait for.
        A slot that moves (MOVED, ASK, TRYAGAIN) is transient: the slot map is read again
        and the caller retries (HSETNX and SADD are idempotent)."""
        node = self.client.get_node_from_key(key)
        conn = self.client.get_redis_connection(node)
        pipe = conn.pipeline(transaction=False)
        commands(pipe)
        pipe.execute_command("WAIT", 1, self.REPLICA_WAIT_MS)
        try:
            replies = pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError):
            self._new_slot_map()  # the node may be gone: its replica serves the slot now
            raise
        except (redis.exceptions.AskError, redis.exceptions.TryAgainError,
                redis.exceptions.ClusterDownError) as exc:  # MOVED is an AskError
            self._new_slot_map()
            raise redis.ConnectionError(f"slot moving: {type(exc).__name__}: {exc}") from exc
        acked = replies[-1]
        for _ in range(self.WAIT_TRIES):
            if acked or not _replica_in_sync(conn):
                return replies[:-1]
            acked = conn.execute_command("WAIT", 1, self.REPLICA_WAIT_MS)
        log.warning("a registration is not on the replica yet; writing on",
                    extra={"fields": {"key": key}})
        return replies[:-1]

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
        streams = read_streams(self.client, self.keys, self.group, self.topic)
        self.langs = {v.decode() if isinstance(v, bytes) else v
                      for v in self.client.smembers(self.keys.langs)}
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
            applied = self.store.call(*progress_call(name, guards))
            if applied.refused:
                return self.check(owned)
            for p, _o, new in guards:
                held[p] = new
        return {}

    def call(self, call, wait: Wait, message: str = "redis unavailable, retrying"):
        """:meth:`BatchWriter.call`; a cluster's own failures (no node for a slot, a
        redirection loop during a failover or a reshard) are transient as well."""
        return super().call(lambda: cluster_transient(call), wait, message)


    def _new_slot_map(self) -> None:
        """Read the cluster's slot map again (redis-py does so for its own commands; this
        writer's direct connection to a node, for WAIT, is not one of them)."""
        with contextlib.suppress(redis.RedisError, redis.exceptions.RedisClusterException):
            self.client.nodes_manager.initialize()


_MOVING = (redis.exceptions.AskError, redis.exceptions.TryAgainError,
           redis.exceptions.ClusterDownError, redis.ConnectionError, redis.TimeoutError)
"""Replies of a node pipeline that mean the slot is moving or the node is gone (MOVED is an
AskError): transient."""


def _replica_in_sync(conn) -> bool:
    """Whether a replica of ``conn``'s node is connected and past its initial sync."""
    info = conn.info("replication")
    return any(isinstance(v, dict) and v.get("state") == "online"
               for k, v in info.items() if k.startswith("slave"))


def cluster_transient(call):
    """``call()``, a cluster's topology errors raised as ``redis.ConnectionError`` (which
    ``store.connection.transient`` retries): ``ClusterError`` ("TTL exhausted", CLUSTERDOWN)
    and ``SlotNotCoveredError`` (no node serves a slot, mid-failover). Other
    ``RedisClusterException``s are bugs (a refused command) and raise as they are."""
    try:
        return call()
    except (redis.exceptions.ClusterError, redis.exceptions.SlotNotCoveredError) as exc:
        raise redis.ConnectionError(f"{type(exc).__name__}: {exc}") from exc
