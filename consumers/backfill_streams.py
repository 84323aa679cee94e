"""``recs backfill`` on a Redis Cluster: each chunk of a file written per stream
(docs/CLUSTER.md section 0, "Counts, exactly once per (partition, stream)").

A *stream* is one slot a language's counts are written in: its item side or one of its
slot groups. A load of a file has one progress hash per stream and *generation* (the run:
1 for the first load, 2 for the first ``--force`` reload...): ``item_offsets(L,
"backfill", f"{sha256}.{run}")`` and each group's ``group_offsets(...)`` (``BACKFILL_GROUP``,
:func:`stream_topic`), field ``"0"`` = the next chunk index. Invariants:

- chunk k goes to EVERY stream of the language, the item side first (the chunk's totals),
  then every slot group (one with no user in the chunk only moves its progress); each call
  is guarded by that stream's progress (expected k, absent for 0; new k+1) and sets it in
  the same script as the stream's counts: a stream gets each chunk once, whoever sends it.
- Hence a stream without a field had no chunk (its first chunk creates the field in the
  same replication unit as its counts), and the load's progress is the minimum over the
  streams, absent = 0: a stream whose node failed over and lost its last chunks is behind
  and gets them again, alone. A stream found at or above k+1 skips chunk k (another load,
  or a reply of this one that was lost).
- ``langs`` holds the language, on its replica, before the first chunk.
- The record in ``Keys.backfills`` (its own slot; field and JSON as on one Redis, plus the
  ``load`` token of the process writing it) is moved compare-and-set after a chunk's calls
  all landed: it shows "k of n" and names the generation, while the streams decide what is
  done (the resume point and "already loaded" are the minimum over them). A record moved by
  another load stops this one with the one-Redis message; one of this same load that went
  back (its node failed over) is moved on from.
"""

from __future__ import annotations

import logging
import secrets
import time
from itertools import islice

import orjson

from consumers.backfill_chunks import (
    BackfillResult,
    Rows,
    apply_with_retry,
    now,
    record_json,
    refused_by_another,
    report_parked,
)
from consumers.cluster_nodes import cluster_transient, evalsha_per_node, on_node
from consumers.retry import backoff, retry_redis
from core.errors import InputError
from store.counts import Counts, Parked, group_call, item_call, parse_reply, progress_call
from store.counts_script import APPLY_LUA
from store.keys import Keys
from store.progress import stream_keys

log = logging.getLogger("recs.backfill")

BACKFILL_GROUP = "backfill"
"""The consumer-group part of a backfill's progress hashes (no Kafka group is involved)."""
FIELD = "0"
"""The one field of a backfill progress hash: the next chunk index."""
ATTEMPTS = 12
"""Rounds of a chunk's calls in which nothing answered before the load gives up: waits of
0.2 s doubling to 3 s, about 25 s in all, longer than a primary's failover."""


def stream_topic(digest: str, run: int) -> str:
    """The topic part of a load's progress hashes (no ':' in it, like a Kafka topic)."""
    return f"{digest}.{run}"


