"""RP3beta (Paudel et al. 2017; Dacrema et al. 2019): a sparse item-item graph model.

X is the users x resources matrix of scaled views (``binary`` or ``log``, as EASE's). P_ui is
X with each user's row normalised to sum 1, then raised element-wise to ``alpha``; P_iu the
same on X^T (each resource's row over its users). W = P_iu @ P_ui is the probability of a
three-step walk resource -> user -> resource; each column j is divided by popularity_j^beta
(popularity: how many users viewed j) so popular resources do not win every row, the
diagonal is 0, and only each row's ``neighbours`` largest weights are kept (optionally the
kept rows renormalised to sum 1). A user's scores are x_u @ W; ``similar(j)`` is row j of W.

Invariants:

- W is never dense: it is computed ``block_rows(resources)`` rows at a time (a sparse block
  of at most ``BLOCK_CELLS`` cells, pruned to top-k before the next), so a fit holds
  O(block x resources + resources x k), see :func:`fit_bytes`, and its time grows with the
  resources each walk reaches, not with resources^2. The result is float32 CSR with
  at most k entries per row.
- Every weight is >= 0, so a score of 0 means "not reached by any walk": such resources are
  never listed (a user's list is shorter than N when their walks reach fewer resources).
  Scores are unbounded positive reals, comparable within one model only.
- The fold-in is exact and stateless (:class:`PublishedRP3beta`): the updater needs only the
  published rows of W of the resources a user viewed (``store.item_rows``, sparse rows of
  resource ids and weights); there are no user factors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from core.errors import InputError
from trainer.config import ModelSpec, Rp3betaConfig
from trainer.data.matrix import UtilityMatrix
from trainer.data.vocabulary import Vocabulary
from trainer.models import memory
from trainer.models.base import ItemItemModel, check_trainable, fit_stats, utc_now
from trainer.models.ease import PublishedItemItem, ease_input, published_slots
from trainer.models.rank import sparse_top_n, top_n

log = logging.getLogger(__name__)

BLOCK_CELLS = 1 << 22
"""Cells of W computed at once at most (a block of rows x resources; sparse, so only what
the block's walks reach is held) before the top-k prune."""


DENSE_SHARE = 0.2
"""A block with more entries than this share of its cells is ranked dense."""


def block_rows(resources: int) -> int:
    """Rows of W per dense block."""
    return max(1, min(resources, BLOCK_CELLS // max(resources, 1)))


def fit_bytes(users: int, resources: int, nnz: int, neighbours: int) -> int:
    """Peak bytes of a fit: X, P_ui and P_iu (CSR, ~12 bytes a non-zero each, with scipy's
    int64 index copies during the products), one block at its densest (its CSR entries and
    the top-k's padded copies and indices, ~40 bytes a cell) and W (12 bytes an entry,
    twice while it is assembled)."""
    block = block_rows(resources) * resources * 40
    return 3 * 16 * nnz + 8 * (users + resources) + block + 2 * 12 * resources * neighbours


def refuse_spark(spec: ModelSpec) -> None:
    """One line where the ALS engine is Spark: RP3beta is fitted here, not by Spark."""
    if spec.als.engine == "spark":
        raise InputError("--engine spark fits ALS only; RP3beta is fitted in this process: "
                         "drop --engine spark, or use --model als with Spark")


def rows_to_one(m: sp.csr_matrix) -> sp.csr_matrix:
    """Each row of ``m`` divided by its sum (rows summing to 0 stay 0), float32 CSR."""
    sums = np.asarray(m.sum(axis=1)).ravel()
    scale = np.where(sums > 0, 1.0 / np.where(sums > 0, sums, 1.0), 0.0)
    return (sp.diags(scale.astype(np.float32)) @ m).tocsr()


def walk_matrices(x: sp.csr_matrix, alpha: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(P_ui, P_iu): X and X^T, rows normalised to sum 1 then raised to ``alpha``."""
    def normalised(m: sp.csr_matrix) -> sp.csr_matrix:
        m = rows_to_one(m.tocsr().astype(np.float32, copy=False))
        m.data = np.power(m.data, alpha, dtype=np.float32)
        return m

    return normalised(x), normalised(x.T.tocsr())


def _block_top_k(block: sp.csr_matrix, damp: np.ndarray, start: int, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k largest damped weights, its own resource (column start + row) out. A
    block whose walks reach most resources is ranked dense (faster there), others sparse."""
    rows = np.arange(block.shape[0])
    if block.nnz > DENSE_SHARE * block.shape[0] * block.shape[1]:
        dense = block.toarray()
        dense *= damp[None, :]
        dense[rows, start + rows] = 0.0
        return top_n(dense, k)
    block.data *= damp[block.indices]
    own = sp.csr_matrix((np.ones(len(rows)), (rows, start + rows)), shape=block.shape)
    return sparse_top_n(block, k, exclude=own)


def rp3beta_weights(x: sp.csr_matrix, config: Rp3betaConfig) -> sp.csr_matrix:
    """W (float32 CSR, resources x resources, <= k entries a row, zero diagonal) of ``x``."""
    n = x.shape[1]
    p_ui, p_iu = walk_matrices(x, config.alpha)
    popularity = np.bincount(x.indices, minlength=n).astype(np.float64)  # viewers each
    damp = np.where(popularity > 0, np.power(np.maximum(popularity, 1.0), -config.beta), 0.0)
    damp = damp.astype(np.float32)
    k = min(config.neighbours, max(n - 1, 1))
    step = block_rows(n)
    indptr, indices, data = [np.zeros(1, dtype=np.int64)], [], []
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = (p_iu[start:stop] @ p_ui).tocsr()  # sparse: what the block's walks reach
        cols, vals = _block_top_k(block, damp, start, k)
        keep = vals > 0
        indices.append(cols[keep])
        data.append(vals[keep].astype(np.float32))
        indptr.append(indptr[-1][-1] + np.cumsum(keep.sum(axis=1)))
    w = sp.csr_matrix((np.concatenate(data), np.concatenate(indices), np.concatenate(indptr)),
                      shape=(n, n), dtype=np.float32)
    w.sort_indices()
    return rows_to_one(w) if config.normalize else w


def rank_sparse(scores: sp.csr_matrix, seen: sp.csr_matrix | None, n: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Top-n columns of sparse score rows: seen resources out, and unreached ones (score 0,
    not stored) never listed. A row costs its reached resources, not the catalogue."""
    scores = scores.tocsr()
    scores.data[scores.data <= 0] = -np.inf  # only an explicit 0 can be stored: not reached
    return sparse_top_n(scores, n, seen)


@dataclass
class RP3betaModel(ItemItemModel):
    """A trained RP3beta model for one language."""

    family: ClassVar[str] = "rp3beta"
    scores_by_factors: ClassVar[bool] = False

    weights: sp.csr_matrix
    """W, float32 CSR, resources x resources, rows and columns in ``items`` order."""
    rows: sp.csr_matrix
    """X, the users' scaled training rows (float32 CSR); a user's scores are rows[u] @ W."""
    users: Vocabulary
    items: Vocabulary
    config: Rp3betaConfig
    lang: str
    trained_at: str
    stats: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, matrix: UtilityMatrix, spec: ModelSpec, lang: str, *, threads: int = 0,
            stats: dict | None = None) -> RP3betaModel:
        refuse_spark(spec)
        users, items = matrix.shape
        memory.check_fits(f"RP3beta on {items} resources",
                          cls.fit_bytes(users, items, matrix.nnz, spec), spec.memory_limit,
                          "lower --rp3-neighbours or use --model als")
        return fit_rp3beta(matrix, spec.rp3beta, lang, stats=stats)

    @staticmethod
    def fit_bytes(users: int, items: int, nnz: int, spec: ModelSpec) -> int:
        return fit_bytes(users, items, nnz, spec.rp3beta.neighbours)

    @classmethod
    def published(cls, meta, items, fetch) -> PublishedRP3beta:
        """The fold-in of the published model ``meta``: ``fetch(resource_ids)`` reads rows
        of W (``store.item_rows.read_rows`` of its version)."""
        return PublishedRP3beta(item_ids=items.item_ids, scaling=meta["rp3_scaling"],
                                fetch=fetch, version=items.version)

    def score_rows(self, rows) -> np.ndarray:
        """Dense scores (float32) of users by row number, nothing excluded."""
        return (self.rows[np.asarray(rows)] @ self.weights).toarray().astype(np.float32)

    def recommend_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n unviewed, reached columns of users by row number."""
        x = self.rows[np.asarray(rows)]
        return rank_sparse(x @ self.weights, x, n)

    def similar_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n of rows of W (its kept neighbours), the resource itself never listed."""
        rows = np.asarray(rows, dtype=np.int64)
        self_ = sp.csr_matrix((np.ones(len(rows)), (np.arange(len(rows)), rows)),
                              shape=(len(rows), len(self.items)))
        return rank_sparse(self.weights[rows], self_, min(n, len(self.items) - 1))

    def settings_fields(self) -> dict:
        c = self.config
        return {"factors": 0, "rp3_alpha": c.alpha, "rp3_beta": c.beta,
                "rp3_neighbours": c.neighbours, "rp3_scaling": c.scaling,
                "rp3_normalize": int(c.normalize)}


def fit_rp3beta(matrix: UtilityMatrix, config: Rp3betaConfig, lang: str,
                stats: dict | None = None) -> RP3betaModel:
    """RP3beta on the matrix's views."""
    check_trainable(matrix)
    started = time.perf_counter()
    x = ease_input(matrix.views, config.scaling)
    weights = rp3beta_weights(x, config)
    run_stats = fit_stats(matrix, time.perf_counter() - started)
    log.info("trained RP3beta", extra={"fields": {"lang": lang, **run_stats}})
    run_stats.update(stats or {})
    return RP3betaModel(weights=weights, rows=x, users=matrix.users, items=matrix.items,
                        config=config, lang=lang, stats=run_stats, trained_at=utc_now())


@dataclass
class PublishedRP3beta(PublishedItemItem):
    """A published RP3beta model as the updater folds users into it: rows of W are sparse
    row blobs (``store.item_rows``: little-endian uint32 resource ids, then float32 weights),
    at most 8 x resources x k bytes in all; a missing one is empty."""

    family_name: ClassVar[str] = "RP3beta"

    def decode(self, blob) -> tuple[np.ndarray, np.ndarray]:
        if blob is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        if len(blob) % 8:
            raise ValueError(f"a row of W has {len(blob)} bytes, not ids + weights")
        half = len(blob) // 2
        cols = self.rows_of(np.frombuffer(blob[:half], dtype="<u4").astype(np.int64))
        weights = np.frombuffer(blob[half:], dtype="<f4")
        known = cols >= 0
        return cols[known], weights[known].astype(np.float32)

    def weights_of(self, columns: np.ndarray) -> sp.csr_matrix:
        """Rows of W for these column numbers (len(columns) x items, float32 CSR)."""
        parts = self.cached_rows(columns)
        indptr = np.concatenate([[0], np.cumsum([len(p[0]) for p in parts])])
        indices = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
        data = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(len(columns), self.items),
                             dtype=np.float32)

    def sparse_scores(self, views: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(X, the scaled rows of ``views``; X @ W, sparse), from the rows of W of the viewed
        resources only."""
        x, local, columns = self.viewed(views)
        return x, (local @ self.weights_of(columns)).tocsr()

    def scores(self, views: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
        """(X; X @ W dense, users x items), as a blend mixes it."""
        x, scores = self.sparse_scores(views)
        return x, scores.toarray().astype(np.float32).reshape(x.shape[0], -1)

    def recommend(self, user_factors, views: sp.csr_matrix, n: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(resource ids, scores) users x min(n, items), best first; empty slots 0 / 0.0
        (unreached resources are not listed; a user with no known views gets only empty
        slots, as ``PublishedALS.recommend``)."""
        x, scores = self.sparse_scores(views)
        idx, vals = rank_sparse(scores, x, n)
        return published_slots(self.item_ids, idx, vals, x)
