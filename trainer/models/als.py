"""ALS (Hu, Koren and Volinsky 2008): the fit through ``implicit`` (or Spark MLlib), the fitted
model's lists, and the fold-in ``recs update`` solves users with between retrains.

- :func:`fit` / :meth:`ALSModel.fit`: confidence = ``scale_confidence(views)``, then
  ``implicit.cpu.als.AlternatingLeastSquares`` (alpha is applied by ``scale_confidence``, so
  ``implicit`` gets alpha=1), its CUDA build, or Spark's ALS (``trainer.models.spark_als``);
  rejects NaN/inf factors.
- :class:`ALSModel`: similar lists are cosines of item factors, a user's list the dot
  products of their factors with every resource's (viewed ones excluded).
- :class:`PublishedALS`: with the item factors Y fixed, the objective separates per user; one
  user's factors solve

      (Y^T Y + Y^T (C_u - I) Y + reg * I) x_u = Y^T C_u p_u

  where C_u holds the user's confidences on the diagonal and p_u is 1 on the viewed items.
  That is what ``implicit``'s ``recalculate_user`` / ``partial_fit_users`` solve (``implicit``
  0.7 adds ``reg * I`` unscaled), so a user folded in gets the factors the trainer's own
  library would give them. A model trained by Spark MLlib solves ``reg * n_u * I`` instead,
  n_u the user's number of viewed resources (``engine="spark"``). Y^T Y + reg * I is the same
  for every user of one model: it is computed once per version, and each batch solves all
  its users' f x f systems in one stacked ``np.linalg.solve``. ``bm25`` also needs each item's
  views over the training users, which the publisher stores beside the item factors.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from core.errors import InputError
from core.progress import Progress
from trainer.config import SCALINGS, AlsConfig, ModelSpec
from trainer.data.matrix import UtilityMatrix
from trainer.data.vocabulary import Vocabulary
from trainer.models import memory
from trainer.models.base import ItemSide, ListsById, check_trainable, fit_stats, utc_now
from trainer.models.confidence import scale_confidence
from trainer.models.rank import normalise_rows, recommend_by_factors, similar_by_index, slot_ids
from trainer.models.spark_als import fit_factors

log = logging.getLogger(__name__)

GPU_HINT = ("--engine implicit-gpu needs implicit built with CUDA and an NVIDIA GPU (conda "
            "install -c conda-forge implicit 'implicit-proc=*=gpu'); this implicit has no "
            "CUDA support")


@dataclass
class ALSModel(ListsById):
    """A trained model for one language: factors plus the ids they belong to."""

    family: ClassVar[str] = "als"
    scores_by_factors: ClassVar[bool] = True
    """A user's scores are their factors times the item factors (the publisher may score
    them with an index, ``trainer.scoring``)."""

    user_factors: np.ndarray
    """float32, users x factors, rows in ``users`` order."""
    item_factors: np.ndarray
    """float32, resources x factors, rows in ``items`` order."""
    users: Vocabulary
    items: Vocabulary
    config: AlsConfig
    lang: str
    trained_at: str
    """ISO 8601 UTC, e.g. 2025-11-27T10:00:00Z."""
    seen: sp.csr_matrix
    """users x resources, 1.0 where the user viewed the resource in training (excluded from
    that user's recommendations)."""
    stats: dict = field(default_factory=dict)
    """Plain facts about the run (nnz, train_seconds, filter report...), stored in the file."""
    _normed: np.ndarray | None = field(default=None, repr=False, compare=False)

    @classmethod
    def fit(cls, matrix: UtilityMatrix, spec: ModelSpec, lang: str, *, threads: int = 0,
            stats: dict | None = None) -> ALSModel:
        users, items = matrix.shape
        if spec.als.engine != "spark":  # Spark's fit is in its JVM, bounded by its own heap
            memory.check_fits(f"ALS on {users} users x {items} resources",
                              cls.fit_bytes(users, items, matrix.nnz, spec),
                              spec.memory_limit, "lower --factors")
        return fit(matrix, spec.als, lang, num_threads=threads, stats=stats)

    @staticmethod
    def fit_bytes(users: int, items: int, nnz: int, spec: ModelSpec) -> int:
        """Peak bytes of a fit: the views, the confidences and their transpose (CSR, 12
        bytes a non-zero each) and the factors twice (implicit's and the model's copy)."""
        return 36 * nnz + 8 * spec.als.factors * (users + items)

    @classmethod
    def published(cls, meta, items, fetch=None) -> PublishedALS:
        """The fold-in of the published model ``meta`` (its hash) with ``items`` (its item
        side: ids, factors and totals as ``store.published_model.read_published_items``
        reads them)."""
        return PublishedALS(item_ids=items.item_ids, item_factors=items.item_factors,
                            regularization=float(meta["regularization"]),
                            alpha=float(meta["alpha"]), scaling=meta["scaling"],
                            version=items.version, item_totals=items.item_totals,
                            engine=meta.get("engine", "implicit"))

    # -- scoring ----------------------------------------------------------------------------

    @property
    def item_rows(self) -> None:
        return None

    @property
    def similar_factors(self) -> np.ndarray:
        return self.item_factors

    def normed_item_factors(self) -> np.ndarray:
        """Item factors scaled to unit length (cached); all-zero rows stay zero."""
        if self._normed is None:
            self._normed = normalise_rows(self.item_factors)
        return self._normed

    def score_rows(self, rows) -> np.ndarray:
        """Dense scores (user factors . item factors) of users by row number."""
        return self.user_factors[np.asarray(rows)] @ self.item_factors.T

    def recommend_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n unviewed columns of users by row number."""
        return recommend_by_factors(self.user_factors[rows], self.item_factors, n,
                                    exclude=self.seen[rows])

    def similar_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-n cosine neighbours of resources by row number, themselves excluded."""
        return similar_by_index(self.normed_item_factors(), rows, n, normed=True)

    def settings_fields(self) -> dict:
        c = self.config
        return {"factors": c.factors, "regularization": c.regularization,
                "iterations": c.iterations, "alpha": c.alpha, "scaling": c.scaling,
                "seed": c.seed, "engine": c.engine}


# -- fitting ----------------------------------------------------------------------------------


def fit(matrix: UtilityMatrix, config: AlsConfig, lang: str, num_threads: int = 0,
        stats: dict | None = None) -> ALSModel:
    """Train ALS on the matrix's views with ``config.engine``. ``num_threads`` is
    ``implicit``'s (0 = all cores)."""
    from implicit.recommender_base import ModelFitError
    from threadpoolctl import threadpool_limits

    check_trainable(matrix)
    diverged = InputError(
        f"training diverged (NaN or infinite factors) with {config}; lower --alpha, raise "
        "--regularization or use another --scaling")
    with np.errstate(over="ignore"):
        confidence = scale_confidence(matrix.views, config.scaling, config.alpha)
    if not np.isfinite(confidence.data).all():
        raise diverged
    started = time.perf_counter()
    if config.engine == "spark":
        user_factors, item_factors = fit_factors(confidence, config)
    else:
        progress = Progress(f"{lang} fit iterations", config.iterations)
        # ALS solves many small systems itself; a multi-threaded BLAS underneath only contends.
        with threadpool_limits(1, "blas"):
            als = _implicit_als(config, num_threads)
            try:
                als.fit(confidence, show_progress=False,
                        callback=lambda iteration, *_: progress(iteration + 1))
            except ModelFitError:  # implicit's own NaN check
                raise diverged from None
        progress.close()
        user_factors, item_factors = _to_numpy(als.user_factors), _to_numpy(als.item_factors)
    seconds = time.perf_counter() - started
    user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
    item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
    if not (np.isfinite(user_factors).all() and np.isfinite(item_factors).all()):
        raise diverged
    seen = matrix.views.copy()
    seen.data = np.ones_like(seen.data, dtype=np.float32)
    run_stats = {"engine": config.engine, **fit_stats(matrix, seconds)}
    log.info("trained", extra={"fields": {"lang": lang, **run_stats}})
    run_stats.update(stats or {})
    return ALSModel(user_factors=user_factors, item_factors=item_factors, users=matrix.users,
                    items=matrix.items, config=config, lang=lang, seen=seen, stats=run_stats,
                    trained_at=utc_now())


def _implicit_als(config: AlsConfig, num_threads: int):
    """``implicit``'s ALS on the CPU, or its CUDA build for ``engine="implicit-gpu"``."""
    kwargs = dict(factors=config.factors, regularization=config.regularization, alpha=1.0,
                  iterations=config.iterations, random_state=config.seed)
    if config.engine == "implicit-gpu":
        import implicit.gpu

        if not implicit.gpu.HAS_CUDA:
            raise InputError(GPU_HINT)
        from implicit.gpu.als import AlternatingLeastSquares as GpuALS

        return GpuALS(**kwargs)
    from implicit.cpu.als import AlternatingLeastSquares

    return AlternatingLeastSquares(dtype=np.float32, num_threads=num_threads, **kwargs)


def _to_numpy(factors) -> np.ndarray:
    """implicit's GPU factors (implicit.gpu.Matrix) or CPU arrays as a numpy array."""
    return factors.to_numpy() if hasattr(factors, "to_numpy") else np.asarray(factors)


# -- the fold-in --------------------------------------------------------------------------------


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
class PublishedALS(ItemSide):
    """A published ALS model's item side, prepared for folding users in (module docstring).

    Built once per model version (the Gram matrix and the id -> row index cost a pass over
    the item factors); :meth:`fold_in` and :meth:`recommend` are then cheap per batch."""

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

    def __post_init__(self) -> None:
        self.index_items()
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

    @property
    def factors(self) -> int:
        return self.item_factors.shape[1]

    def fold_in(self, views: sp.csr_matrix) -> np.ndarray:
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
