"""Why a resource is on a user's list: the viewed resources that contribute most to its score.

Implicit-feedback ALS explains itself exactly (Hu, Koren and Volinsky 2008, section 5). With
the item factors Y fixed, the user's factors are the fold-in solution (``trainer.foldin``)

    x_u = W_u Y^T C_u p_u,   W_u = (Y^T C_u Y + reg * I)^-1

so the predicted score of item i splits into one term per viewed resource j:

    score(u, i) = y_i . x_u = sum_j  c_uj * (y_i^T W_u y_j)

``y_i^T W_u y_j`` is the similarity of i and j *as this user's history weighs it* (W_u is a
metric shaped by everything the user viewed, which is what makes it better than a plain
cosine), and ``c_uj = 1 + alpha * f(views)`` is the confidence the trainer gave the view
(same scaling, alpha and regularization as the published model). The terms sum to the
fold-in score, so a term's ``share`` of the total says how much of the item's place that
view earned. For a user the trainer fitted (rather than folded in) the published score may
differ a little from the fold-in score, since the last ALS sweep solved users against the
previous sweep's item factors; the split is of the fold-in score.

Pure numpy, no Redis: the caller hands in the published item side (``trainer.foldin.FoldIn``)
and the user's counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from trainer.config import scale_confidence
from trainer.foldin import FoldIn, gram


@dataclass(frozen=True)
class Reason:
    """One viewed resource's part in a recommended resource's score."""

    resource_id: int
    contribution: float
    """c_uj * y_i^T W_u y_j."""
    share: float
    """contribution / the fold-in score (the contributions sum to 1 in shares)."""


def explain(model: FoldIn, views: Mapping[int, int], recommended: Sequence[int],
            top: int = 3, positive_only: bool = True) -> dict[int, list[Reason]]:
    """For each recommended resource, the ``top`` viewed resources with the largest
    contributions to its score, largest first; ``positive_only`` leaves out views that
    count against it (they are no reason to recommend it). Resources the model does not
    know (on either side) get no reasons; a user with no known views gets none at all."""
    matrix = model.views_matrix([views])
    if matrix.nnz == 0:
        return {int(r): [] for r in recommended}
    confidence = scale_confidence(matrix, model.scaling, model.alpha, model.item_totals)
    rows, c = confidence.indices, confidence.data.astype(np.float64)
    y = model.item_factors.astype(np.float64)
    y_u = y[rows]
    a = gram(model.item_factors, model.regularization) + (y_u.T * (c - 1.0)) @ y_u
    weighted = np.linalg.solve(a, y_u.T * c)  # W_u Y_u^T C_u: factors x viewed
    viewed_ids = model.item_ids[rows]
    out: dict[int, list[Reason]] = {}
    targets = model.rows_of(np.asarray(recommended, dtype=np.int64))
    for rid, row in zip(recommended, targets, strict=True):
        if row < 0:
            out[int(rid)] = []
            continue
        parts = y[row] @ weighted  # one contribution per viewed resource
        total = float(parts.sum())
        order = [j for j in np.argsort(-parts, kind="stable")[:top]
                 if parts[j] > 0 or not positive_only]
        out[int(rid)] = [Reason(int(viewed_ids[j]), float(parts[j]),
                                float(parts[j] / total) if total else 0.0) for j in order]
    return out
