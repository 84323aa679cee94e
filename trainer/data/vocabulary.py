"""An ordered set of ids: row/column number <-> id, lenskit-style, with an explicit policy
for ids it does not hold (``missing=``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np
import pandas as pd

from core.errors import InputError

Missing = Literal["error", "negative"]


class Vocabulary:
    """An ordered set of ids: row/column number <-> id, lenskit-style.

    Ids are kept in the order given (``build_matrix`` gives them sorted ascending) and must be
    unique. Lookups are vectorised (a hash index), so mapping 500,000 ids costs milliseconds.

    Unknown ids follow an explicit policy, chosen per call (``missing=``):
    ``"error"`` (the default) raises ``InputError`` naming up to five unknown ids;
    ``"negative"`` returns -1 for them so the caller can mask or drop them.
    """

    def __init__(self, ids: Iterable, name: str = "id") -> None:
        arr = np.asarray(ids if not isinstance(ids, pd.Index) else ids.to_numpy())
        if arr.dtype.kind in "OUT":
            arr = arr.astype(str)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} ids must be integers or strings, not {arr.dtype}")
        self._ids = arr
        self._index = pd.Index(arr)
        if not self._index.is_unique:
            raise ValueError(f"{name} ids must be unique")
        self.name = name

    @classmethod
    def from_values(cls, values: Iterable, name: str = "id") -> Vocabulary:
        """The sorted distinct values (duplicates allowed in the input)."""
        return cls(np.unique(np.asarray(values)), name=name)

    @property
    def ids(self) -> np.ndarray:
        """The ids in row/column order (int64 for resources, str for users)."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, value) -> bool:
        return self.number(value, missing="negative") >= 0

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocabulary) and np.array_equal(self._ids, other._ids)

    def __repr__(self) -> str:
        return f"Vocabulary({self.name}, {len(self)} ids)"

    def _normalise(self, values) -> np.ndarray:
        arr = np.atleast_1d(np.asarray(values))
        if self._ids.dtype.kind == "U":
            return arr.astype(str)
        if arr.dtype.kind in "OUT":
            # A resource id typed on a command line arrives as a string.
            try:
                arr = arr.astype(np.int64)
            except (ValueError, OverflowError) as exc:
                raise InputError(f"{self.name} ids must be integers: {exc}") from None
        return arr

    def numbers(self, values, missing: Missing = "error") -> np.ndarray:
        """Row/column numbers (int64) of ``values``; see the class docstring for ``missing``."""
        arr = self._normalise(values)
        nums = self._index.get_indexer(arr).astype(np.int64)
        if missing == "error" and (nums < 0).any():
            unknown = arr[nums < 0]
            shown = ", ".join(str(v) for v in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise InputError(
                f"unknown {self.name} {shown}{more}: not among the {len(self)} {self.name}s "
                "the model was trained on (filtered out, or never seen)"
            )
        return nums

    def number(self, value, missing: Missing = "error") -> int:
        """The row/column number of one id."""
        return int(self.numbers([value], missing=missing)[0])

    def id(self, number: int):
        """The id at a row/column number (a Python int or str)."""
        return self._ids[number].item()