class ChunkStreams:
    """The streams of one load (language ``lang``, file ``digest``, generation ``run``) and
    the progress this process believes each holds."""

    def __init__(self, client, keys: Keys, lang: str, digest: str, run: int) -> None:
        self.client, self.keys, self.lang, self.run = client, keys, lang, run
        self.item, *self.groups = stream_keys(keys, lang, BACKFILL_GROUP,
                                              stream_topic(digest, run))
        self.held: dict[str, int] = {}
        self.went_back: dict[str, int] = {}
        self.script = client.register_script(APPLY_LUA)
        self.calls = 0

    def read(self) -> dict[str, int]:
        """Every stream's progress as Redis holds it (absent: 0), into ``held``."""
        def read():
            pipe = self.client.pipeline(transaction=False)
            for name in [self.item, *self.groups]:
                pipe.hget(name, FIELD)
            return pipe.execute()
        replies = self._retry(read)
        self.held = {name: int(v or 0)
                     for name, v in zip([self.item, *self.groups], replies, strict=True)}
        return self.held

    def done(self) -> int:
        """Chunks every stream holds: where the load resumes."""
        return min(self.held.values())

    def started(self) -> bool:
        """Whether any stream holds a chunk of this generation."""
        return max(self.held.values()) > 0

    def register(self) -> None:
        """``langs`` holds the language (replicated) before the first chunk is written."""
        langs = self.keys.langs
        self._retry(lambda: on_node(self.client, langs,
                                    lambda pipe: pipe.sadd(langs, self.lang)))

    def write(self, k: int, users: dict[str, dict[int, int]]) -> list[Parked]:
        """Chunk ``k`` (``{user: {resource: views}}``) to every stream that holds k: the item
        side first, then the slot groups pipelined per node. Returns what was parked."""
        parked: list[Parked] = []
        if self.held[self.item] == k:
            totals: dict[int, int] = {}
            for pairs in users.values():
                for rid, n in pairs.items():
                    totals[rid] = totals.get(rid, 0) + n
            guards = [(FIELD, k or None, k + 1)]
            call = item_call(self.keys, self.lang, self.item, guards, totals)
            self.calls += 1
            reply = self._retry(lambda: self.script(keys=call[0], args=call[1]))
            parked += self._noted(self.item, k, parse_reply(reply))
        by_group: dict[int, dict] = {}
        for user, pairs in users.items():
            by_group.setdefault(self.keys.group_of(user), {})[user] = pairs
        pending = [(g, name) for g, name in enumerate(self.groups) if self.held[name] == k]
        while pending:
            parked += self._retry(lambda: self._send_groups(pending, k, by_group))
        if self.went_back:
            log.warning("streams' progress went back (their node lost writes); their chunks "
                        "are written again", extra={"fields": {"chunk": k,
                                                               "streams": self.went_back}})
            self.went_back = {}
        return parked

    def _send_groups(self, pending: list, k: int, by_group: dict) -> list[Parked]:
        """One round of the groups' calls, pipelined per node; those answered leave
        ``pending``. Raises (for the retry) only when nothing was answered."""
        guards = [(FIELD, k or None, k + 1)]
        calls = []
        for g, name in pending:
            users = by_group.get(g)
            calls.append(group_call(self.keys.in_group(g), self.lang, name, guards, users)
                         if users else progress_call(name, guards))
        self.calls += len(calls)
        answered, error = evalsha_per_node(self.client, self.script, calls)
        parked: list[Parked] = []
        for i, reply in answered:
            parked += self._noted(pending[i][1], k, parse_reply(reply))
        gone = {i for i, _reply in answered}
        if error is not None and not gone:
            raise error
        pending[:] = [s for i, s in enumerate(pending) if i not in gone]
        return parked

    def _noted(self, name: str, k: int, applied) -> list[Parked]:
        """A stream's reply: applied, it holds k+1; refused, it holds what Redis said (at
        or above k+1: the chunk is there already; below k: it lost chunks, sent again)."""
        if applied.refused:
            held = applied.refused.get(FIELD)
            self.held[name] = int(held or 0)
            if self.held[name] < k:
                self.went_back[name] = self.held[name]
            return []
        self.held[name] = k + 1
        return applied.parked

    def _retry(self, call):
        """``call()`` retried over outages and a cluster's topology errors."""
        return retry_redis(lambda: cluster_transient(call), time.sleep,
                           islice(backoff(0.2, 3.0), ATTEMPTS - 1), log)



