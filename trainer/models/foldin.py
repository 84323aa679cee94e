"""ALS fold-in: fresh user factors against fixed item factors, and top-N scoring.

With the item factors Y fixed, the implicit-feedback ALS objective (Hu, Koren and Volinsky
2008) separates per user; one user's factors are the solution of

    (Y^T Y + Y^T (C_u - I) Y + reg * I) x_u = Y^T C_u p_u

where C_u holds the user's confidences c = 1 + alpha * f(views) on the diagonal and p_u is 1
on the viewed items. That is exactly what ``implicit``'s ``recalculate_user`` /
``partial_fit_users`` solve (``implicit`` 0.7 adds ``reg * I`` unscaled, not multiplied by
the user's number of interactions), so a user folded in here gets the factors the trainer's
own library would give them. A model trained by Spark MLlib (``--engine spark``) solves
``reg * n_u * I`` instead, n_u the user's number of viewed resources; ``FoldIn(engine=
"spark")`` solves that objective. Pure numpy: no Redis, no Kafka.

The confidences are the trainer's: ``trainer.config.scale_confidence``. ``bm25`` also needs
each item's views over the training users, which the publisher stores beside the item factors.

Y^T Y + reg * I is the same for every user of one model, so :class:`FoldIn` computes it once
per model version; each batch then adds only the small per-user term and solves all users'
f x f systems in one stacked ``np.linalg.solve``. Scoring reuses the trainer's batched top-N
(``trainer.models.als.recommend_by_factors``), so folded-in and trained users rank alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from trainer.config import SCALINGS, scale_confidence
from trainer.data.matrix import Vocabulary
from trainer.models.als import recommend_by_factors, slot_ids


def gram(item_factors: np.ndarray, regularization: float) -> np.ndarray:
    """Y^T Y + reg * I in float64: the user-independent part of every fold-in system."""
    y = np.asarray(item_factors, dtype=np.float64)
    return y.T @ y + regularization * np.eye(y.shape[1])


def fold_in(
    confidence: sp.csr_matrix, item_factors: np.ndarray, item_gram: np.ndarray,
    reg_per_view: float = 0.0,
) -> np.ndarray:
    """Solve every row's user factors against fixed ``item_factors``.

    ``confidence``: users x items CSR of c = 1 + alpha * f(views) (what the trainer hands
    ``implicit``); ``item_gram``: :func:`gram` of the same item factors. ``reg_per_view``
    adds ``reg_per_view * (the row's number of entries) * I`` to each system: Spark's
    objective (its ``gram`` then has no regularization of its own). Returns float32
    (users x factors); a row with no entries gets zeros, as in ``implicit``.
    """
    confidence = confidence.tocsr()
    y = np.asarray(item_factors, dtype=np.float64)
    users, factors = confidence.shape[0], y.shape[1]
    out = np.zeros((users, factors), dtype=np.float32)
    indptr, indices = confidence.indptr, confidence.indices
    data = confidence.data.astype(np.float64)
    active = np.flatnonzero(np.diff(indptr))
    if active.size == 0:
        return out
    a = np.broadcast_to(item_gram, (active.size, factors, factors)).copy()
    b = np.zeros((active.size, factors))
    for k, u in enumerate(active):
        s, e = indptr[u], indptr[u + 1]
        y_u = y[indices[s:e]]
        c = data[s:e]
        # Y^T (C_u - I) Y: only the viewed items differ from the shared Y^T Y.
        a[k] += (y_u.T * (c - 1.0)) @ y_u
        a[k].flat[::factors + 1] += reg_per_view * (e - s)
        b[k] = c @ y_u
    out[active] = np.linalg.solve(a, b[..., None])[..., 0]
    return out


@dataclass
class FoldIn:
    """One published model's item side, prepared for folding users in.

    Built once per model version (the Gram matrix and the id -> row index cost a pass over
    the item factors); :meth:`solve` and :meth:`recommend` are then cheap per batch. Item ids
    must be unique (``ValueError`` otherwise), as every published model's are.
    """

    item_ids: np.ndarray
    """Resource id of each row of ``item_factors`` (uint32 in Redis)."""
    item_factors: np.ndarray
    """items x factors, float32, as trained."""
    regularization: float
    """The model's L2 penalty (unscaled, as ``implicit`` applies it)."""
    alpha: float
    """Confidence weight: c = 1 + alpha * f(views)."""
    scaling: str
    """f in the confidence; one of trainer.config.SCALINGS."""
    version: str = ""
    """The published model version these factors belong to."""
    item_totals: np.ndarray | None = None
    """Per-row total views over the training users; only ``bm25`` scaling needs them."""
    engine: str = "implicit"
    """The engine that trained the item factors (model hash ``engine``): ``spark`` scales
    the regularization by the user's number of viewed resources, the others do not."""
    _gram: np.ndarray = field(init=False, repr=False)
    _index: Vocabulary = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        self.item_factors = np.ascontiguousarray(self.item_factors, dtype=np.float32)
        if self.item_factors.ndim != 2 or self.item_factors.shape[0] != self.item_ids.size:
            raise ValueError(
                f"{self.item_ids.size} item ids for item factors of shape "
                f"{self.item_factors.shape}"
            )
        if self.scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {self.scaling!r}")
        if self.scaling == "bm25" and self.item_totals is None:
            raise ValueError("bm25 scaling needs item_totals (views per item over training)")
        self._reg_per_view = self.regularization if self.engine == "spark" else 0.0
        self._gram = gram(self.item_factors, self.regularization - self._reg_per_view)
        self._index = Vocabulary(self.item_ids, name="resource")

    @property
    def factors(self) -> int:
        return self.item_factors.shape[1]

    @property
    def items(self) -> int:
        return self.item_factors.shape[0]

    def rows_of(self, resource_ids: np.ndarray) -> np.ndarray:
        """Row of each resource id in this model, -1 for resources it does not know."""
        return self._index.numbers(np.asarray(resource_ids, dtype=np.int64), missing="negative")

    def views_matrix(self, counts: Iterable[Mapping[int, int]]) -> sp.csr_matrix:
        """users x items CSR of view counts, one row per ``{resource_id: count}``; resources
        the model does not know are dropped (they wait for the next retrain)."""
        counts = list(counts)
        lengths = np.fromiter((len(c) for c in counts), dtype=np.int64, count=len(counts))
        ids = np.fromiter((k for c in counts for k in c), dtype=np.int64, count=int(lengths.sum()))
        values = np.fromiter(
            (v for c in counts for v in c.values()), dtype=np.float32, count=ids.size
        )
        return self.views_from_arrays(lengths, ids, values)

    def views_from_arrays(
        self, lengths: np.ndarray, resource_ids: np.ndarray, values: np.ndarray
    ) -> sp.csr_matrix:
        """The same matrix from flat arrays: user ``u`` owns the next ``lengths[u]`` entries
        of ``resource_ids``/``values`` (how a pipelined read of many hashes arrives)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        user_rows = np.repeat(np.arange(lengths.size), lengths)
        item_rows = self.rows_of(resource_ids)
        known = item_rows >= 0
        matrix = sp.csr_matrix(
            (np.asarray(values, dtype=np.float32)[known], (user_rows[known], item_rows[known])),
            shape=(lengths.size, self.items), dtype=np.float32,
        )
        matrix.sum_duplicates()
        return matrix

    def solve(self, views: sp.csr_matrix) -> np.ndarray:
        """Fold-in factors (users x factors, float32) for rows of view counts, with the
        confidences the trainer computed for ``implicit``."""
        confidence = scale_confidence(views, self.scaling, self.alpha, self.item_totals)
        return fold_in(confidence, self.item_factors, self._gram, self._reg_per_view)

    def recommend(
        self, user_factors: np.ndarray, views: sp.csr_matrix, n: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best resources per user that are not in ``views``, best first: (resource
        ids int64, scores float32), both users x min(n, items). An empty slot (fewer items
        left) holds id 0 and score 0, as ``store.publish.Lists`` expects; a user whose
        factors are all zero (no known views) gets only empty slots, since every score would
        be a meaningless 0."""
        rows, scores = recommend_by_factors(user_factors, self.item_factors, n, exclude=views)
        empty = (rows < 0) | ~np.asarray(user_factors).any(axis=1)[:, None]
        return slot_ids(self.item_ids, rows, empty), np.where(empty, 0.0, scores).astype(np.float32)
