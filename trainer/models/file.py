"""Model files: the one place that knows every family's file format, its name and its checks.

A model file is a joblib file holding one plain dict of numpy arrays, strings and numbers (no
class instances, so it survives refactors), marked with a family's format name (``FORMATS``)
and ``FORMAT_VERSION``. :func:`save_model` writes ``model_dir/model_filename(model)``
atomically (temp file + rename). :func:`load_model` checks the marker, the version, the
shapes and the dtypes and raises ``ModelFileError`` otherwise. joblib files are pickles: load
only files you trust (the checks catch mistakes, not attacks).
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from core.errors import InputError, ModelFileError
from trainer.config import AlsConfig, EaseConfig, Rp3betaConfig
from trainer.data.vocabulary import Vocabulary
from trainer.models.als import ALSModel
from trainer.models.base import Model
from trainer.models.blend import BlendModel
from trainer.models.ease import EASEModel
from trainer.models.rp3beta import RP3betaModel

FORMATS = {"als": "recs.als-model", "ease": "recs.ease-model", "blend": "recs.blend-model",
           "rp3beta": "recs.rp3beta-model"}
"""Each family's format marker (all at ``FORMAT_VERSION``)."""
FORMAT_VERSION = 1
DEFAULT_SCALING = AlsConfig().scaling


def model_filename(model: Model) -> str:
    """``cf_ALSModel_fa40_re0.01_it50_al50_en.dump`` (``_sc{scaling}`` and ``_{engine}``
    before the language only when not the shipped defaults), ``cf_EASEModel_l2200_binary_en
    .dump``, ``cf_RP3beta_a0.32_b0.19_k76_log_en.dump``, or the ALS part's name as
    ``cf_Blend_w{weight}_...`` for a blend."""
    if isinstance(model, BlendModel):
        return model_filename(model.als).replace("cf_ALSModel_", f"cf_Blend_w{model.weight:g}_", 1)
    if isinstance(model, EASEModel):
        return f"cf_EASEModel_l2{model.config.l2:g}_{model.config.scaling}_{model.lang}.dump"
    if isinstance(model, RP3betaModel):
        r = model.config
        norm = "_norm" if r.normalize else ""
        return (f"cf_RP3beta_a{r.alpha:g}_b{r.beta:g}_k{r.neighbours}_{r.scaling}{norm}"
                f"_{model.lang}.dump")
    c = model.config
    scaling = "" if c.scaling == DEFAULT_SCALING else f"_sc{c.scaling}"
    engine = "" if c.engine == "implicit" else f"_{c.engine}"
    return (f"cf_ALSModel_fa{c.factors}_re{c.regularization:g}_it{c.iterations}"
            f"_al{c.alpha:g}{scaling}{engine}_{model.lang}.dump")


def model_doc(model: Model) -> dict:
    """The file's content: plain numpy arrays, strings and numbers only."""
    head = {"format": FORMATS[model.family], "version": FORMAT_VERSION}
    if isinstance(model, BlendModel):
        return {**head, "weight": float(model.weight), "als": model_doc(model.als),
                "ease": model_doc(model.ease)}
    common = {"lang": model.lang, "trained_at": model.trained_at,
              "config": asdict(model.config), "user_ids": np.asarray(model.users.ids, dtype=str),
              "item_ids": np.asarray(model.items.ids, dtype=np.int64), "stats": model.stats}
    if isinstance(model, EASEModel):
        x = model.rows.tocsr()
        return {**head, **common, "weights": np.ascontiguousarray(model.weights, dtype=np.float32),
                "rows_data": x.data.astype(np.float32), "rows_indices": x.indices.astype(np.int32),
                "rows_indptr": x.indptr.astype(np.int64)}
    if isinstance(model, RP3betaModel):
        return {**head, **common, **_csr_doc("weights", model.weights),
                **_csr_doc("rows", model.rows)}
    seen = model.seen.tocsr()
    return {**head, **common,
            "user_factors": np.ascontiguousarray(model.user_factors, dtype=np.float32),
            "item_factors": np.ascontiguousarray(model.item_factors, dtype=np.float32),
            "seen_indptr": seen.indptr.astype(np.int64),
            "seen_indices": seen.indices.astype(np.int32)}


