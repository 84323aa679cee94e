"""The title index behind ``GET /v1/{lang}/resources?q=``: built by ``recs resources load``
next to the catalogue, read a few pages at a time, so a search never reads the catalogue
whole (an HGETALL of 2M resources held Redis for over a second).

Layout (``Keys.titles(lang)``, a HASH replaced in the same step as ``Keys.resources``):

- one record per (word, resource) pair: the word (NFKC, case-folded, UTF-8, cut to
  :data:`WORD_BYTES` on a character boundary, NUL-padded) then the resource id as a
  big-endian uint32, so sorting the records as bytes sorts them by word, then id;
- field ``"0"``, ``"1"``, ...: pages of :data:`PAGE_RECORDS` records in that order;
- field ``dir``: the first record of every page; ``version``: unique per load.

Invariants:
- every word of every title is findable by any prefix of it; a query matches a title when
  each of its words is a prefix of one of the title's words (the index finds candidates for
  one query word, the title itself decides);
- a search reads the directory, the pages that hold :data:`CANDIDATES` records (two) and
  the details of at most that many resources: its cost does not grow with the catalogue;
  past that many records for its rarest word, the first ones (by word, then id) are ranked.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

WORD_BYTES = 16
"""Bytes of a word kept in a record (longer words are checked against the title)."""
RECORD = WORD_BYTES + 4
PAGE_RECORDS = 4096
"""Records per page: 80 KiB, one HGET of well under a millisecond."""
MAX_WORDS = 32
"""Distinct words indexed per title (a title is a title, not a document)."""
MAX_QUERY_WORDS = 8
CANDIDATES = 500
"""Resources whose details one search reads at most."""
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The distinct words of ``text`` as they are indexed and matched, in order."""
    return list(dict.fromkeys(_WORD.findall(unicodedata.normalize("NFKC", text).casefold())))


def word_key(word: str) -> bytes:
    """A word's bytes in a record: UTF-8 cut to :data:`WORD_BYTES` on a character boundary."""
    raw = word.encode()
    if len(raw) <= WORD_BYTES:
        return raw
    return raw[:WORD_BYTES].decode("utf-8", "ignore").encode()


class Records:
    """Collects the records of ``(resource id, title)`` pairs; :meth:`sorted` gives them in
    index order as an (n, RECORD) uint8 array."""

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._part: list[bytes] = []

    def add(self, rid: int, title: str) -> None:
        tail = int(rid).to_bytes(4, "big")
        self._part.extend(word_key(w).ljust(WORD_BYTES, b"\0") + tail
                          for w in words(title)[:MAX_WORDS])
        if len(self._part) >= 65536:
            self._flush()

    def _flush(self) -> None:
        self._chunks.append(np.frombuffer(b"".join(self._part), np.uint8))
        self._part = []

    def sorted(self) -> np.ndarray:
        self._flush()
        flat = np.concatenate(self._chunks).reshape(-1, RECORD)
        # Big-endian columns compare like the bytes: lexsort on them is the byte order.
        cols = flat.view(">u4").reshape(len(flat), RECORD // 4)
        return flat[np.lexsort(cols.T[::-1])]


def pages(sorted_records: np.ndarray, version: str) -> Iterator[dict[str, bytes]]:
    """The index's hash fields, a mapping of a few pages at a time (``dir`` and ``version``
    come last, so a reader never finds a directory naming pages not yet written)."""
    starts = range(0, len(sorted_records), PAGE_RECORDS)
    batch: dict[str, bytes] = {}
    for page, s in enumerate(starts):
        batch[str(page)] = sorted_records[s:s + PAGE_RECORDS].tobytes()
        if len(batch) == 8:
            yield batch
            batch = {}
    directory = b"".join(sorted_records[s].tobytes() for s in starts)
    yield {**batch, "dir": directory, "version": version.encode()}


# -- searching ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Where the records of one query word may lie: pages ``first`` .. ``last``."""

    word: str
    low: bytes
    high: bytes
    first: int
    last: int


def spans(directory: bytes, query_words: list[str]) -> list[Span]:
    """Per query word, the pages its records may be on (from the directory alone)."""
    heads = [directory[i:i + RECORD] for i in range(0, len(directory), RECORD)]
    out = []
    for w in query_words:
        key = word_key(w)
        low, high = key, key + b"\xff"  # UTF-8 never holds 0xff: an exclusive upper bound
        first = max(bisect_left(heads, low) - 1, 0)
        last = max(bisect_right(heads, high) - 1, first)
        out.append(Span(w, low, high, first, last))
    return out


def rarest(found: list[Span]) -> Span:
    """The span to read candidates from: fewest pages, then the longest word."""
    return min(found, key=lambda s: (s.last - s.first, -len(s.word)))


def page_numbers(span: Span) -> list[int]:
    """The pages to read for ``span``: enough to hold :data:`CANDIDATES` records from the
    first one on (two, with the defaults)."""
    more = -(-CANDIDATES // PAGE_RECORDS)
    return list(range(span.first, min(span.last, span.first + more) + 1))


def ids_in(span: Span, page_blobs: list[bytes], limit: int = CANDIDATES) -> list[int]:
    """Resource ids of the records of ``span``'s word prefix on consecutive pages, in record
    order, ``limit`` at most."""
    out: list[int] = []
    for blob in page_blobs:
        heads = [blob[i:i + WORD_BYTES] for i in range(0, len(blob), RECORD)]
        for pos in range(bisect_left(heads, span.low), len(heads)):
            if not heads[pos].startswith(span.low):
                return out  # sorted: every later record is past the prefix too
            at = pos * RECORD + WORD_BYTES
            out.append(int.from_bytes(blob[at:at + 4], "big"))
            if len(out) >= limit:
                return out
    return out


def ranked(found: dict[int, dict], query: str, query_words: list[str], n: int) -> list[int]:
    """Ids of the titles that match, titles starting with the query first, then by title."""
    needle = unicodedata.normalize("NFKC", query).casefold()
    keyed = []
    for rid, details in found.items():
        folded = unicodedata.normalize("NFKC", details.get("title", "")).casefold()
        own = _WORD.findall(folded)
        if all(any(t.startswith(q) for t in own) for q in query_words):
            keyed.append((not folded.startswith(needle), folded, rid))
    return [rid for *_, rid in sorted(keyed)[:n]]
