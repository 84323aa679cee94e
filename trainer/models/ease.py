"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders"): an item-item model in closed form.

B = I - P / diag(P) with P = (X^T X + l2 I)^-1, then diag(B) = 0, where X is the users x
resources matrix of scaled views (``binary``: 1 per viewed resource; ``log``: log(1 + views)).
A user's scores are their scaled row times B, so a user who just viewed something is exactly
re-scored from their own row: no per-user state is fitted.

Invariants:

- The Gram matrix and its inverse are computed in float64: X^T X of a popular catalogue has
  entries in the hundreds of thousands next to l2 ~ 100, and a float32 inverse of that loses
  the small weights that rank the tail. B is then kept in float32 (scores only need ranking
  precision, and B is the big thing that is stored and shipped: 4 x resources^2 bytes).
- Memory is O(resources^2): the fit peaks at about ``ease_fit_bytes(n)`` = 12 n^2 bytes (the
  float64 Gram matrix inverted in place, plus B in float32): 1.2 GB at 10,000 resources,
  37 GB at 55,000. ``check_size`` refuses with one line before allocating anything where
  that exceeds the memory limit (``trainer.models.memory``: the machine's available memory
  unless ``--memory-limit`` says otherwise).
- ``similar`` lists under EASE are rows of B: ``similar(j)`` ranks resources i by B[j, i],
  the weight a view of j adds to i's score (the list a user who viewed only j would get).
  Scores are those weights: unbounded reals, comparable within one model only.
- The fold-in is exact and stateless (:class:`PublishedEASE`): the updater needs only the
  rows of B of the resources a user viewed; there are no user factors.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from trainer.config import EASE_SCALINGS, EaseConfig, ModelSpec
from trainer.data.matrix import UtilityMatrix
from trainer.data.vocabulary import Vocabulary
from trainer.models import memory
from trainer.models.base import ItemItemModel, ItemSide, check_trainable, fit_stats, utc_now
from trainer.models.rank import mask_seen, slot_ids, top_n, top_n_filled

log = logging.getLogger(__name__)

def ease_fit_bytes(resources: int) -> int:
    """Peak bytes of a fit: float64 Gram/inverse (8 n^2) plus float32 B (4 n^2)."""
    return 12 * resources * resources


def fits(resources: int, memory_limit: int | None = None) -> bool:
    """Whether EASE's fit of this many resources fits in memory (``auto`` falls back to ALS
    otherwise)."""
    return memory.fits(ease_fit_bytes(resources), memory_limit)