def _csr_doc(name: str, m: sp.csr_matrix) -> dict:
    m = m.tocsr()
    return {f"{name}_data": m.data.astype(np.float32), f"{name}_indices": m.indices.astype(
        np.int32), f"{name}_indptr": m.indptr.astype(np.int64)}


def _csr_of(doc: dict, name: str, shape: tuple[int, int]) -> sp.csr_matrix:
    """A CSR matrix of the file, checked (scipy's own check, plus columns in range)."""
    indices = _array(doc, f"{name}_indices", "iu", 1)
    if len(indices) and (indices.min() < 0 or indices.max() >= shape[1]):
        raise ValueError(f"{name} holds column numbers outside 0..{shape[1] - 1}")
    m = sp.csr_matrix((_array(doc, f"{name}_data", "f", 1), indices,
                       _array(doc, f"{name}_indptr", "iu", 1)), shape=shape)
    m.check_format(full_check=True)
    return m


def save_model(model: Model, model_dir: str | os.PathLike) -> Path:
    """Write ``model_dir/model_filename(model)`` atomically; returns the path."""
    import joblib

    path = Path(model_dir) / model_filename(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        joblib.dump(model_doc(model), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_model(path: str | os.PathLike) -> Model:
    """Read a model file written by :func:`save_model`; ``ModelFileError`` if it is not one."""
    import joblib

    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: no such model file")
    try:
        doc = joblib.load(p)
    except Exception as exc:  # any unreadable file is the same mistake for the user
        raise ModelFileError(
            f"{p}: not a model file of ours (unreadable: {type(exc).__name__})") from None
    kind = doc.get("format") if isinstance(doc, dict) else None
    if kind not in FORMATS.values():
        raise ModelFileError(f"{p}: not a model file of ours (no {FORMATS['als']!r} format "
                             "marker)")
    if doc.get("version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{p}: model file version {doc.get('version')!r}, this program reads version "
            f"{FORMAT_VERSION}; retrain with this version")
    try:
        return from_doc(doc)
    except (KeyError, TypeError, ValueError, InputError) as exc:  # InputError: a bad config
        raise ModelFileError(f"{p}: damaged model file: {exc}") from None


def from_doc(doc: dict) -> Model:
    """The model of a file's document (its marker already checked)."""
    if doc["format"] == FORMATS["blend"]:
        weight = float(doc["weight"])
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"blend weight {weight} is not in [0, 1]")
        return BlendModel(als=from_doc(doc["als"]), ease=from_doc(doc["ease"]), weight=weight)
    if doc["format"] == FORMATS["ease"]:
        return _ease_from_doc(doc)
    if doc["format"] == FORMATS["rp3beta"]:
        return _rp3beta_from_doc(doc)
    return _als_from_doc(doc)


def _rp3beta_from_doc(doc: dict) -> RP3betaModel:
    user_ids, item_ids = np.asarray(doc["user_ids"]), np.asarray(doc["item_ids"])
    n = len(item_ids)
    weights = _csr_of(doc, "weights", (n, n))
    if not np.isfinite(weights.data).all():
        raise ValueError("weights hold NaN or infinite values")
    return RP3betaModel(weights=weights, rows=_csr_of(doc, "rows", (len(user_ids), n)),
                        users=Vocabulary(user_ids, name="user"),
                        items=Vocabulary(item_ids, name="resource"),
                        config=Rp3betaConfig(**dict(doc["config"])), lang=str(doc["lang"]),
                        trained_at=str(doc["trained_at"]), stats=dict(doc.get("stats") or {}))


def _ease_from_doc(doc: dict) -> EASEModel:
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


def _als_from_doc(doc: dict) -> ALSModel:
    uf = _array(doc, "user_factors", "f", 2).astype(np.float32, copy=False)
    itf = _array(doc, "item_factors", "f", 2).astype(np.float32, copy=False)
    user_ids = _array(doc, "user_ids", "U", 1)
    item_ids = _array(doc, "item_ids", "iu", 1)
    indptr = _array(doc, "seen_indptr", "iu", 1)
    indices = _array(doc, "seen_indices", "iu", 1)
    known = {f.name for f in fields(AlsConfig)}
    config = AlsConfig(**{k: v for k, v in dict(doc["config"]).items() if k in known})
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
