"""The ALS model: fitting through ``implicit``, batched top-N scoring, and the model file.

- ``fit(matrix, config, lang) -> ALSModel``: confidence = ``scale_confidence(views)``, then
  ``implicit.cpu.als.AlternatingLeastSquares`` (alpha is applied by ``scale_confidence``, so
  ``implicit`` gets alpha=1); rejects NaN/inf factors.
- ``ALSModel.similar_items(resource_ids, n)``: cosine similarity of item factors, the resource
  itself excluded. ``ALSModel.recommend(user_ids, n)``: dot products, resources the user viewed
  in training excluded. Both take many ids at once and return ``(ids, scores)`` arrays of shape
  (queries, n), best first; a slot with nothing left to fill (a user who viewed nearly
  everything) holds id -1 and score -inf. ``as_rows`` turns one row into [(id, score)].
- The module-level ``similar_by_index``/``recommend_by_factors``/``top_n`` are the same math on
  row numbers and raw factors, for callers that solve user factors themselves (the updater).
- ``ALSModel.save(model_dir) -> Path`` / ``load_model(path)``: a joblib file holding one plain
  dict of numpy arrays, strings and numbers (no class instances, so it survives refactors),
  marked with ``FORMAT``/``FORMAT_VERSION``. Loading checks the marker, version, shapes and
  dtypes and raises ``ModelFileError`` otherwise. joblib files are pickles: load only files
  you trust (the checks catch mistakes, not attacks).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.errors import InputError, ModelFileError
from trainer.config import TrainConfig, scale_confidence
from trainer.data.matrix import UtilityMatrix, Vocabulary

log = logging.getLogger(__name__)

GPU_HINT = ("--engine implicit-gpu needs implicit built with CUDA and an NVIDIA GPU (conda "
            "install -c conda-forge implicit 'implicit-proc=*=gpu'); this implicit has no "
            "CUDA support")
FORMAT = "recs.als-model"
FORMAT_VERSION = 1
DEFAULT_SCALING = TrainConfig().scaling

# Scores for this many cells at a time (4 MiB of float32): bounds memory on big catalogues,
# and blocks that fit in cache made top-N of 4,000 resources ~5x faster than one 64 MiB block.
_CHUNK_CELLS = 1 << 20


@dataclass
class ALSModel:
    """A trained model for one language: factors plus the ids they belong to."""

    user_factors: np.ndarray
    """float32, users x factors, rows in ``users`` order."""
    item_factors: np.ndarray
    """float32, resources x factors, rows in ``items`` order."""
    users: Vocabulary
    items: Vocabulary
    config: TrainConfig
    lang: str
    trained_at: str
    """ISO 8601 UTC, e.g. 2025-11-27T10:00:00Z."""
    seen: sp.csr_matrix
    """users x resources, 1.0 where the user viewed the resource in training (excluded from
    that user's recommendations)."""
    stats: dict = field(default_factory=dict)
    """Plain facts about the run (nnz, train_seconds, filter report...), stored in the file."""
    _normed: np.ndarray | None = field(default=None, repr=False, compare=False)

    # -- scoring ----------------------------------------------------------------------------

    def similar_items(self, resource_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-n resources by cosine similarity for each resource id, itself excluded.

        Returns (resource ids int64, scores float32), shape (len(resource_ids), n'), with
        n' = min(n, resources - 1). Unknown ids raise ``InputError``.
        """
        rows = self.items.numbers(resource_ids)
        idx, scores = similar_by_index(self.normed_item_factors(), rows, n, normed=True)
        return self.items.ids[idx], scores

    def recommend(self, user_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-n resources for each user id, resources viewed in training excluded.

        Returns (resource ids int64, scores float32), shape (len(user_ids), min(n, resources));
        empty slots hold id -1 and score -inf. Unknown ids raise ``InputError``.
        """
        rows = self.users.numbers(user_ids)
        idx, scores = recommend_by_factors(
            self.user_factors[rows], self.item_factors, n, exclude=self.seen[rows]
        )
        return slot_ids(self.items.ids, idx, idx < 0, -1), scores

    def normed_item_factors(self) -> np.ndarray:
        """Item factors scaled to unit length (cached); all-zero rows stay zero."""
        if self._normed is None:
            self._normed = normalise_rows(self.item_factors)
        return self._normed

    # -- the file ---------------------------------------------------------------------------

    @property
    def filename(self) -> str:
        """``cf_ALSModel_fa40_re0.01_it50_al50_en.dump``; ``_sc{scaling}`` and
        ``_{engine}`` go before the language only when not the shipped defaults."""
        c = self.config
        scaling = "" if c.scaling == DEFAULT_SCALING else f"_sc{c.scaling}"
        engine = "" if c.engine == "implicit" else f"_{c.engine}"
        return (f"cf_ALSModel_fa{c.factors}_re{c.regularization:g}_it{c.iterations}"
                f"_al{c.alpha:g}{scaling}{engine}_{self.lang}.dump")

    def to_dict(self) -> dict:
        """The file's content: plain numpy arrays, strings and numbers only."""
        seen = self.seen.tocsr()
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "lang": self.lang,
            "trained_at": self.trained_at,
            "config": asdict(self.config),
            "user_factors": np.ascontiguousarray(self.user_factors, dtype=np.float32),
            "item_factors": np.ascontiguousarray(self.item_factors, dtype=np.float32),
            "user_ids": np.asarray(self.users.ids, dtype=str),
            "item_ids": np.asarray(self.items.ids, dtype=np.int64),
            "seen_indptr": seen.indptr.astype(np.int64),
            "seen_indices": seen.indices.astype(np.int32),
            "stats": self.stats,
        }

    def save(self, model_dir: str | os.PathLike) -> Path:
        """Write ``model_dir/filename`` atomically (temp file + rename); returns the path."""
        return save_doc(self.to_dict(), Path(model_dir) / self.filename)


def save_doc(doc: dict, path: Path) -> Path:
    """Write a model file's document atomically (temp file + rename); returns the path."""
    import joblib

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        joblib.dump(doc, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def as_rows(ids: np.ndarray, scores: np.ndarray) -> list[tuple[int, float]]:
    """One result row as [(resource_id, score)], empty (-1) slots dropped."""
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]


# -- fitting ----------------------------------------------------------------------------------


def fit(matrix: UtilityMatrix, config: TrainConfig, lang: str, num_threads: int = 0,
        stats: dict | None = None) -> ALSModel:
    """Train ALS on the matrix's views with ``config.engine``. ``num_threads`` is
    ``implicit``'s (0 = all cores)."""
    from implicit.recommender_base import ModelFitError
    from threadpoolctl import threadpool_limits

    users, items = matrix.shape
    if users == 0 or items == 0 or matrix.nnz == 0:
        raise InputError(
            f"nothing to train on: {users} users x {items} resources after the filters "
            "(lower --min-item-views / --min-user-views for small extracts)"
        )
    diverged = InputError(
        f"training diverged (NaN or infinite factors) with {config}; lower --alpha, raise "
        "--regularization or use another --scaling")
    with np.errstate(over="ignore"):
        confidence = scale_confidence(matrix.views, config.scaling, config.alpha)
    if not np.isfinite(confidence.data).all():
        raise diverged
    started = time.perf_counter()
    if config.engine == "spark":
        from trainer.models.spark_als import fit_factors

        user_factors, item_factors = fit_factors(confidence, config)
    else:
        from core.progress import Progress

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
    run_stats = {"engine": config.engine, "users": users, "items": items, "nnz": matrix.nnz,
                 "sparsity": matrix.sparsity, "train_seconds": round(seconds, 3)}
    log.info("trained", extra={"fields": {"lang": lang, **run_stats}})
    run_stats.update(stats or {})
    return ALSModel(
        user_factors=user_factors, item_factors=item_factors, users=matrix.users,
        items=matrix.items, config=config, lang=lang, seen=seen, stats=run_stats,
        trained_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _implicit_als(config: TrainConfig, num_threads: int):
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


# -- batched top-N ------------------------------------------------------------------------------


def normalise_rows(factors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    return (factors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def slot_ids(ids: np.ndarray, idx: np.ndarray, empty: np.ndarray, fill: int = 0) -> np.ndarray:
    """Column numbers ``idx`` -> resource ids ``ids[idx]``; ``fill`` where ``empty`` (the one
    empty-slot mapping: ``-1`` for the model-file lookups, ``0`` for what is published, as
    ``store.publish.Lists`` expects)."""
    return np.where(empty, fill, ids[np.maximum(idx, 0)])


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
            block = exclude[part]
            hit_rows = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
            scores[hit_rows, block.indices] = -np.inf
        idx, val = top_n(scores, n)
        idx[~np.isfinite(val)] = -1
        out_idx[part], out_val[part] = idx, val
    return out_idx, out_val


# -- loading ------------------------------------------------------------------------------------


def load_model(path: str | os.PathLike) -> ALSModel:
    """Read a model file written by ``ALSModel.save``; ``ModelFileError`` if it is not one."""
    import joblib

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model file")
    try:
        doc = joblib.load(p)
    except Exception as exc:  # any unreadable file is the same mistake for the user
        raise ModelFileError(
            f"{p}: not a model file of ours (unreadable: {type(exc).__name__})") from None
    readers = _readers()
    kind = doc.get("format") if isinstance(doc, dict) else None
    if kind not in readers:
        raise ModelFileError(f"{p}: not a model file of ours (no {FORMAT!r} format marker)")
    if doc.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{p}: model file version {doc.get('version')!r}, this program reads version "
            f"{FORMAT_VERSION}; retrain with this version")
    try:
        return readers[kind](doc)
    except (KeyError, TypeError, ValueError, InputError) as exc:  # InputError: a bad config
        raise ModelFileError(f"{p}: damaged model file: {exc}") from None


def _readers() -> dict:
    """Format marker -> document reader: ALS here, EASE and blend in their modules (all at
    version 1)."""
    from trainer.models import blend, ease

    return {FORMAT: _from_dict, ease.FORMAT: ease.from_dict, blend.FORMAT: blend.from_dict}


def _array(doc: dict, key: str, kinds: str, ndim: int) -> np.ndarray:
    arr = doc[key]
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in kinds or arr.ndim != ndim:
        raise ValueError(f"{key} is not a {ndim}-d array of kind {kinds!r}")
    return arr


def _check_loaded(uf: np.ndarray, itf: np.ndarray, indptr: np.ndarray,
                  indices: np.ndarray) -> None:
    """What shapes cannot show: numpy would index from the end with a negative resource
    number and score NaN without a word."""
    if len(indices) and indices.min() < 0:
        raise ValueError("seen_indices holds negative resource numbers")
    if indptr[0] != 0 or (np.diff(indptr) < 0).any():
        raise ValueError("seen_indptr is not a non-decreasing row index starting at 0")
    for name, factors in (("user_factors", uf), ("item_factors", itf)):
        if not np.isfinite(factors).all():
            raise ValueError(f"{name} holds NaN or infinite values")


def _from_dict(doc: dict) -> ALSModel:
    uf = _array(doc, "user_factors", "f", 2).astype(np.float32, copy=False)
    itf = _array(doc, "item_factors", "f", 2).astype(np.float32, copy=False)
    user_ids = _array(doc, "user_ids", "U", 1)
    item_ids = _array(doc, "item_ids", "iu", 1)
    indptr = _array(doc, "seen_indptr", "iu", 1)
    indices = _array(doc, "seen_indices", "iu", 1)
    known = {f.name for f in fields(TrainConfig)}
    config = TrainConfig(**{k: v for k, v in dict(doc["config"]).items() if k in known})
    if uf.shape != (len(user_ids), config.factors) or itf.shape != (len(item_ids), config.factors):
        raise ValueError(
            f"factor shapes {uf.shape}/{itf.shape} do not match {len(user_ids)} users, "
            f"{len(item_ids)} resources, {config.factors} factors")
    if len(indptr) != len(user_ids) + 1 or indptr[-1] != len(indices) or (
            len(indices) and indices.max() >= len(item_ids)):
        raise ValueError("seen-resources matrix does not match the ids")
    _check_loaded(uf, itf, indptr, indices)
    seen = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr),
                         shape=(len(user_ids), len(item_ids)))
    return ALSModel(
        user_factors=uf, item_factors=itf,
        users=Vocabulary(user_ids, name="user"), items=Vocabulary(item_ids, name="resource"),
        config=config, lang=str(doc["lang"]), trained_at=str(doc["trained_at"]), seen=seen,
        stats=dict(doc.get("stats") or {}),
    )