def max_resources(memory_limit: int | None = None) -> int | None:
    """The largest catalogue EASE fits within the limit (None: no limit known)."""
    have, _ = memory.limit_bytes(memory_limit)
    return None if have is None else math.isqrt(have // 12)


def check_size(resources: int, memory_limit: int | None = None) -> None:
    """One clear line (InputError) when a catalogue is too big for EASE."""
    memory.check_fits(f"EASE (O(resources^2) memory) on {resources} resources",
                      ease_fit_bytes(resources), memory_limit,
                      "use --model rp3beta or als (auto falls back to ALS)")


def ease_input(views: sp.csr_matrix, scaling: str) -> sp.csr_matrix:
    """X: the scaled view rows (float32 CSR, same sparsity as ``views``)."""
    out = views.tocsr().astype(np.float32)
    if scaling == "binary":
        out.data[:] = 1.0
    elif scaling == "log":
        out.data = np.log1p(out.data).astype(np.float32)
    else:
        raise ValueError(f"unknown EASE scaling {scaling!r}")
    return out


def ease_weights(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """B (float32, resources x resources, zero diagonal) of the scaled rows ``x``."""
    from scipy.linalg import inv

    gram = (x.T @ x).toarray().astype(np.float64, copy=False)
    gram[np.diag_indices_from(gram)] += l2
    p = inv(gram, overwrite_a=True, check_finite=False)  # in place: one n^2 float64 buffer
    p /= -np.diag(p)[None, :]
    b = p.astype(np.float32)
    del p
    np.fill_diagonal(b, 0.0)
    return b


@dataclass
class EASEModel(ItemItemModel):
    """A trained EASE model for one language."""

    family: ClassVar[str] = "ease"
    scores_by_factors: ClassVar[bool] = False

    weights: np.ndarray
    """B, float32, resources x resources, rows and columns in ``items`` order."""
    rows: sp.csr_matrix
    """X, the users' scaled training rows (float32 CSR); a user's scores are rows[u] @ B."""
    users: Vocabulary
    items: Vocabulary
    config: EaseConfig
    lang: str
    trained_at: str
    stats: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, matrix: UtilityMatrix, spec: ModelSpec, lang: str, *, threads: int = 0,
            stats: dict | None = None) -> EASEModel:
        return fit_ease(matrix, spec.ease, lang, stats=stats, memory_limit=spec.memory_limit)

    @staticmethod
    def fit_bytes(users: int, items: int, nnz: int, spec: ModelSpec) -> int:
        """Peak bytes of a fit (``ease_fit_bytes``; X is small beside it)."""
        return ease_fit_bytes(items) + 12 * nnz

    @classmethod
    def published(cls, meta, items, fetch) -> PublishedEASE:
        """The fold-in of the published model ``meta``: ``fetch(resource_ids)`` reads rows of
        B (``store.item_rows.read_rows`` of its version)."""
        return PublishedEASE(item_ids=items.item_ids, scaling=meta["ease_scaling"],
                             fetch=fetch, version=items.version)

    def score_rows(self, rows) -> np.ndarray:
        """Dense scores (float32) of users by row number, nothing excluded."""
        return np.asarray(self.rows[np.asarray(rows)] @ self.weights, dtype=np.float32)

    def recommend_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n unviewed columns of users by row number."""
        return recommend_rows(self.rows[rows], self.weights, n)

    def similar_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n resources by B[j, i] for resources j by row number, themselves excluded."""
        return similar_rows(self.weights, rows, n)

    def settings_fields(self) -> dict:
        return {"factors": 0, "ease_l2": self.config.l2, "ease_scaling": self.config.scaling}


def recommend_rows(x: sp.csr_matrix, weights: np.ndarray, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Top-n column numbers and scores of each scaled row times B, the row's own resources
    excluded (-1 / -inf where nothing is left)."""
    x = x.tocsr()
    dense = np.asarray(x @ weights, dtype=np.float32).reshape(x.shape[0], -1)
    return top_n_filled(mask_seen(dense, x), min(n, weights.shape[1]))


def similar_rows(weights: np.ndarray, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n of rows of B (column numbers, weights), the row's own resource excluded."""
    rows = np.asarray(rows, dtype=np.int64)
    scores = weights[rows].copy()
    scores[np.arange(len(rows)), rows] = -np.inf
    return top_n(scores, min(n, weights.shape[0] - 1))


def fit_ease(matrix: UtilityMatrix, config: EaseConfig, lang: str,
             stats: dict | None = None, memory_limit: int | None = None) -> EASEModel:
    """EASE on the matrix's views; refuses catalogues too big for ``memory_limit`` (None:
    the available memory) before allocating anything."""
    check_trainable(matrix)
    check_size(matrix.shape[1], memory_limit)
    started = time.perf_counter()
    x = ease_input(matrix.views, config.scaling)
    weights = ease_weights(x, config.l2)
    run_stats = fit_stats(matrix, time.perf_counter() - started)
    log.info("trained EASE", extra={"fields": {"lang": lang, **run_stats}})
    run_stats.update(stats or {})
    return EASEModel(weights=weights, rows=x, users=matrix.users, items=matrix.items,
                     config=config, lang=lang, stats=run_stats, trained_at=utc_now())


@dataclass
class PublishedItemItem(ItemSide):
    """What the published item-item models (EASE's B, RP3beta's W) share as the updater's
    fold-in side: no user factors (``factors`` is 0); a user's scores are their scaled view
    row times the weights, which need only the rows of the resources the user viewed.

    ``fetch(resource_ids)`` returns those rows as the family's blobs (``decode``; None for a
    row it cannot find: the model was replaced meanwhile, and the version-checked write
    refuses the batch anyway). Rows are cached for the life of this object (one model
    version): at most the published weights themselves."""

    item_ids: np.ndarray
    scaling: str
    fetch: Callable[[np.ndarray], list]
    version: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    factors: ClassVar[int] = 0
    family_name: ClassVar[str] = "EASE"

    def __post_init__(self) -> None:
        self.index_items()
        if self.scaling not in EASE_SCALINGS:
            raise ValueError(f"unknown {self.family_name} scaling {self.scaling!r}")

    def fold_in(self, views: sp.csr_matrix) -> np.ndarray:
        """No factors to solve: users x 0."""
        return np.zeros((views.shape[0], 0), dtype=np.float32)

    def decode(self, blob):
        """One fetched row (``blob`` None: the row is missing) as the family keeps it."""
        raise NotImplementedError

    def cached_rows(self, columns: np.ndarray) -> list:
        """The decoded rows of these column numbers, fetched once each."""
        missing = [c for c in columns.tolist() if c not in self._cache]
        if missing:
            for c, blob in zip(missing, self.fetch(self.item_ids[missing]), strict=True):
                self._cache[c] = self.decode(blob)
        return [self._cache[c] for c in columns.tolist()]

    def viewed(self, views: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        """(X, the scaled rows of ``views``; X restricted to the viewed columns; those
        column numbers): X @ W equals that restriction times those columns' rows of W."""
        x = ease_input(views, self.scaling)
        columns = np.unique(x.indices)
        local = sp.csr_matrix((x.data, np.searchsorted(columns, x.indices), x.indptr),
                              shape=(x.shape[0], len(columns)))
        return x, local, columns


@dataclass
class PublishedEASE(PublishedItemItem):
    """A published EASE model as the updater folds users into it: rows of B are raw
    little-endian float32 bytes, a missing one is all zeros."""

    def decode(self, blob) -> np.ndarray:
        row = (np.frombuffer(blob, dtype="<f4") if blob is not None
               else np.zeros(self.items, dtype=np.float32))
        if row.size != self.items:
            raise ValueError(f"a row of B has {row.size} weights, expected {self.items}")
        return row

    def weights_of(self, columns: np.ndarray) -> np.ndarray:
        """Rows of B for these column numbers (len(columns) x items, float32)."""
        out = np.empty((len(columns), self.items), dtype=np.float32)
        for i, row in enumerate(self.cached_rows(columns)):
            out[i] = row
        return out

    def scores(self, views: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
        """(X, the scaled rows of ``views``; X @ B, dense, users x items), from the rows of B
        of the viewed resources only."""
        x, local, columns = self.viewed(views)
        dense = np.asarray(local @ self.weights_of(columns), dtype=np.float32)
        return x, dense.reshape(x.shape[0], -1)

    def recommend(self, user_factors, views: sp.csr_matrix, n: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(resource ids, scores) users x min(n, items), best first; empty slots 0 / 0.0, and
        a user with no known views gets only empty slots (as ``PublishedALS.recommend``)."""
        x, dense = self.scores(views)
        idx, scores = top_n_filled(mask_seen(dense, x), min(n, self.items))
        return published_slots(self.item_ids, idx, scores, x)

def published_slots(item_ids: np.ndarray, idx: np.ndarray, scores: np.ndarray,
                    x: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Lists as the updater writes them: ids and scores, 0 / 0.0 in empty slots and for every
    slot of a user without known views (a row of ``x`` with no entries)."""
    empty = (idx < 0) | (np.diff(x.indptr) == 0)[:, None]
    return slot_ids(item_ids, idx, empty), np.where(empty, 0.0, scores).astype(np.float32)
