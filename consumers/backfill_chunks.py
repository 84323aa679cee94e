"""The pieces of ``recs backfill`` (consumers/backfill.py) that one Redis and a Redis Cluster
share: the rows cut into chunks, the progress record's JSON, the result, one chunk's call
retried over short outages, and what a refusal or a parked user tells the user.

Invariants: a file's rows are in one stable order, so chunk ``i`` is the same rows on every
run of the same file (resuming); a chunk's call is only ever retried when resending it is
safe (it is guarded by the progress it moves).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

import orjson
import redis

from consumers.retry import backoff, retry_redis
from core.errors import InputError, RecsError
from store.counts import Applied, Parked

log = logging.getLogger("recs.backfill")


@dataclass
class BackfillResult:
    field: str
    """The progress record's field in Keys.backfills."""
    pairs: int
    views: int
    chunks: int
    chunks_applied: int
    """Chunks written by this run (fewer than ``chunks`` when it resumed)."""
    resumed_at: int
    """Chunks a previous, interrupted run had already written."""
    run: int
    """1 for the first load of the file, 2 for the first forced reload..."""


@dataclass
class Rows:
    """The file's rows in their stable order, cut into chunks of ``chunk_pairs``."""

    users: list
    items: list
    views: list
    chunk_pairs: int

    def chunk(self, i: int) -> dict[str, dict[int, int]]:
        """Chunk ``i`` as ``{user: {resource: views}}``."""
        lo, hi = i * self.chunk_pairs, (i + 1) * self.chunk_pairs
        batch: dict[str, dict[int, int]] = {}
        for user, rid, n in zip(self.users[lo:hi], self.items[lo:hi], self.views[lo:hi],
                                strict=True):
            batch.setdefault(user, {})[rid] = n
        return batch


def record_json(record: dict, done: int) -> str:
    """The progress record after ``done`` of its chunks."""
    last = done == record["chunks"]
    return orjson.dumps(dict(record, chunks_done=done, complete=last,
                             **({"loaded_at": now()} if last else {}))).decode()


def refused_by_another(refused: dict, field: str, new_json: str, path, lang: str) -> None:
    """Raise when the record's compare-and-set found another load's move (== new_json:
    our own retried call landed)."""
    if refused and refused.get(field) != new_json:
        raise InputError(
            f"{path}: another load of this file into {lang!r} changed its progress while "
            "this one ran; nothing was counted twice. Run the command again to resume.")


def apply_with_retry(call: Callable[[], Applied], i: int, chunks: int,
                     attempts: int = 5) -> Applied:
    """One chunk's ``call()``, retried over short Redis outages (``attempts`` calls at most).
    Resending is safe: the progress guard refuses a chunk that already landed (the caller
    recognises its own record)."""
    try:
        return retry_redis(call, time.sleep, islice(backoff(0.2, 3.0), attempts - 1), log)
    except redis.ResponseError as exc:
        raise RecsError(f"Redis refused chunk {i + 1} of {chunks} ({exc}); nothing of it "
                        "was written and it is not recorded as done: fix that, then run "
                        "the same command again to resume") from None
    except redis.RedisError as exc:
        raise RecsError(f"Redis unavailable ({exc}) after {i} of {chunks} chunks; "
                        "run the same command again to resume") from None


def report_parked(parked: list[Parked], path) -> None:
    for p in parked:
        log.error("views parked in the quarantine: their key refuses increments; fix or "
                  "delete it, then run `recs repair`", extra={"fields": {
                      "file": str(path), "lang": p.lang, "user": p.user or None,
                      "reason": p.reason}})


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
