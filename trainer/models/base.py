"""The interface every model family shares, and the code they share.

A family (``trainer.models.registry.FAMILIES``) is one class per file, named by ``family``
(the ``--model`` value, the model hash's ``model`` field, and the key of its settings class
in ``trainer.config.FAMILY_CONFIGS``). It has:

- ``fit(matrix, spec, lang, *, threads=0, stats=None)``, a classmethod: the model fitted
  on a utility matrix with ``spec``'s settings for the family;
- on a fitted model (:class:`Model`): lists by ids (``recommend``, ``similar_items``) and by
  row numbers (``recommend_rows``, ``similar_rows``), dense ``score_rows`` for evaluation,
  and what the publisher writes: ``user_factors`` (beside each user's list, or None),
  ``item_factors`` (items x f, f = 0 for a family without factors), ``item_rows`` (the
  item-item weights the updater reads, or None), ``similar_factors`` (item factors whose
  cosines are the similar lists, which the publisher may approximate; None when only
  ``similar_rows`` gives them) and ``settings_fields()`` (its settings in the model hash);
- ``published(meta, items, fetch)``, a classmethod: the model as ``recs update`` rebuilds
  it from what is published, a :class:`FoldIn` whose ``fold_in(views)`` solves users'
  factors and whose ``recommend`` writes their lists.

Every list is best first; an empty slot is column -1 / score -inf by row number, id -1 by id
(``trainer.models.rank``). Saving and loading are ``trainer.models.file``'s, the one place
that knows every model-file format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import ClassVar, Protocol

import numpy as np
import scipy.sparse as sp

from core.errors import InputError
from trainer.data.matrix import UtilityMatrix
from trainer.data.vocabulary import Vocabulary
from trainer.models.rank import slot_ids


class Model(Protocol):
    """A fitted model of one language (see the module docstring)."""

    family: ClassVar[str]
    users: Vocabulary
    items: Vocabulary
    lang: str
    trained_at: str
    stats: dict

    @property
    def seen(self) -> sp.csr_matrix: ...
    @property
    def user_factors(self) -> np.ndarray | None: ...
    @property
    def item_factors(self) -> np.ndarray: ...
    @property
    def item_rows(self) -> np.ndarray | None: ...
    @property
    def similar_factors(self) -> np.ndarray | None: ...
    def score_rows(self, rows) -> np.ndarray: ...
    def recommend_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]: ...
    def similar_rows(self, rows, n: int) -> tuple[np.ndarray, np.ndarray]: ...
    def recommend(self, user_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]: ...
    def similar_items(self, resource_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]: ...
    def settings_fields(self) -> dict: ...


class FoldIn(Protocol):
    """A published model as ``recs update`` rebuilds it: users folded in between retrains."""

    version: str
    factors: int

    @property
    def items(self) -> int: ...
    def views_from_arrays(self, lengths, resource_ids, values) -> sp.csr_matrix: ...
    def views_matrix(self, counts) -> sp.csr_matrix: ...
    def fold_in(self, views: sp.csr_matrix) -> np.ndarray: ...
    def recommend(self, user_factors, views: sp.csr_matrix, n: int
                  ) -> tuple[np.ndarray, np.ndarray]: ...


class ListsById:
    """``recommend`` and ``similar_items`` by ids, for a fitted model that ranks by row
    number: unknown ids raise ``InputError``; empty recommendation slots hold id -1."""

    def recommend(self, user_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-n resources for each user id, resources viewed in training excluded:
        (resource ids int64, scores float32), shape (len(user_ids), min(n, resources))."""
        idx, scores = self.recommend_rows(self.users.numbers(user_ids), n)
        return slot_ids(self.items.ids, idx, idx < 0, -1), scores

    def similar_items(self, resource_ids, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-n neighbours of each resource id, itself excluded: (resource ids, scores),
        shape (len(resource_ids), min(n, resources - 1))."""
        idx, scores = self.similar_rows(self.items.numbers(resource_ids), n)
        return self.items.ids[idx], scores



class ItemItemModel(ListsById):
    """What an item-item model (EASE, RP3beta: a user's scores are their scaled view row
    ``rows`` times a resources x resources ``weights``) holds in common (a mixin): no user
    or item factors, and ``weights`` is what is published as item rows."""

    rows: sp.csr_matrix
    weights: object

    @property
    def seen(self) -> sp.csr_matrix:
        """1.0 where the user viewed the resource in training."""
        seen = self.rows.copy()
        seen.data[:] = 1.0
        return seen

    @property
    def user_factors(self) -> None:
        return None

    @property
    def item_factors(self) -> np.ndarray:
        """No factors: items x 0 (the model hash says ``factors`` 0)."""
        return np.zeros((len(self.items), 0), dtype=np.float32)

    @property
    def item_rows(self):
        return self.weights

    @property
    def similar_factors(self) -> None:
        return None

class ItemSide:
    """The published item side a :class:`FoldIn` scores against (a mixin): the resource ids
    by row, and users' counts as rows of views over them (resources the model does not know
    are dropped: they wait for the next retrain). Item ids must be unique (``ValueError``),
    as every published model's are."""

    item_ids: np.ndarray
    """Resource id of each row (uint32 in Redis)."""

    def index_items(self) -> None:
        """Build the id -> row index of ``item_ids`` (once per model version)."""
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        self._index = Vocabulary(self.item_ids, name="resource")

    @property
    def items(self) -> int:
        return self.item_ids.size

    def rows_of(self, resource_ids: np.ndarray) -> np.ndarray:
        """Row of each resource id in this model, -1 for resources it does not know."""
        return self._index.numbers(np.asarray(resource_ids, dtype=np.int64), missing="negative")

    def views_matrix(self, counts: Iterable[Mapping[int, int]]) -> sp.csr_matrix:
        """users x items CSR of view counts, one row per ``{resource_id: count}``."""
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


def check_trainable(matrix: UtilityMatrix) -> None:
    """One clear line when the filters left nothing to fit."""
    users, items = matrix.shape
    if users == 0 or items == 0 or matrix.nnz == 0:
        raise InputError(
            f"nothing to train on: {users} users x {items} resources after the filters "
            "(lower --min-item-views / --min-user-views for small extracts)"
        )


def fit_stats(matrix: UtilityMatrix, seconds: float) -> dict:
    """The facts every fit records (logged, kept in the model file and hash)."""
    users, items = matrix.shape
    return {"users": users, "items": items, "nnz": matrix.nnz, "sparsity": matrix.sparsity,
            "train_seconds": round(seconds, 3)}


def utc_now() -> str:
    """ISO 8601 UTC to the second, e.g. 2025-11-27T10:00:00Z (a model's ``trained_at``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
