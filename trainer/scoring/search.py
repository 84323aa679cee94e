"""Top-N search over factors for the publisher: exact (faiss flat inner-product search) or
approximate (``trainer.scoring.ann``), chosen per list kind by ``--similar-method`` /
``--recs-method`` (``trainer.scoring_config.ScoringConfig``).

Invariants, whatever the method:

- a user's list never holds a resource the user viewed in training, and a similar list never
  holds the resource itself;
- a list is ``min(n, resources the user has not viewed)`` long (similar lists
  ``min(n, resources - 1)``): candidates are over-fetched by the number of excluded
  resources, and a row the approximate index could not fill is scored again exactly;
- scores are the same dot products (cosines for similar lists) as
  ``trainer.models.rank.recommend_by_factors`` / ``similar_by_index``: the index stores the factors
  uncompressed, so every returned score is exact, only the candidate set is approximate.

Exact search on a large catalogue goes through faiss' ``IndexFlatIP``: the same float32
matrix products as the numpy path, but its top-k runs in C++ on blocks of the score matrix as
they are produced, instead of numpy materialising every score and ``argpartition``-ing whole
rows. Small catalogues keep the numpy path (``ScoringConfig.faiss_min_items``).

Over-fetching: a user with ``s`` viewed resources needs at most ``n + s`` candidates. Users
are grouped by that need rounded up to a power of two, so one search call serves many users
and nobody pays for the heaviest viewer's ``k``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from trainer.models.rank import normalise_rows, recommend_by_factors
from trainer.scoring.ann import ivf_search
from trainer.scoring_config import AnnConfig, ScoringConfig

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""(queries float32 q x f, k) -> (scores q x k, column numbers q x k, -1 where none)."""


def flat_search(factors: np.ndarray) -> Search:
    """Exact inner-product search over ``factors`` (rows = columns of the result)."""
    import faiss

    index = faiss.IndexFlatIP(factors.shape[1])
    index.add(np.ascontiguousarray(factors, dtype=np.float32))

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    return search


def numpy_search(factors: np.ndarray) -> Search:
    """Exact inner-product search in numpy (``trainer.models.rank.recommend_by_factors``):
    matrix products in cache-sized blocks and ``argpartition``; for small catalogues."""
    factors = np.ascontiguousarray(factors, dtype=np.float32)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        cols, scores = recommend_by_factors(queries, factors, k)
        return scores, cols

    return search


