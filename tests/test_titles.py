"""The title index (store/titles.py): what a search finds through it is exactly what a scan of
every title finds, across pages, long and non-ASCII words; and over real HTTP, a search reads
the index a few pages at a time, never the whole catalogue."""

from __future__ import annotations

import random
import unicodedata

import pytest

from store import titles
from store.titles import Records, ids_in, pages, ranked, rarest, spans, words

VOCAB = ["biology", "bio", "biochemistry", "cells", "cellular", "mitosis", "meiosis", "Énergie",
         "énergique", "ÉNERGIE", "straße", "STRASSE", "中文字", "数学", "x²", "2", "20", "2026",
         "photosynthesis-and-respiration", "supercalifragilisticexpialidocious",
         "supercalifragilisticexpialidociousness", "the", "of", "a", "unit", "quiz",
         "ﬁnal", "final", "e\u0301te\u0301", "été"]


def brute_force(catalogue: dict[int, str], query: str, n: int) -> list[int]:
    """Every title checked: each query word starts a word of the title; ranked as the index."""
    q = words(query)
    needle = unicodedata.normalize("NFKC", query).casefold()
    hits = []
    for rid, title in catalogue.items():
        own = words(title)
        if q and all(any(t.startswith(w) for t in own) for w in q):
            folded = unicodedata.normalize("NFKC", title).casefold()
            hits.append((not folded.startswith(needle), folded, rid))
    return [rid for *_, rid in sorted(hits)[:n]]


def through_index(fields: dict[str, bytes], catalogue: dict[int, str], query: str,
                  n: int) -> list[int]:
    """What AsyncRecsClient.search_titles does, on the fields the index holds."""
    q = words(query)[:titles.MAX_QUERY_WORDS]
    span = rarest(spans(fields["dir"], q))
    blobs = [fields[str(p)] for p in titles.page_numbers(span) if str(p) in fields]
    ids = ids_in(span, blobs, titles.CANDIDATES)
    assert len(ids) < titles.CANDIDATES, query  # the premise: every candidate is read
    found = {rid: {"title": catalogue[rid]} for rid in ids}
    return ranked(found, query, q, n)


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(titles, "PAGE_RECORDS", 64)  # many pages from a small catalogue
    monkeypatch.setattr(titles, "CANDIDATES", 600)


def test_the_index_finds_what_a_full_scan_finds(small_pages):
    rnd = random.Random(7)
    catalogue = {rnd.randrange(1, 2**32): " ".join(rnd.choice(VOCAB) for _ in range(
        rnd.randint(1, 6))) + f" #{i}" for i in range(900)}
    records = Records()
    for rid, title in catalogue.items():
        records.add(rid, title)
    fields = {}
    for batch in pages(records.sorted(), "v1"):
        fields.update(batch)
    assert len([f for f in fields if f.isdigit()]) > 20
    queries = ["bio", "BIO", "biology cells", "cell", "énerg", "ENERGIE", "strasse", "中文",
               "x²", "x2", "20", "2026", "supercalifragilisticexpialidociousn", "photo",
               "photosynthesis-and", "final", "ﬁn", "ete", "été", "#1", "quiz unit the",
               "zzz", "o", "a"]
    for q in queries + [rnd.choice(VOCAB)[:rnd.randint(2, 6)] for _ in range(60)]:
        expected = brute_force(catalogue, q, 10)
        assert through_index(fields, catalogue, q, 10) == expected, q
    assert brute_force(catalogue, "biology cells", 10)  # the check above is not vacuous


def test_records_sort_as_bytes():
    records = Records()
    for rid, title in [(2**32 - 1, "b a"), (1, "b"), (256, "a ab"), (65536, "ab")]:
        records.add(rid, title)
    rows = [bytes(r) for r in records.sorted()]
    assert rows == sorted(rows)
    assert [int.from_bytes(r[-4:], "big") for r in rows] == [256, 2**32 - 1, 256, 65536, 1,
                                                              2**32 - 1]
