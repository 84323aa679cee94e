"""Why a resource is on a user's list: the viewed resources that contribute most to its score.

Implicit-feedback ALS explains itself exactly (Hu, Koren and Volinsky 2008, section 5). With
the item factors Y fixed, the user's factors are the fold-in solution
(``trainer.models.als.PublishedALS``)

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

EASE (``--model ease``) explains itself the same way, more simply: the score of item i is
``sum_j x_uj * B[j, i]`` over the user's views j, with x_uj the scaled view (1, or
log(1 + views): ``trainer.models.ease.ease_input``), so view j's term is ``x_uj * B[j, i]``
(:func:`explain_ease`). A ``blend`` mixes z-scored rankings of both and is not split here.

Pure numpy, no Redis: the caller hands in the published item side (``PublishedALS``, or
EASE's rows of B for the viewed resources) and the user's counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from trainer.models.als import PublishedALS, gram
from trainer.models.confidence import scale_confidence
from trainer.models.ease import ease_input


@dataclass(frozen=True)
class Reason:
    """One viewed resource's part in a recommended resource's score."""

    resource_id: int
    contribution: float
    """c_uj * y_i^T W_u y_j."""
    share: float
    """contribution / the fold-in score (the contributions sum to 1 in shares)."""


def explain(model: PublishedALS, views: Mapping[int, int], recommended: Sequence[int],
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
    targets = model.rows_of(np.asarray(recommended, dtype=np.int64))
    return {int(rid): [] if row < 0 else
            _ranked(y[row] @ weighted, viewed_ids, top, positive_only)
            for rid, row in zip(recommended, targets, strict=True)}


def explain_ease(item_ids: np.ndarray, b_rows: Mapping[int, np.ndarray],
                 views: Mapping[int, int], scaling: str, recommended: Sequence[int],
                 top: int = 3, positive_only: bool = True) -> dict[int, list[Reason]]:
    """:func:`explain` for EASE: ``b_rows`` holds B's row (float32 over ``item_ids``) of each
    viewed resource the model knows; ``scaling`` is the model's ``ease_scaling``."""
    viewed = [j for j in views if j in b_rows]
    if not viewed:
        return {int(r): [] for r in recommended}
    counts = sp.csr_matrix(np.array([[views[j] for j in viewed]], dtype=np.float32))
    x = ease_input(counts, scaling).toarray().ravel().astype(np.float64)
    b = np.stack([np.asarray(b_rows[j], dtype=np.float64) for j in viewed])  # viewed x items
    column = {int(rid): k for k, rid in enumerate(np.asarray(item_ids))}
    ids = np.asarray(viewed, dtype=np.int64)
    return {int(rid): [] if int(rid) not in column else
            _ranked(x * b[:, column[int(rid)]], ids, top, positive_only)
            for rid in recommended}


def _ranked(parts: np.ndarray, viewed_ids: np.ndarray, top: int,
            positive_only: bool) -> list[Reason]:
    """The ``top`` largest of one item's per-view contributions, as Reasons."""
    total = float(parts.sum())
    order = [j for j in np.argsort(-parts, kind="stable")[:top]
             if parts[j] > 0 or not positive_only]
    return [Reason(int(viewed_ids[j]), float(parts[j]),
                   float(parts[j] / total) if total else 0.0) for j in order]
