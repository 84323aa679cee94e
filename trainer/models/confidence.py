"""The view -> confidence scaling ALS trains on, c = 1 + alpha * f(views), shared by the fit,
the updater's fold-in and the page's explanations, so a folded-in user is weighted exactly as
training weighted them (``trainer.config.AlsConfig.scaling`` says what each f is and why
``logshare`` is the default)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from trainer.config import SCALINGS

# implicit's bm25_weight defaults, the seed's BM25 setting.
BM25_K1 = 100.0
BM25_B = 0.8


def scale_confidence(views: sp.csr_matrix, scaling: str, alpha: float,
                     item_totals: np.ndarray | None = None) -> sp.csr_matrix:
    """Confidence matrix c = 1 + alpha * f(views), same sparsity as ``views``.

    ``implicit`` takes these values as the confidence c itself (preference = c > 0), so the
    1 + belongs here. float32 because that is what ``implicit`` trains in.

    ``bm25`` is ``implicit.nearest_neighbours.bm25_weight`` (K1=100, B=0.8) of the resources x
    users matrix: its idf term needs only the user's own row, but its length norm needs each
    resource's total views over all training users. Those are ``views``' column sums unless
    ``item_totals`` gives them, which is how fold-in scores a few users' rows exactly as
    training scored them. The other scalings ignore ``item_totals``.
    """
    out = views.tocsr().astype(np.float32)  # a copy: the caller's matrix stays as it was
    per_user = np.diff(out.indptr)
    if scaling == "linear":
        weighted = out.data
    elif scaling == "log":
        weighted = np.log1p(out.data)
    elif scaling == "logshare":
        logs = np.log1p(out.data.astype(np.float64))
        rows = np.repeat(np.arange(out.shape[0]), per_user)
        user_logs = np.bincount(rows, weights=logs, minlength=out.shape[0])
        weighted = logs / np.where(user_logs > 0, user_logs, 1.0)[rows]
    elif scaling == "bm25":
        if item_totals is None:
            item_totals = np.bincount(out.indices, weights=out.data, minlength=out.shape[1])
        totals = np.asarray(item_totals, dtype=np.float64)
        mean = totals.mean() if totals.size and totals.mean() > 0 else 1.0
        length_norm = (1.0 - BM25_B) + BM25_B * totals / mean
        idf = np.log(float(out.shape[1])) - np.log1p(per_user.astype(np.float64))
        rows = np.repeat(np.arange(out.shape[0]), per_user)
        data = out.data.astype(np.float64)
        weighted = (data * (BM25_K1 + 1.0) / (BM25_K1 * length_norm[out.indices] + data)
                    * idf[rows])
    else:
        raise ValueError(f"unknown scaling {scaling!r}; choose one of {', '.join(SCALINGS)}")
    out.data = (1.0 + alpha * weighted).astype(np.float32)
    return out
