"""Every published list of a fitted model (any family), a batch at a time, as
``store.publish.Lists``.

- Similar lists: a model whose similar lists are cosines of item factors (``similar_factors``:
  ALS, a blend's ALS part) goes through a :class:`~trainer.scoring.search.Scorer`, exact or
  approximate as ``trainer.scoring_config.ScoringConfig`` says; any other ranks them itself
  (``similar_rows``, exact).
- Users' lists: a model whose scores are dot products of its factors (``scores_by_factors``:
  ALS) goes through the scorer too; any other ranks them itself (``recommend_rows``). Each
  user's factors travel beside their list when the model has them (``user_factors``).

Empty slots (-1, or a -inf score) become id 0, which the publisher drops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from store.publish import Lists
from trainer.models.base import Model
from trainer.models.rank import slot_ids
from trainer.scoring.search import Scorer
from trainer.scoring_config import ScoringConfig

USER_BATCH = 4096
"""Users per published batch through the scorer (the faiss search blocks its score matrix)."""
ITEM_BATCH = 2048
MODEL_USER_BATCH = 2048
"""Users per batch a model ranks itself: it holds their dense score rows."""
MODEL_ITEM_BATCH = 1024


def scorer_for(model: Model, config: ScoringConfig | None = None) -> Scorer | None:
    """The scorer of the model's factor lists, or None when it ranks every list itself."""
    factors = model.similar_factors
    return None if factors is None else Scorer(factors, config)


def similar_batches(model: Model, n: int, scorer: Scorer | None,
                    batch: int | None = None) -> Iterator[Lists]:
    """Every resource's top-n neighbours (itself excluded), a batch at a time."""
    ids = model.items.ids
    batch = batch or (ITEM_BATCH if scorer is not None else MODEL_ITEM_BATCH)
    for start in range(0, len(ids), batch):
        rows = np.arange(start, min(start + batch, len(ids)))
        if scorer is not None:
            idx, scores = scorer.similar_lists(rows, n)
        else:
            idx, scores = model.similar_rows(rows, n)
        yield Lists(ids=ids[rows], members=resource_ids(ids, idx, scores), scores=scores)


def user_batches(model: Model, n: int, scorer: Scorer | None, batch: int | None = None,
                 progress: Callable[[int], None] | None = None) -> Iterator[Lists]:
    """Every user's top-n unviewed resources, with their factors when the model has them;
    ``progress(users done)`` after each batch."""
    by_scorer = scorer is not None and model.scores_by_factors
    ids, users, factors = model.items.ids, model.users.ids, model.user_factors
    seen = model.seen.tocsr() if by_scorer else None
    batch = batch or (USER_BATCH if by_scorer else MODEL_USER_BATCH)
    for start in range(0, len(users), batch):
        part = slice(start, min(start + batch, len(users)))
        if by_scorer:
            idx, scores = scorer.user_lists(factors[part], seen[part], n)
        else:
            idx, scores = model.recommend_rows(np.arange(part.start, part.stop), n)
        yield Lists(ids=users[part].tolist(), members=resource_ids(ids, idx, scores),
                    scores=scores, factors=None if factors is None else factors[part])
        if progress is not None:
            progress(part.stop)


def resource_ids(ids: np.ndarray, idx: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Column numbers -> resource ids; empty slots (-1 or a -inf score) -> 0."""
    return slot_ids(ids, idx, (idx < 0) | ~np.isfinite(scores))
