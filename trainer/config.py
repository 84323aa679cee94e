"""Typed settings for filtering and training, and the view -> confidence scaling.

The command line fills these from flags and ``RECS_*`` environment variables; library
callers build them directly. Defaults are the platform's, except ``scaling`` (see below).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp

Scaling = Literal["linear", "log", "bm25"]
SCALINGS: tuple[str, ...] = ("linear", "log", "bm25")


@dataclass(frozen=True)
class FilterConfig:
    """The platform's data filters, applied in this order. 0 turns a filter off."""

    min_item_views: int = 150
    """Drop resources with fewer total views than this (over all users)."""
    max_item_views: int = 20000
    """Then drop resources with this many total views or more (bots, pinned resources)."""
    min_user_views: int = 5
    """Then drop users with fewer total views than this over the remaining resources."""


@dataclass(frozen=True)
class TrainConfig:
    """ALS hyperparameters (Hu, Koren and Volinsky 2008) and the confidence scaling."""

    factors: int = 40
    """Latent dimensions per user and per resource."""
    regularization: float = 0.01
    """L2 penalty on the factors."""
    iterations: int = 50
    """Alternating least-squares sweeps."""
    alpha: float = 50.0
    """Confidence weight of a view: c = 1 + alpha * f(views)."""
    scaling: Scaling = "log"
    """f in c = 1 + alpha * f(views): ``linear`` (f = views, the seed's setting), ``log``
    (f = log(1 + views)) or ``bm25`` (BM25-weighted views). ``log`` is the default because
    linear confidence collapses on heavy-tailed counts; see the README's quality table."""
    seed: int = 42
    """Seeds the factor initialisation, so a run can be repeated."""

    def as_dict(self) -> dict:
        return asdict(self)


def scale_confidence(views: sp.csr_matrix, scaling: str, alpha: float) -> sp.csr_matrix:
    """Confidence matrix c = 1 + alpha * f(views), same sparsity as ``views``.

    ``implicit`` takes these values as the confidence c itself (preference = c > 0), so the
    1 + belongs here. float32 because that is what ``implicit`` trains in.
    """
    views = views.tocsr().astype(np.float32)
    if scaling == "linear":
        weighted = views.data
    elif scaling == "log":
        weighted = np.log1p(views.data)
    elif scaling == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        # bm25_weight works on item x user rows; weight per (item, user) then transpose back.
        weighted = bm25_weight(views.T.tocsr(), K1=100, B=0.8).T.tocsr().astype(np.float32)
        weighted.sort_indices()
        out = views.copy()
        out.sort_indices()
        out.data = (1.0 + alpha * weighted.data).astype(np.float32)
        return out
    else:
        raise ValueError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
    out = views.copy()
    out.data = (1.0 + alpha * weighted).astype(np.float32)
    return out
