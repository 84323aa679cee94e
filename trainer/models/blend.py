"""The blend: ALS and EASE scores, each z-scored per user, mixed with one weight.

score(u, i) = w * z_als(u, i) + (1 - w) * z_ease(u, i), where z standardises the user's score
row over all resources (mean 0, standard deviation 1; a constant row becomes 0). The two
models' raw scores live on unrelated scales (dot products vs EASE weights), so mixing them
unnormalised would let one drown the other. ``w`` is chosen on a validation split carved from
the training data (``trainer.quality.choose``), never on the test split.

Similar lists under the blend are the ALS part's (cosine of item factors): the blend mixes
per-user rankings, and a resource has no user row to z-score.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.models.als import ALSModel, slot_ids, top_n
from trainer.models.ease import EASEModel

FORMAT = "recs.blend-model"
FORMAT_VERSION = 1


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Each row minus its mean, over its standard deviation (float32; constant rows -> 0)."""
    scores = np.asarray(scores, dtype=np.float32)
    mean = scores.mean(axis=1, keepdims=True)
    std = scores.std(axis=1, keepdims=True)
    return ((scores - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def als_scores(model: ALSModel, rows) -> np.ndarray:
    """Dense ALS scores (user factors . item factors) of users by row number."""
    return model.user_factors[np.asarray(rows)] @ model.item_factors.T


def mix(als: np.ndarray, ease: np.ndarray, weight: float) -> np.ndarray:
    """The blend of two raw score blocks of the same users."""
    return weight * zscore_rows(als) + (1.0 - weight) * zscore_rows(ease)


@dataclass
class BlendModel:
    """ALS and EASE fitted on the same matrix, and the weight of ALS in the mix."""

    als: ALSModel
    ease: EASEModel
    weight: float

    @property
    def users(self):
        return self.als.users

    @property
    def items(self):
        return self.als.items

    @property
    def lang(self) -> str:
        return self.als.lang

    @property
    def trained_at(self) -> str:
        return self.als.trained_at

    @property
    def stats(self) -> dict:
        return self.als.stats

    @property
    def seen(self):
        return self.als.seen

    def score_rows(self, rows) -> np.ndarray:
        return mix(als_scores(self.als, rows), self.ease.score_rows(rows), self.weight)

    def recommend(self, user_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-n unviewed resources per user id; same shapes and -1 slots as ALSModel's."""
        rows = self.users.numbers(user_ids)
        scores = self.score_rows(rows)
        block = self.seen[rows].tocsr()
        hit = np.repeat(np.arange(block.shape[0]), np.diff(block.indptr))
        scores[hit, block.indices] = -np.inf
        idx, val = top_n(scores, min(n, scores.shape[1]))
        idx[~np.isfinite(val)] = -1
        return slot_ids(self.items.ids, idx, idx < 0, -1), val

    def similar_items(self, resource_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The ALS part's cosine neighbours (see the module docstring)."""
        return self.als.similar_items(resource_ids, n)

    @property
    def filename(self) -> str:
        return self.als.filename.replace("cf_ALSModel_", f"cf_Blend_w{self.weight:g}_", 1)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "weight": float(self.weight),
                "als": self.als.to_dict(), "ease": self.ease.to_dict()}

    def save(self, model_dir: str | os.PathLike) -> Path:
        from trainer.models.als import save_doc

        return save_doc(self.to_dict(), Path(model_dir) / self.filename)


def from_dict(doc: dict) -> BlendModel:
    from trainer.models import ease
    from trainer.models.als import _from_dict

    weight = float(doc["weight"])
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"blend weight {weight} is not in [0, 1]")
    return BlendModel(als=_from_dict(doc["als"]), ease=ease.from_dict(doc["ease"]),
                      weight=weight)