def load_streams(client, keys: Keys, path, record: dict, rows: Rows, force: bool,
                 on_chunk) -> BackfillResult:
    """A Redis Cluster: each chunk per stream (module docstring), the record in
    ``backfills`` moved compare-and-set after the chunk's calls all landed."""
    lang, chunks = record["lang"], record["chunks"]
    field = f"{lang}:{record['sha256']}"
    held, state = read_record(client, keys, field)
    streams = generation(client, keys, path, record, state, force)
    mine = state is not None and int(state.get("run", 1)) == streams.run
    record = dict(record, run=streams.run, load=secrets.token_hex(6),
                  started_at=state.get("started_at") if mine and streams.started() else now())
    mark = (state.get("chunks_done"), state.get("complete")) if mine else None
    streams.register()
    counts = Counts(client, keys)
    resumed_at = k = min(streams.done(), chunks)
    while True:
        if mark != (k, k == chunks):
            held = move_record(counts, keys, path, record, held, k)
            mark = (k, k == chunks)
        if k == chunks:
            break
        # Retried inside, per call; here only worded for the user.
        report_parked(apply_with_retry(lambda k=k: streams.write(k, rows.chunk(k)), k, chunks,
                                       attempts=1), path)
        k = min(streams.done(), chunks)
        if on_chunk is not None:
            on_chunk(k, chunks)
    return BackfillResult(field=field, pairs=record["pairs"], views=record["views"],
                          chunks=chunks, chunks_applied=chunks - resumed_at,
                          resumed_at=resumed_at, run=streams.run)


def move_record(counts: Counts, keys: Keys, path, record: dict, held: str | None,
                done: int) -> str:
    """The record in ``backfills`` moved from ``held`` to ``done`` chunks, compare-and-set;
    returns what it holds now. Found holding a record of this same load (or none), its
    node failed over and lost our last move: moved on from that. Another load's record:
    the user is told and this load stops."""
    field, chunks = f"{record['lang']}:{record['sha256']}", record["chunks"]
    new_json = record_json(record, done)
    for _ in range(2):
        guards = [(field, held, new_json)]
        applied = apply_with_retry(lambda g=guards: cluster_transient(lambda: counts.call(
            *progress_call(keys.backfills, g))), done, chunks, ATTEMPTS)
        if not applied.refused:
            return new_json
        there = applied.refused.get(field)
        if there == new_json or there is not None and \
                orjson.loads(there).get("load") != record["load"]:
            break
        held = there
    refused_by_another(applied.refused, field, new_json, path, record["lang"])
    return new_json


def read_record(client, keys: Keys, field: str) -> tuple[str | None, dict | None]:
    """The file's progress record in ``backfills``: (raw JSON, parsed), both None if none."""
    held = client.hget(keys.backfills, field)
    held = held.decode() if isinstance(held, bytes) else held
    return held, orjson.loads(held) if held else None


def generation(client, keys: Keys, path, record: dict, state: dict | None,
               force: bool) -> ChunkStreams:
    """The streams this load writes: from the record's run on, the first generation whose
    streams do not all hold every chunk (or the record's own unfinished run: its record is
    then only moved to complete). A fresh one after a complete one is refused without
    ``force``; resuming the record's own run checks the rows are read the same."""
    lang, chunks = record["lang"], record["chunks"]
    recorded = int(state.get("run", 1)) if state else None
    run, advanced = recorded or 1, False
    while True:
        streams = ChunkStreams(client, keys, lang, record["sha256"], run)
        streams.read()
        # The record's own run is done by the record's chunking (a resume must keep it).
        own = run == recorded
        need = int(state.get("chunks", chunks)) if own else chunks
        if streams.done() < need or (own and not state.get("complete")):
            break
        run, advanced = run + 1, True
    if advanced and not streams.started() and not force:
        raise InputError(
            f"{path} was already loaded into {lang!r} ({(state or record).get('views')} "
            f"views, {(state or {}).get('loaded_at')}); loading it again would count its "
            "views twice. Use --force to do that on purpose.")
    if streams.started() and run == recorded and (
            state.get("pairs"), state.get("chunk_pairs")) != (record["pairs"],
                                                             record["chunk_pairs"]):
        raise InputError(
            f"{path}: an interrupted load of this file into {lang!r} read it differently "
            f"({state.get('pairs')} rows then, {record['pairs']} now): rerun it with the "
            "same --skip-bad-rows setting to resume it")
    if streams.started():
        log.info("resuming an interrupted load", extra={"fields": {
            "file": str(path), "chunks_done": streams.done(), "chunks": chunks}})
    return streams
