"""Views table -> the users x resources utility matrix, the platform's filters, hold-out splits.

The views table everywhere is a DataFrame with columns ``user_id`` (str), ``resource_id``
(int64) and ``views`` (int64), one row per (user, resource) pair;
``trainer.data.extracts.load_views`` makes one from a CSV extract and
``store.snapshot.read_views`` from the Redis counts.

- ``apply_filters(df, FilterConfig) -> (df, FilterReport)``: the platform's three filters in
  its order, with what each step removed.
- ``build_matrix(df) -> UtilityMatrix``: CSR views (float32, users x resources) plus the two
  ``Vocabulary`` objects mapping rows and columns back to ids.
- ``holdout_split(matrix, fraction, seed) -> Split``: the platform's ``make_train``;
  ``time_split(matrix, fraction) -> Split``: each user's latest pairs held out instead
  (matrices built from a views table with a ``ts`` column carry ``times``).
- ``drop_hidden(df, hidden)``: taken-down resources left out before the filters;
  ``uncovered_users(df, matrix)``: who the filters dropped but a model can fold in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.errors import InputError
from trainer.config import FilterConfig
from trainer.data.vocabulary import Vocabulary


@dataclass
class UtilityMatrix:
    """Views per (user, resource): rows are ``users``, columns are ``items``."""

    views: sp.csr_matrix
    """CSR float32, users x resources, raw view counts (no zeros stored)."""
    users: Vocabulary
    """Row number <-> user id (sorted ascending)."""
    items: Vocabulary
    """Column number <-> resource id (sorted ascending)."""
    times: sp.csr_matrix | None = None
    """When the views table had a ``ts`` column: float64 CSR with exactly the pattern of
    ``views`` (same indptr and indices, so ``times.data[i]`` belongs to ``views.data[i]``),
    the epoch milliseconds of each pair's last view; None otherwise."""

    @property
    def shape(self) -> tuple[int, int]:
        return self.views.shape

    @property
    def nnz(self) -> int:
        return int(self.views.nnz)

    @property
    def sparsity(self) -> float:
        """Share of empty cells, 1 - nnz / (users * resources); 1.0 for an empty matrix."""
        cells = self.shape[0] * self.shape[1]
        return 1.0 - self.nnz / cells if cells else 1.0

    def item_totals(self) -> np.ndarray:
        """Total views per resource (column sums), float64."""
        return np.asarray(self.views.sum(axis=0)).ravel()


def build_matrix(
    df: pd.DataFrame, users: Vocabulary | None = None, items: Vocabulary | None = None
) -> UtilityMatrix:
    """The utility matrix of a views table.

    Without vocabularies, rows and columns are the table's distinct users and resources,
    sorted. With ``users``/``items`` given (e.g. a test extract mapped onto a trained
    model's ids), those define the rows/columns and rows with ids outside them are dropped.
    Repeated (user, resource) rows are summed.
    """
    if users is None:
        codes, uniques = pd.factorize(df["user_id"], sort=True)
        users = Vocabulary(np.asarray(uniques, dtype=str), name="user")
        rows = codes.astype(np.int64)
    else:
        rows = users.numbers(df["user_id"].to_numpy(), missing="negative")
    if items is None:
        codes, uniques = pd.factorize(df["resource_id"], sort=True)
        items = Vocabulary(np.asarray(uniques, dtype=np.int64), name="resource")
        cols = codes.astype(np.int64)
    else:
        cols = items.numbers(df["resource_id"].to_numpy(), missing="negative")
    data = df["views"].to_numpy(dtype=np.float32)
    keep = (rows >= 0) & (cols >= 0) & (data != 0)
    if not keep.all():
        rows, cols, data = rows[keep], cols[keep], data[keep]
    shape = (len(users), len(items))
    views = sp.csr_matrix((data, (rows, cols)), shape=shape, dtype=np.float32)
    views.sum_duplicates()
    return UtilityMatrix(views=views, users=users, items=items,
                         times=_times(df, keep, rows, cols, views))


