"""Vocabulary, the utility matrix, the platform's filters and the hold-out split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from trainer.config import FilterConfig
from trainer.data.matrix import apply_filters, build_matrix, holdout_split
from trainer.data.vocabulary import Vocabulary


def frame(rows) -> pd.DataFrame:
    users, items, views = zip(*rows, strict=True)
    return pd.DataFrame({"user_id": pd.array(users, dtype=str),
                         "resource_id": np.asarray(items, dtype=np.int64),
                         "views": np.asarray(views, dtype=np.int64)})


def test_vocabulary_lookups_and_unknown_policy():
    vocab = Vocabulary([30, 10, 4294967295], name="resource")
    assert len(vocab) == 3 and vocab.id(2) == 4294967295
    assert vocab.numbers([10, 30]).tolist() == [1, 0]
    assert vocab.number("4294967295") == 2  # ids typed on a command line are strings
    assert 10 in vocab and 11 not in vocab
    assert vocab.numbers([10, 11], missing="negative").tolist() == [1, -1]
    with pytest.raises(InputError, match="unknown resource 11, 12"):
        vocab.numbers([11, 10, 12])
    with pytest.raises(InputError, match="must be integers"):
        vocab.number("abc")
    users = Vocabulary.from_values(["b", "a", "b"], name="user")
    assert users.ids.tolist() == ["a", "b"] and users.number("b") == 1
    with pytest.raises(ValueError, match="unique"):
        Vocabulary([1, 1])


def test_build_matrix_orders_ids_and_sums_repeats():
    df = frame([("u2", 300, 4), ("u1", 100, 1), ("u2", 100, 2), ("u1", 200, 5), ("u1", 200, 1)])
    m = build_matrix(df)
    assert m.users.ids.tolist() == ["u1", "u2"]
    assert m.items.ids.tolist() == [100, 200, 300]
    assert m.views.dtype == np.float32
    assert m.views.toarray().tolist() == [[1, 6, 0], [2, 0, 4]]
    assert m.nnz == 4 and m.sparsity == pytest.approx(1 - 4 / 6)
    assert m.item_totals().tolist() == [3, 6, 4]


def test_build_matrix_on_given_vocabularies_drops_unknown_ids():
    m = build_matrix(frame([("u1", 100, 1), ("u2", 200, 2)]))
    other = build_matrix(frame([("u1", 200, 3), ("u9", 100, 1), ("u2", 999, 1)]),
                         users=m.users, items=m.items)
    assert other.shape == m.shape and other.views.toarray().tolist() == [[0, 3], [0, 0]]


def test_filters_in_the_platform_order_with_counts():
    rows = (
        [(f"a{i}", 1, 1) for i in range(10)]          # resource 1: 10 views, kept
        + [("a0", 2, 3)]                                # resource 2: 3 views, too few
        + [(f"a{i}", 3, 10) for i in range(5)]          # resource 3: 50 views, too many
        + [("lone", 2, 1), ("lone", 3, 1)]             # "lone" only touches removed resources
        + [("b", 1, 1)]                                 # b: 1 view after filtering, too few
    )
    df = frame(rows)
    kept, report = apply_filters(df, FilterConfig(min_item_views=5, max_item_views=40,
                                                  min_user_views=1))
    assert report.before == {"users": 12, "resources": 3, "interactions": 19, "views": 66}
    first, second, third = report.steps
    assert (first.name, first.resources, first.users, first.interactions, first.views) == \
        ("min_item_views", 1, 0, 2, 4)
    assert (second.resources, second.users, second.interactions, second.views) == (1, 1, 6, 51)
    assert (third.users, third.interactions) == (0, 0)
    assert sorted(kept["resource_id"].unique()) == [1]

    _, report = apply_filters(df, FilterConfig(min_item_views=5, max_item_views=40,
                                               min_user_views=2))
    assert (report.steps[2].users, report.steps[2].interactions, report.steps[2].views) == \
        (11, 11, 11)
    assert report.after == {"users": 0, "resources": 0, "interactions": 0, "views": 0}


def test_zero_turns_a_filter_off():
    df = frame([("u1", 1, 1), ("u2", 2, 100000)])
    kept, report = apply_filters(df, FilterConfig(0, 0, 0))
    assert len(kept) == 2 and all(s.interactions == 0 for s in report.steps)
    assert "min_item_views: off" in report.lines()
    # The max filter counts "this many or more".
    kept, _ = apply_filters(df, FilterConfig(0, 100000, 0))
    assert kept["resource_id"].tolist() == [1]


def test_filter_config_rejects_nonsense():
    with pytest.raises(InputError):
        FilterConfig(min_item_views=-1)
    with pytest.raises(InputError, match="above"):
        FilterConfig(min_item_views=100, max_item_views=50)


def _random_matrix(seed=0):
    rng = np.random.default_rng(seed)
    rows = {(f"u{rng.integers(0, 40)}", int(rng.integers(1, 60)), int(rng.integers(1, 9)))
            for _ in range(600)}
    df = frame(sorted(rows)).drop_duplicates(["user_id", "resource_id"])
    return build_matrix(df)


def test_holdout_split_sizes_disjointness_and_seed():
    m = _random_matrix()
    split = holdout_split(m, fraction=0.2, seed=5)
    n_test = int(np.ceil(0.2 * m.nnz))
    assert split.test.nnz == n_test and split.train.nnz == m.nnz - n_test
    assert set(np.unique(split.test.data)) == {1.0}
    train_d, test_d, full = split.train.views.toarray(), split.test.toarray(), m.views.toarray()
    assert not ((train_d > 0) & (test_d > 0)).any()
    # Together they are the original matrix; training keeps the original counts.
    assert np.array_equal((train_d > 0) | (test_d > 0), full > 0)
    assert np.array_equal(train_d[train_d > 0], full[train_d > 0])
    assert split.users.tolist() == np.flatnonzero(test_d.sum(axis=1) > 0).tolist()
    assert split.train.users == m.users and split.train.items == m.items

    again = holdout_split(m, fraction=0.2, seed=5)
    assert (again.test != split.test).nnz == 0
    other = holdout_split(m, fraction=0.2, seed=6)
    assert (other.test != split.test).nnz > 0
    with pytest.raises(InputError):
        holdout_split(m, fraction=1.0)