def search_excluding(search: Search, queries: np.ndarray, exclude: sp.csr_matrix, n: int,
                     items: int, fallback: Search | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Top-n columns per query row, columns marked in ``exclude`` (CSR, one row per query)
    left out. Returns (columns int64, scores float32), q x min(n, items), best first; -1 and
    -inf where fewer than n columns remain. ``fallback`` (exact) rescores rows ``search``
    returned too few candidates for."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    exclude = exclude.tocsr()
    n = min(n, items)
    out_idx = np.full((len(queries), n), -1, dtype=np.int64)
    out_val = np.full((len(queries), n), -np.inf, dtype=np.float32)
    if n == 0 or len(queries) == 0:
        return out_idx, out_val
    excluded = np.diff(exclude.indptr)
    want = np.minimum(n, items - excluded)  # what each full list holds
    need = np.minimum(n + excluded, items)
    bucket = np.minimum(2 ** np.ceil(np.log2(np.maximum(need, 1))).astype(np.int64), items)
    short = []
    for k in np.unique(bucket):
        rows = np.flatnonzero(bucket == k)
        scores, cols = search(queries[rows], int(k))
        idx, val, got = _drop_excluded(cols, scores, exclude[rows], n)
        out_idx[rows], out_val[rows] = idx, val
        short.append(rows[got < want[rows]])
    short = np.concatenate(short)
    if short.size and fallback is not None:
        out_idx[short], out_val[short] = search_excluding(
            fallback, queries[short], exclude[short], n, items)
    return out_idx, out_val


def _drop_excluded(cols: np.ndarray, scores: np.ndarray, exclude: sp.csr_matrix, n: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep each row's first n candidates that are found (>= 0) and not excluded, in their
    (best-first) order; returns (columns, scores, how many each row kept)."""
    b, k = cols.shape
    width = np.int64(max(exclude.shape[1], 1))
    row_of = np.repeat(np.arange(b, dtype=np.int64), np.diff(exclude.indptr))
    banned = row_of * width + exclude.indices.astype(np.int64)
    keys = np.arange(b, dtype=np.int64)[:, None] * width + np.maximum(cols, 0)
    keep = (cols >= 0) & ~np.isin(keys, banned)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :n]  # kept first, order kept
    idx = np.take_along_axis(cols, order, axis=1).astype(np.int64)
    val = np.take_along_axis(scores, order, axis=1).astype(np.float32)
    kept = np.take_along_axis(keep, order, axis=1)
    if idx.shape[1] < n:  # fewer candidates than n (k < n only when items < n)
        pad = n - idx.shape[1]
        idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=-1)
        val = np.pad(val, ((0, 0), (0, pad)), constant_values=-np.inf)
        kept = np.pad(kept, ((0, 0), (0, pad)), constant_values=False)
    idx[~kept], val[~kept] = -1, -np.inf
    return idx, val, kept.sum(axis=1)


class Scorer:
    """One model's item side, indexed once for every batch of the publish.

    ``user_lists`` scores dot products against the item factors, ``similar_lists`` cosines
    between resources; each with its method resolved from ``config`` by catalogue size."""

    def __init__(self, item_factors: np.ndarray, config: ScoringConfig | None = None,
                 ann_config=None) -> None:
        self.config = config or ScoringConfig()
        self.items = int(item_factors.shape[0])
        self._raw = np.ascontiguousarray(item_factors, dtype=np.float32)
        self._unit: np.ndarray | None = None
        self._ann_config = ann_config
        self._indexes: dict[str, Search] = {}
        self.recs_method = self.config.resolve(self.config.recs_method, self.items,
                                               self.config.recs_ann_min_items)
        self.similar_method = self.config.resolve(self.config.similar_method, self.items)

    def unit(self) -> np.ndarray:
        if self._unit is None:
            self._unit = normalise_rows(self._raw)
        return self._unit

    def _index(self, kind: str) -> Search:
        """``exact-raw``, ``exact-unit``, ``ann-raw`` or ``ann-unit``, built on first use."""
        if kind not in self._indexes:
            method, space = kind.split("-")
            factors = self._raw if space == "raw" else self.unit()
            if method == "exact" and self.items < self.config.faiss_min_items:
                self._indexes[kind] = numpy_search(factors)
            elif method == "exact":
                self._indexes[kind] = flat_search(factors)
            else:
                self._indexes[kind] = ivf_search(factors, self._ann_config or AnnConfig(),
                                                 inner_product=space == "raw")
        return self._indexes[kind]

    def user_lists(self, user_factors: np.ndarray, seen: sp.csr_matrix, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Top-n unviewed columns per user (column numbers, scores); -1 / -inf when empty."""
        with _faiss_threads(self.config.threads):
            return search_excluding(self._index(f"{self.recs_method}-raw"), user_factors,
                                    seen, n, self.items, fallback=self._index("exact-raw"))

    def similar_lists(self, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n cosine neighbours per item row, the row itself excluded."""
        rows = np.asarray(rows, dtype=np.int64)
        self_only = sp.csr_matrix((np.ones(len(rows), dtype=np.float32),
                                   (np.arange(len(rows)), rows)),
                                  shape=(len(rows), self.items))
        with _faiss_threads(self.config.threads):
            return search_excluding(self._index(f"{self.similar_method}-unit"),
                                    self.unit()[rows], self_only, min(n, self.items - 1),
                                    self.items, fallback=self._index("exact-unit"))


class _faiss_threads:
    """faiss' OpenMP thread count for a block of calls (a process-wide setting)."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def __enter__(self) -> None:
        import faiss

        self.before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)

    def __exit__(self, *exc) -> None:
        import faiss

        faiss.omp_set_num_threads(self.before)