def _times(df: pd.DataFrame, keep: np.ndarray, rows: np.ndarray, cols: np.ndarray,
           views: sp.csr_matrix) -> sp.csr_matrix | None:
    """The ``times`` of ``build_matrix``: the latest ``ts`` of each pair (a repeated pair's
    latest), on the pattern of ``views``; None without a complete ``ts`` column."""
    if "ts" not in df.columns or df["ts"].isna().any():
        return None
    ts = df["ts"].to_numpy(dtype=np.float64)[keep]
    order = np.lexsort((ts, cols, rows))  # the last of each (row, col) run is its latest
    rows, cols, ts = rows[order], cols[order], ts[order]
    last = np.ones(len(rows), dtype=bool)
    last[:-1] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    times = sp.csr_matrix((ts[last], (rows[last], cols[last])), shape=views.shape,
                          dtype=np.float64)
    times.sort_indices()
    assert times.nnz == views.nnz  # one entry per pair in both
    return times


@dataclass(frozen=True)
class FilterStep:
    """What one filter removed."""

    name: str
    threshold: int
    users: int
    resources: int
    interactions: int
    """(user, resource) rows removed."""
    views: int
    """Sum of the removed rows' view counts."""


@dataclass
class FilterReport:
    """Before/after sizes and each step's removals, in the order the filters ran."""

    before: dict[str, int]
    after: dict[str, int]
    steps: list[FilterStep] = field(default_factory=list)

    def lines(self) -> list[str]:
        """One readable line per step, for logs and the CLI."""
        out = [_size_line("extract", self.before)]
        for s in self.steps:
            if s.threshold == 0:
                out.append(f"{s.name}: off")
                continue
            out.append(
                f"{s.name} {s.threshold}: removed {s.resources} resources, {s.users} users, "
                f"{s.interactions} user-resource pairs, {s.views} views"
            )
        out.append(_size_line("kept", self.after))
        return out

    def as_dict(self) -> dict:
        return {"before": self.before, "after": self.after,
                "steps": [s.__dict__.copy() for s in self.steps]}


def _size_line(label: str, size: dict[str, int]) -> str:
    return (f"{label}: {size['users']} users, {size['resources']} resources, "
            f"{size['interactions']} user-resource pairs, {size['views']} views")


def apply_filters(df: pd.DataFrame, config: FilterConfig) -> tuple[pd.DataFrame, FilterReport]:
    """The platform's filters, in its order; 0 turns a filter off.

    1. drop resources with fewer than ``min_item_views`` total views;
    2. then resources with ``max_item_views`` total views or more (whole resources go in
       step 1, so the totals are the same before and after it);
    3. then users with fewer than ``min_user_views`` views over the resources left.

    Works on integer codes and bincounts (no groupby), so 500,000 rows take milliseconds.
    """
    users, _ = pd.factorize(df["user_id"])
    items, _ = pd.factorize(df["resource_id"])
    views = df["views"].to_numpy(dtype=np.int64)
    n_users, n_items = int(users.max(initial=-1)) + 1, int(items.max(initial=-1)) + 1
    keep = np.ones(len(df), dtype=bool)

    def size() -> dict[str, int]:
        return {
            "users": int(np.count_nonzero(np.bincount(users[keep], minlength=n_users))),
            "resources": int(np.count_nonzero(np.bincount(items[keep], minlength=n_items))),
            "interactions": int(np.count_nonzero(keep)),
            "views": int(views[keep].sum()),
        }

    before = current = size()
    steps: list[FilterStep] = []

    def step(name: str, threshold: int, passes) -> None:
        nonlocal current, keep
        if threshold:
            keep = keep & passes()
            now = size()
        else:
            now = current
        steps.append(FilterStep(
            name=name, threshold=threshold,
            users=current["users"] - now["users"],
            resources=current["resources"] - now["resources"],
            interactions=current["interactions"] - now["interactions"],
            views=current["views"] - now["views"],
        ))
        current = now

    item_totals = np.bincount(items, weights=views, minlength=n_items)[items]
    step("min_item_views", config.min_item_views,
         lambda: item_totals >= config.min_item_views)
    step("max_item_views", config.max_item_views,
         lambda: item_totals < config.max_item_views)
    step("min_user_views", config.min_user_views,
         lambda: np.bincount(users[keep], weights=views[keep], minlength=n_users)[users]
         >= config.min_user_views)
    if not keep.all():
        df = df[keep]
    return df.reset_index(drop=True), FilterReport(before=before, after=current, steps=steps)


@dataclass
class Split:
    """A hold-out split: what training sees and what is kept back."""

    train: UtilityMatrix
    """The utility matrix with the held-out cells removed (same rows, columns, vocabularies)."""
    test: sp.csr_matrix
    """Binary (1.0) float32 users x resources: the held-out (user, resource) pairs."""
    users: np.ndarray
    """Sorted row numbers of the users that lost at least one pair (the ones to evaluate)."""


