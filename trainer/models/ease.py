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
  float64 Gram matrix inverted in place, plus B in float32). Above ``EASE_MAX_RESOURCES``
  (1.2 GB at the limit) ``check_size`` refuses with one line before allocating anything.
- ``similar`` lists under EASE are rows of B: ``similar(j)`` ranks resources i by B[j, i],
  the weight a view of j adds to i's score (the list a user who viewed only j would get).
  Scores are those weights: unbounded reals, comparable within one model only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.errors import InputError
from trainer.config import EASE_SCALINGS, EaseConfig
from trainer.data.matrix import UtilityMatrix, Vocabulary
from trainer.models.als import slot_ids, top_n

log = logging.getLogger(__name__)

FORMAT = "recs.ease-model"
FORMAT_VERSION = 1
EASE_MAX_RESOURCES = 10_000
"""Largest catalogue EASE fits: ~1.2 GB at the peak of the fit, B itself 400 MB in float32."""


def fits(resources: int) -> bool:
    """Whether EASE takes a catalogue of this size (``auto`` falls back to ALS otherwise)."""
    return resources <= EASE_MAX_RESOURCES


def ease_fit_bytes(resources: int) -> int:
    """Peak bytes of a fit: float64 Gram/inverse (8 n^2) plus float32 B (4 n^2)."""
    return 12 * resources * resources


def check_size(resources: int, limit: int | None = None) -> None:
    """One clear line (InputError) when a catalogue is too big for EASE."""
    limit = EASE_MAX_RESOURCES if limit is None else limit
    if resources > limit:
        raise InputError(
            f"EASE needs O(resources^2) memory: {resources} resources would take "
            f"{ease_fit_bytes(resources) / 1e9:.1f} GB (limit {limit} resources); "
            "use --model als (or auto, which falls back to ALS)")


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

    check_size(x.shape[1])
    gram = (x.T @ x).toarray().astype(np.float64, copy=False)
    gram[np.diag_indices_from(gram)] += l2
    p = inv(gram, overwrite_a=True, check_finite=False)  # in place: one n^2 float64 buffer
    p /= -np.diag(p)[None, :]
    b = p.astype(np.float32)
    del p
    np.fill_diagonal(b, 0.0)
    return b


