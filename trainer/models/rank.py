"""Top-N kernels every model family ranks with: batched top-n of score rows, seen-resource
masking, cosine neighbours and dot-product lists over factors.

Results are column numbers and scores, best first, one row per query; a slot with nothing
left to fill (a user who viewed nearly everything) holds column -1 and score -inf.
:func:`slot_ids` turns columns into resource ids with one empty-slot rule. Scores are
computed in blocks of about ``_CHUNK_CELLS`` cells, so memory stays bounded on big
catalogues whatever the number of queries.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

# Scores for this many cells at a time (4 MiB of float32): bounds memory on big catalogues,
# and blocks that fit in cache made top-N of 4,000 resources ~5x faster than one 64 MiB block.
_CHUNK_CELLS = 1 << 20


def normalise_rows(factors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return (factors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def slot_ids(ids: np.ndarray, idx: np.ndarray, empty: np.ndarray, fill: int = 0) -> np.ndarray:
    """Column numbers ``idx`` -> resource ids ``ids[idx]``; ``fill`` where ``empty`` (the one
    empty-slot mapping: ``-1`` for the model-file lookups, ``0`` for what is published, as
    ``store.publish.Lists`` expects)."""
    return np.where(empty, fill, ids[np.maximum(idx, 0)])


def as_rows(ids: np.ndarray, scores: np.ndarray) -> list[tuple[int, float]]:
    """One result row as [(resource_id, score)], empty (-1) slots dropped."""
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]


def top_n(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Column numbers and values of each row's n largest scores, best first (argpartition)."""
    n = min(n, scores.shape[1])
    if n <= 0:
        empty = np.empty((scores.shape[0], 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    if n < scores.shape[1]:
        part = np.argpartition(scores, -n, axis=1)[:, -n:]
    else:
        part = np.broadcast_to(np.arange(n), scores.shape).copy()
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return (np.take_along_axis(part, order, axis=1).astype(np.int64),
            np.take_along_axis(vals, order, axis=1))


def mask_seen(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """``scores`` (changed in place and returned) with -inf where ``seen`` (CSR, one row per
    score row) has an entry: what a user viewed never ranks."""
    block = seen.tocsr()
    scores[np.repeat(np.arange(block.shape[0]), np.diff(block.indptr)), block.indices] = -np.inf
    return scores


def top_n_filled(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_n` with column -1 wherever the score is not finite (a masked slot)."""
    idx, val = top_n(scores, n)
    idx[~np.isfinite(val)] = -1
    return idx, val


def sparse_top_n(scores: sp.csr_matrix, n: int, exclude: sp.csr_matrix | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_n_filled` of the stored entries of each CSR row (absent entries never
    rank), with ``exclude``'s entries (CSR, same shape) left out: for sparse score rows a
    row costs its entries, not the catalogue. Rows are ranked in groups of similar length
    (padded to the next power of two), so one heavy row does not widen every other.
    Empty slots are -1 / -inf."""
    scores = scores.tocsr()
    scores.sort_indices()
    n = min(n, scores.shape[1])
    lengths = np.diff(scores.indptr)
    rows = np.repeat(np.arange(scores.shape[0]), lengths)
    values = scores.data.astype(np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        values[_members(rows, scores.indices, exclude.tocsr(), scores.shape[1])] = -np.inf
    out_idx = np.full((scores.shape[0], n), -1, dtype=np.int64)
    out_val = np.full((scores.shape[0], n), -np.inf, dtype=np.float32)
    widths = np.left_shift(1, np.ceil(np.log2(np.maximum(lengths, max(n, 1)))).astype(int))
    slot = np.arange(scores.nnz) - np.repeat(scores.indptr[:-1], lengths)
    for width in np.unique(widths):
        members = np.flatnonzero(widths == width)
        local = np.full(scores.shape[0], -1)
        local[members] = np.arange(len(members))
        take = local[rows] >= 0
        dense = np.full((len(members), width), -np.inf, dtype=np.float32)
        cols = np.full((len(members), width), -1, dtype=np.int64)
        dense[local[rows[take]], slot[take]] = values[take]
        cols[local[rows[take]], slot[take]] = scores.indices[take]
        at, vals = top_n_filled(dense, n)
        out_idx[members] = np.where(at >= 0, np.take_along_axis(cols, np.maximum(at, 0), 1), -1)
        out_val[members] = vals
    return out_idx, out_val


def _members(rows: np.ndarray, cols: np.ndarray, of: sp.csr_matrix, width: int) -> np.ndarray:
    """Whether each (row, col) is an entry of ``of`` (CSR, sorted indices), by binary search
    of row-major keys."""
    of.sort_indices()
    keys = np.repeat(np.arange(of.shape[0]), np.diff(of.indptr)) * width + of.indices
    wanted = rows.astype(np.int64) * width + cols
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return keys[at] == wanted


def _chunks(total: int, width: int):
    step = max(1, _CHUNK_CELLS // max(width, 1))
    for start in range(0, total, step):
        yield slice(start, min(start + step, total))


def similar_by_index(item_factors: np.ndarray, rows, n: int, normed: bool = False
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Top-n cosine neighbours (column numbers, scores) of item rows ``rows``, self excluded.

    ``normed=True`` says ``item_factors`` are already unit length (saves a pass).
    """
    unit = item_factors if normed else normalise_rows(item_factors)
    rows = np.asarray(rows, dtype=np.int64)
    n = min(n, unit.shape[0] - 1)
    out_idx = np.empty((len(rows), max(n, 0)), dtype=np.int64)
    out_val = np.empty((len(rows), max(n, 0)), dtype=np.float32)
    for part in _chunks(len(rows), unit.shape[0]):
        query = rows[part]
        scores = unit[query] @ unit.T
        scores[np.arange(len(query)), query] = -np.inf
        out_idx[part], out_val[part] = top_n(scores, n)
    return out_idx, out_val


def recommend_by_factors(user_vectors: np.ndarray, item_factors: np.ndarray, n: int,
                         exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-n items by dot product for each user vector; ``exclude`` (CSR, one row per vector)
    marks items to leave out. Returns (column numbers, scores); empty slots are -1 / -inf."""
    user_vectors = np.atleast_2d(np.asarray(user_vectors, dtype=np.float32))
    n = min(n, item_factors.shape[0])
    if exclude is not None:
        exclude = exclude.tocsr()
        if exclude.shape[0] != user_vectors.shape[0]:
            raise ValueError("exclude needs one row per user vector")
    out_idx = np.empty((len(user_vectors), n), dtype=np.int64)
    out_val = np.empty((len(user_vectors), n), dtype=np.float32)
    for part in _chunks(len(user_vectors), item_factors.shape[0]):
        scores = user_vectors[part] @ item_factors.T
        if exclude is not None:
            mask_seen(scores, exclude[part])
        out_idx[part], out_val[part] = top_n_filled(scores, n)
    return out_idx, out_val