def filtered_matrix(df: pd.DataFrame, config: FilterConfig, say: Callable[[str], None]
                    ) -> tuple[UtilityMatrix, FilterReport]:
    """The platform's filters then the utility matrix: the one path from a views table to
    what a model is fitted on (offline extracts and the online counts alike). ``say`` gets
    each line of the filter report. All rows filtered out gives a 0 x 0 matrix."""
    df, report = apply_filters(df, config)
    for line in report.lines():
        say(line)
    return build_matrix(df), report


def holdout_split(matrix: UtilityMatrix, fraction: float = 0.2, seed: int = 42) -> Split:
    """The platform's ``make_train``: hide ceil(fraction * nnz) random (user, resource) pairs.

    Unlike the original, ``test`` holds only the hidden pairs (the metrics filter training
    pairs out of the ranking anyway), and the draw uses a seeded numpy Generator.
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"test fraction must be between 0 and 1, not {fraction}")
    views = matrix.views.tocsr()
    nnz = views.nnz
    n_test = int(np.ceil(fraction * nnz))
    rng = np.random.default_rng(seed)
    picked = np.zeros(nnz, dtype=bool)
    picked[rng.choice(nnz, size=n_test, replace=False)] = True
    return _split_off(matrix, picked)


def time_split(matrix: UtilityMatrix, fraction: float = 0.2) -> Split:
    """Each user's latest pairs held out: of a user's n pairs, the ceil(fraction * n) with
    the latest ``times`` (ties: the higher column), at most n - 1, so every user keeps a
    pair to be scored from (a user with one pair keeps it in training). No randomness."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"test fraction must be between 0 and 1, not {fraction}")
    if matrix.times is None:
        raise InputError("a split by time needs the time of each view (a ts column)")
    views = matrix.views.tocsr()
    lengths = np.diff(views.indptr)
    row_of = np.repeat(np.arange(views.shape[0]), lengths)
    held = np.minimum(np.ceil(fraction * lengths).astype(np.int64), lengths - 1)
    order = np.lexsort((views.indices, matrix.times.data, row_of))  # by user, then time
    rank = np.empty(views.nnz, dtype=np.int64)
    rank[order] = np.arange(views.nnz) - views.indptr[row_of[order]]
    return _split_off(matrix, rank >= (lengths - held)[row_of])


def _split_off(matrix: UtilityMatrix, picked: np.ndarray) -> Split:
    """The split holding out the stored entries ``picked`` (a mask over ``views.data``)."""
    views = matrix.views.tocsr()
    row_of = np.repeat(np.arange(views.shape[0]), np.diff(views.indptr))
    test = sp.csr_matrix(
        (np.ones(int(picked.sum()), dtype=np.float32), (row_of[picked], views.indices[picked])),
        shape=views.shape,
    )
    kept = ~picked

    def keep(m: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix((m.data[kept], (row_of[kept], views.indices[kept])),
                             shape=views.shape, dtype=m.dtype)

    times = None if matrix.times is None else keep(matrix.times)
    return Split(
        train=UtilityMatrix(views=keep(views), users=matrix.users, items=matrix.items,
                            times=times),
        test=test,
        users=np.unique(row_of[picked]),
    )


def drop_hidden(views: pd.DataFrame, hidden: Iterable[int]) -> pd.DataFrame:
    """The views table without the rows of hidden resources (a retrain leaves taken-down
    resources out of the model; their views stay counted, for a restore)."""
    hidden = list(hidden)
    if not hidden or views.empty:
        return views
    return views[~views["resource_id"].isin(hidden)].reset_index(drop=True)


def uncovered_users(df: pd.DataFrame, matrix: UtilityMatrix) -> list[str]:
    """Users of ``df`` (the views table before the filters) who viewed a resource of
    ``matrix`` but are not among its users (the filters dropped them). A model trained on
    ``matrix`` can fold them in, and nothing else would: the trainer hands them to the updater."""
    known = df["resource_id"].isin(matrix.items.ids).to_numpy()
    users = np.asarray(df["user_id"][known].unique(), dtype=str)  # a Categorical: by codes
    return users[matrix.users.numbers(users, missing="negative") < 0].tolist()