@dataclass
class EASEModel:
    """A trained EASE model for one language."""

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

    @property
    def seen(self) -> sp.csr_matrix:
        """1.0 where the user viewed the resource in training."""
        seen = self.rows.copy()
        seen.data[:] = 1.0
        return seen

    def score_rows(self, rows) -> np.ndarray:
        """Dense scores (float32) of users by row number, nothing excluded."""
        return np.asarray(self.rows[np.asarray(rows)] @ self.weights, dtype=np.float32)

    def recommend(self, user_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-n unviewed resources per user id; same shapes and -1 slots as ALSModel's."""
        rows = self.users.numbers(user_ids)
        idx, scores = recommend_rows(self.rows[rows], self.weights, n)
        return slot_ids(self.items.ids, idx, idx < 0, -1), scores

    def similar_items(self, resource_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-n resources by B[j, i] for each resource j, itself excluded."""
        rows = self.items.numbers(resource_ids)
        idx, scores = similar_rows(self.weights, rows, n)
        return self.items.ids[idx], scores

    @property
    def filename(self) -> str:
        return f"cf_EASEModel_l2{self.config.l2:g}_{self.config.scaling}_{self.lang}.dump"

    def to_dict(self) -> dict:
        x = self.rows.tocsr()
        return {"format": FORMAT, "version": FORMAT_VERSION, "lang": self.lang,
                "trained_at": self.trained_at, "config": asdict(self.config),
                "weights": np.ascontiguousarray(self.weights, dtype=np.float32),
                "user_ids": np.asarray(self.users.ids, dtype=str),
                "item_ids": np.asarray(self.items.ids, dtype=np.int64),
                "rows_data": x.data.astype(np.float32), "rows_indices": x.indices.astype(np.int32),
                "rows_indptr": x.indptr.astype(np.int64), "stats": self.stats}

    def save(self, model_dir: str | os.PathLike) -> Path:
        from trainer.models.als import save_doc

        return save_doc(self.to_dict(), Path(model_dir) / self.filename)


def recommend_rows(x: sp.csr_matrix, weights: np.ndarray, n: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Top-n column numbers and scores of each scaled row times B, the row's own resources
    excluded (-1 / -inf where nothing is left)."""
    return recommend_rows_with(x.tocsr(), weights, x.tocsr(), n)


def similar_rows(weights: np.ndarray, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-n of rows of B (column numbers, weights), the row's own resource excluded."""
    rows = np.asarray(rows, dtype=np.int64)
    scores = weights[rows].copy()
    scores[np.arange(len(rows)), rows] = -np.inf
    return top_n(scores, min(n, weights.shape[0] - 1))


def fit_ease(matrix: UtilityMatrix, config: EaseConfig, lang: str,
             stats: dict | None = None) -> EASEModel:
    """EASE on the matrix's views; refuses catalogues above ``EASE_MAX_RESOURCES``."""
    users, items = matrix.shape
    if users == 0 or items == 0 or matrix.nnz == 0:
        raise InputError(f"nothing to train on: {users} users x {items} resources after the "
                         "filters (lower --min-item-views / --min-user-views for small extracts)")
    check_size(items)
    started = time.perf_counter()
    x = ease_input(matrix.views, config.scaling)
    weights = ease_weights(x, config.l2)
    seconds = time.perf_counter() - started
    run_stats = {"users": users, "items": items, "nnz": matrix.nnz,
                 "sparsity": matrix.sparsity, "train_seconds": round(seconds, 3)}
    log.info("trained EASE", extra={"fields": {"lang": lang, **run_stats}})
    run_stats.update(stats or {})
    return EASEModel(weights=weights, rows=x, users=matrix.users, items=matrix.items,
                     config=config, lang=lang, stats=run_stats,
                     trained_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


def from_dict(doc: dict) -> EASEModel:
    """The model of a checked file document (``trainer.models.als.load_model`` dispatches here)."""
    weights = np.asarray(doc["weights"], dtype=np.float32)
    user_ids, item_ids = np.asarray(doc["user_ids"]), np.asarray(doc["item_ids"])
    n = len(item_ids)
    if weights.shape != (n, n):
        raise ValueError(f"B has shape {weights.shape}, expected {n} x {n}")
    rows = sp.csr_matrix((doc["rows_data"], doc["rows_indices"], doc["rows_indptr"]),
                         shape=(len(user_ids), n))
    return EASEModel(weights=weights, rows=rows, users=Vocabulary(user_ids, name="user"),
                     items=Vocabulary(item_ids, name="resource"),
                     config=EaseConfig(**dict(doc["config"])), lang=str(doc["lang"]),
                     trained_at=str(doc["trained_at"]), stats=dict(doc.get("stats") or {}))



@dataclass
class EaseRows:
    """The updater's side of a published EASE model: a user's list is their scaled view row
    times B, exact, and needs only the rows of B of the resources the user viewed.

    ``fetch(resource_ids)`` returns those rows as raw little-endian float32 bytes (None for
    a row it cannot find: the model was replaced meanwhile, and the version-checked write
    refuses the batch anyway). Rows are cached for the life of this object (one model
    version): at most B itself, 4 x resources^2 bytes. The same duck type as
    ``trainer.models.foldin.FoldIn`` for ``recs update``: no user factors (``factors`` is 0)."""

    item_ids: np.ndarray
    scaling: str
    fetch: Callable[[np.ndarray], list]
    version: str = ""
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        if self.scaling not in EASE_SCALINGS:
            raise ValueError(f"unknown EASE scaling {self.scaling!r}")
        self._index = Vocabulary(self.item_ids, name="resource")

    factors = 0

    @property
    def items(self) -> int:
        return self.item_ids.size

    def views_from_arrays(self, lengths, resource_ids, values) -> sp.csr_matrix:
        """users x items counts; resources the model does not know are dropped."""
        lengths = np.asarray(lengths, dtype=np.int64)
        rows = np.repeat(np.arange(lengths.size), lengths)
        cols = self._index.numbers(np.asarray(resource_ids, dtype=np.int64), missing="negative")
        known = cols >= 0
        out = sp.csr_matrix((np.asarray(values, dtype=np.float32)[known],
                             (rows[known], cols[known])), shape=(lengths.size, self.items))
        out.sum_duplicates()
        return out

    def views_matrix(self, counts) -> sp.csr_matrix:
        counts = list(counts)
        lengths = [len(c) for c in counts]
        ids = [k for c in counts for k in c]
        values = [v for c in counts for v in c.values()]
        return self.views_from_arrays(lengths, np.asarray(ids, dtype=np.int64), values)

    def solve(self, views: sp.csr_matrix) -> np.ndarray:
        return np.zeros((views.shape[0], 0), dtype=np.float32)

    def weights_of(self, columns: np.ndarray) -> np.ndarray:
        """Rows of B for these column numbers (len(columns) x items, float32)."""
        missing = [c for c in columns.tolist() if c not in self._cache]
        if missing:
            raw = self.fetch(self.item_ids[missing])
            for c, blob in zip(missing, raw, strict=True):
                row = (np.frombuffer(blob, dtype="<f4") if blob is not None
                       else np.zeros(self.items, dtype=np.float32))
                if row.size != self.items:
                    raise ValueError(f"a row of B has {row.size} weights, expected {self.items}")
                self._cache[c] = row
        out = np.empty((len(columns), self.items), dtype=np.float32)
        for i, c in enumerate(columns.tolist()):
            out[i] = self._cache[c]
        return out

    def recommend(self, user_factors, views: sp.csr_matrix, n: int
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(resource ids, scores) users x min(n, items), best first; empty slots 0 / 0.0, and
        a user with no known views gets only empty slots (as FoldIn.recommend)."""
        x = ease_input(views, self.scaling)
        columns = np.unique(x.indices)
        local = sp.csr_matrix((x.data, np.searchsorted(columns, x.indices), x.indptr),
                              shape=(x.shape[0], len(columns)))
        idx, scores = recommend_rows_with(local, self.weights_of(columns), x, n)
        empty = (idx < 0) | (np.diff(x.indptr) == 0)[:, None]
        return slot_ids(self.item_ids, idx, empty), np.where(empty, 0.0, scores).astype(np.float32)


def recommend_rows_with(local: sp.csr_matrix, rows_of_b: np.ndarray, x: sp.csr_matrix, n: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``recommend_rows`` when only the needed rows of B are at hand: ``local`` is x on
    those rows' columns, ``x`` the full rows (for excluding viewed resources)."""
    dense = np.asarray(local @ rows_of_b, dtype=np.float32).reshape(x.shape[0], -1)
    hit = np.repeat(np.arange(x.shape[0]), np.diff(x.indptr))
    dense[hit, x.indices] = -np.inf
    idx, val = top_n(dense, min(n, rows_of_b.shape[1]))
    idx[~np.isfinite(val)] = -1
    return idx, val
