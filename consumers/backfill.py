"""``recs backfill FILE --lang L``: a views CSV extract into the Redis counts, exactly once.

The rows go through the consumer's write path (store/counts.py), in chunks. Each chunk's
script call also moves the file's progress record in ``Keys.backfills`` (field
``{lang}:{sha256 of the decompressed content}``, value JSON) from the state it read to the
next one, compare-and-set, in the same atomic step as the chunk's counts. Hence:

- a load killed half-way leaves a record "k of n chunks done" that matches the counts
  exactly; running the same command again resumes at chunk k+1;
- a completed file is refused unless ``--force`` (which loads it again on purpose, adding
  its views a second time);
- two loads of the same file at once cannot both apply a chunk: the second one's guard
  fails and it stops with a message.

On a Redis Cluster the same holds per stream (consumers/backfill_streams.py): each chunk
goes to the language's item side and to every slot group, each call guarded by that
stream's own progress for the file, and the record is moved after them.

Digesting the decompressed bytes makes ``views.csv`` and ``views.csv.gz`` the same file.

A chunk is all or nothing: a refused script call (e.g. an internal key of the wrong type)
writes nothing and leaves the record at the previous chunk; a user whose views key is
poisoned has that user's views parked in the quarantine (``recs repair``), the rest of the
chunk is counted, and the load says so on stderr. Counts are bounded (``MAX_CSV_COUNT``) so
that a chunk's item totals are exact integers inside the script. A file without data rows
is refused and not recorded.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pandas as pd

from consumers.backfill_chunks import (
    BackfillResult,
    Rows,
    apply_with_retry,
    now,
    record_json,
    refused_by_another,
    report_parked,
)
from consumers.backfill_streams import load_streams
from core.contract import CONTROL_CHARACTERS, MAX_CSV_COUNT, valid_lang
from core.errors import InputError
from core.progress import Progress
from store.cluster_keys import layout
from store.connection import connect
from store.counts import Counts
from store.keys import Keys
from trainer.data.extracts import load_views

log = logging.getLogger("recs.backfill")

CHUNK_PAIRS = 20000
"""(user, resource) pairs per atomic step: big enough to be quick, small enough that one
script call holds Redis for only tens of milliseconds."""


def file_digest(path: str | Path) -> str:
    """sha256 of the file's content, decompressed first if it is gzip."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    h = hashlib.sha256()
    with (gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")) as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def backfill(client, keys: Keys, path: str | Path, lang: str, *, force: bool = False,
             skip_bad_rows: bool = False, chunk_pairs: int = CHUNK_PAIRS,
             on_chunk: Callable[[int, int], None] | None = None) -> BackfillResult:
    """Load ``path`` into ``lang``'s counts; see the module docstring. ``on_chunk(done,
    total)`` is called after each chunk is written."""
    if not valid_lang(lang):
        raise InputError(f"--lang {lang!r}: expected 2 or 3 lowercase letters (en, es, pt)")
    # The script sums a chunk's item totals as Lua doubles: exact below 2**53 only.
    if not 0 < chunk_pairs * MAX_CSV_COUNT < 2**53:
        raise InputError(f"chunk of {chunk_pairs} rows: item totals could exceed 2**53")
    digest, df = _read(path, skip_bad_rows)
    pairs, views = len(df), sum(df["views"].tolist())  # Python ints: exact at any size
    if pairs == 0:
        raise InputError(f"{path}: no data rows (a header only, or every row skipped); "
                         "nothing loaded, nothing recorded")
    chunks = max(1, -(-pairs // chunk_pairs))
    record = {"file": str(path), "lang": lang, "sha256": digest, "run": 1, "pairs": pairs,
              "views": views, "users": int(df["user_id"].nunique()),
              "items": int(df["resource_id"].nunique()), "chunk_pairs": chunk_pairs,
              "chunks": chunks}
    rows = Rows(df["user_id"].tolist(), df["resource_id"].tolist(), df["views"].tolist(),
                chunk_pairs)
    load = load_streams if keys.cluster else _load_one
    return load(client, keys, path, record, rows, force, on_chunk)


def _load_one(client, keys: Keys, path, record: dict, rows: Rows, force: bool,
              on_chunk) -> BackfillResult:
    """One Redis: each chunk and the record's move in one script call."""
    lang, chunks = record["lang"], record["chunks"]
    field = f"{lang}:{record['sha256']}"
    held, state, done, run = _progress(client, keys, field, path, lang, force,
                                       record["pairs"], rows.chunk_pairs, chunks)
    record = dict(record, run=run, started_at=(state or {}).get("started_at") if done else
                  now())
    counts = Counts(client, keys)
    for i in range(done, chunks):
        new_json = record_json(record, i + 1)
        applied = apply_with_retry(
            lambda h=held, j=new_json, i=i: counts.write(keys.backfills, [(field, h, j)],
                                                         {lang: rows.chunk(i)}), i, chunks)
        report_parked(applied.parked, path)
        refused_by_another(applied.refused, field, new_json, path, lang)
        held = new_json
        if on_chunk is not None:
            on_chunk(i + 1, chunks)
    return BackfillResult(field=field, pairs=record["pairs"], views=record["views"],
                          chunks=chunks, chunks_applied=chunks - done, resumed_at=done,
                          run=run)


def _read(path: str | Path, skip_bad_rows: bool) -> tuple[str, pd.DataFrame]:
    """The file's digest and its rows, in a stable order (the same chunks on every run of
    the same file: resuming)."""
    try:
        digest = file_digest(path)
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: unreadable ({exc})") from None
    df, report = load_views(path, skip_bad_rows=skip_bad_rows)
    for line in report.lines():
        log.info(line)
    df = _drop_control_characters(df, path, skip_bad_rows)
    return digest, df.sort_values(["user_id", "resource_id"], kind="stable").reset_index(drop=True)


def _progress(client, keys: Keys, field: str, path, lang: str, force: bool, pairs: int,
              chunk_pairs: int, chunks: int) -> tuple[str | None, dict | None, int, int]:
    """What Redis records of earlier loads of this file: (raw record, record, chunks done,
    run number); refuses a second complete load without ``force`` and a resume that would
    chunk differently."""
    held = client.hget(keys.backfills, field)
    held = held.decode() if isinstance(held, bytes) else held
    state = orjson.loads(held) if held else None
    done, run = 0, 1
    if state is not None and state.get("complete"):
        if not force:
            raise InputError(
                f"{path} was already loaded into {lang!r} ({state.get('views')} views, "
                f"{state.get('loaded_at')}); loading it again would count its views twice. "
                "Use --force to do that on purpose.")
        run = int(state.get("run", 1)) + 1
    elif state is not None:
        if (state.get("pairs"), state.get("chunk_pairs")) != (pairs, chunk_pairs):
            raise InputError(
                f"{path}: an interrupted load of this file into {lang!r} read it differently "
                f"({state.get('pairs')} rows then, {pairs} now): rerun it with the same "
                "--skip-bad-rows setting to resume it")
        done, run = int(state.get("chunks_done", 0)), int(state.get("run", 1))
        log.info("resuming an interrupted load", extra={"fields": {
            "file": str(path), "chunks_done": done, "chunks": chunks}})
    return held, state, done, run


def _drop_control_characters(df: pd.DataFrame, path, skip_bad_rows: bool) -> pd.DataFrame:
    """The contract forbids control characters in user ids; the CSV reader allows them."""
    bad = df["user_id"].astype(str).str.contains(CONTROL_CHARACTERS).to_numpy()
    if not bad.any():
        return df
    first = df["user_id"].iloc[int(bad.argmax())]
    if not skip_bad_rows:
        raise InputError(f"{path}: user_id {first!r} contains control characters "
                         f"({int(bad.sum())} rows; --skip-bad-rows skips such rows)")
    log.warning(f"{path}: skipped {int(bad.sum())} rows whose user_id has control characters")
    return df[~bad].reset_index(drop=True)


def cmd_backfill(args) -> int:
    client = connect(args.redis_url)
    progress: Progress | None = None

    def on_chunk(done: int, total: int) -> None:
        nonlocal progress
        if progress is None:
            progress = Progress(f"backfill {args.lang} chunks", total)
        progress(done)

    try:
        result = backfill(client, layout(client, args.prefix), args.file, args.lang,
                          force=args.force, skip_bad_rows=args.skip_bad_rows,
                          on_chunk=on_chunk)
    finally:
        client.close()
        if progress is not None:
            progress.close()
    what = "resumed and finished" if result.resumed_at else "loaded"
    print(f"{args.file}: {what} {result.pairs} (user, resource) rows, {result.views} views "
          f"into {args.lang!r} ({result.chunks_applied} of {result.chunks} chunks written now"
          f"{', reload #' + str(result.run) if result.run > 1 else ''})", file=sys.stdout)
    return 0
