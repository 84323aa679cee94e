"""Fold-in math against ``implicit``'s own solver, and the batched top-N scorer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares

from tests.helpers import assert_top_k
from trainer.models.als import PublishedALS, fold_in, gram
from trainer.models.confidence import scale_confidence

USERS, ITEMS, FACTORS = 120, 60, 8


def _views(seed: int = 3, users: int = USERS) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((users, ITEMS)) < 0.12) * rng.integers(1, 30, (users, ITEMS))
    dense[:, 0] += 1  # every user has at least one view
    return sp.csr_matrix(dense.astype(np.float32))


def _fit(views: sp.csr_matrix, scaling: str, alpha: float, reg: float) -> AlternatingLeastSquares:
    # The trainer's convention: implicit gets c = 1 + alpha * f(views) with its own alpha at 1.
    model = AlternatingLeastSquares(
        factors=FACTORS, regularization=reg, alpha=1.0, iterations=4, random_state=0,
        num_threads=1,
    )
    model.fit(scale_confidence(views, scaling, alpha), show_progress=False)
    return model


def _foldin(model: AlternatingLeastSquares, scaling: str, alpha: float, reg: float,
            item_totals=None) -> PublishedALS:
    ids = np.arange(1000, 1000 + ITEMS)  # resource ids are not row numbers
    return PublishedALS(ids, model.item_factors, reg, alpha, scaling, "v1", item_totals=item_totals)


def _as_counts(fi: PublishedALS, views: sp.csr_matrix) -> list[dict[int, int]]:
    return [
        {int(fi.item_ids[i]): int(v) for i, v in zip(row.indices, row.data, strict=True)}
        for row in views
    ]


@pytest.mark.parametrize("scaling,alpha", [("log", 50.0), ("linear", 2.0), ("logshare", 50.0)])
def test_fold_in_equals_implicit_recalculate_user(scaling, alpha):
    # A large regularization makes an unscaled and a per-interaction-scaled penalty differ
    # by far more than the tolerance, so this also pins implicit's convention.
    reg = 3.0
    views = _views()
    model = _fit(views, scaling, alpha, reg)
    fi = _foldin(model, scaling, alpha, reg)
    users = np.array([0, 5, 17, 42, 99])
    expected = model.recalculate_user(users, scale_confidence(views[users], scaling, alpha))
    got = fi.fold_in(fi.views_matrix(_as_counts(fi, views[users])))
    assert got.dtype == np.float32 and got.shape == (users.size, FACTORS)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)
    # ...and one user at a time gives the same as the stacked batch.
    np.testing.assert_allclose(fi.fold_in(views[users[2:3]]), got[2:3], rtol=1e-5, atol=1e-6)
    # The tolerance tells the conventions apart: reg scaled by the user's number of
    # interactions (as some ALS implementations do) lands far outside it.
    conf = scale_confidence(views[users], scaling, alpha)
    scaled = np.vstack([
        fold_in(conf[k], model.item_factors, gram(model.item_factors, reg * conf[k].nnz))
        for k in range(users.size)
    ])
    assert not np.allclose(scaled, expected, rtol=1e-3, atol=1e-5)

def test_fold_in_equals_partial_fit_users_for_brand_new_users():
    reg, alpha = 0.1, 50.0
    views = _views()
    model = _fit(views, "log", alpha, reg)
    fi = _foldin(model, "log", alpha, reg)
    newcomers = _views(seed=11, users=4)  # users the model never saw
    new_ids = np.arange(USERS, USERS + 4)
    model.partial_fit_users(new_ids, scale_confidence(newcomers, "log", alpha))
    got = fi.fold_in(fi.views_matrix(_as_counts(fi, newcomers)))
    np.testing.assert_allclose(got, model.user_factors[new_ids], rtol=1e-3, atol=1e-5)
    # A newcomer's one single view is enough for factors.
    single = sp.csr_matrix(([3.0], ([0], [7])), shape=(1, ITEMS), dtype=np.float32)
    expected = model.recalculate_user(0, scale_confidence(single, "log", alpha))
    np.testing.assert_allclose(fi.fold_in(single)[0], expected, rtol=1e-3, atol=1e-5)


def test_bm25_fold_in_equals_implicit_given_training_item_totals():
    reg, alpha = 0.5, 5.0
    views = _views()
    model = _fit(views, "bm25", alpha, reg)
    totals = np.asarray(views.sum(axis=0)).ravel()
    fi = _foldin(model, "bm25", alpha, reg, item_totals=totals)
    users = np.array([1, 2, 3, 60])
    # Confidences of these rows as computed over the whole training matrix.
    expected = model.recalculate_user(users, scale_confidence(views, "bm25", alpha)[users])
    np.testing.assert_allclose(fi.fold_in(views[users]), expected, rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="item_totals"):
        _foldin(model, "bm25", alpha, reg)


def test_unknown_resources_are_ignored_and_only_unknown_gives_no_recs():
    reg, alpha = 0.1, 50.0
    views = _views()
    model = _fit(views, "log", alpha, reg)
    fi = _foldin(model, "log", alpha, reg)
    known = {1003: 4, 1010: 1}
    mixed = {**known, 999_999: 50, 5: 2}
    only_unknown = {999_999: 3, 4_294_967_295: 1}
    x = fi.fold_in(fi.views_matrix([known, mixed, only_unknown, {}]))
    np.testing.assert_array_equal(x[0], x[1])
    assert x[0].any()
    assert not x[2].any() and not x[3].any()
    ids, _ = fi.recommend(x, fi.views_matrix([known, mixed, only_unknown, {}]), 10)
    assert ((ids > 0).sum(axis=1) == [10, 10, 0, 0]).all()


def test_recommend_matches_a_full_sort_and_excludes_viewed():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((30, FACTORS)).astype(np.float32)
    y = rng.standard_normal((ITEMS, FACTORS)).astype(np.float32)
    fi = PublishedALS(np.arange(1000, 1000 + ITEMS), y, 0.1, 1.0, "log")
    viewed = sp.random(30, ITEMS, density=0.3, random_state=2, format="csr")
    scores = x @ y.T
    ids, all_scores = fi.recommend(x, viewed, 7)
    for u in range(30):
        allowed = np.setdiff1d(np.arange(ITEMS), viewed[u].indices)
        # Two float32 products may round near-equal scores apart in either order.
        assert len(ids[u]) == 7
        assert_top_k(ids[u], {1000 + j: scores[u, j] for j in allowed})
        np.testing.assert_allclose(all_scores[u], scores[u, ids[u] - 1000], rtol=1e-5)


def test_recommend_lists_are_short_when_few_items_remain():
    fi = PublishedALS(np.array([10, 20, 30]), np.eye(3, FACTORS), 0.1, 1.0, "log")
    x = np.ones((2, FACTORS), dtype=np.float32)
    viewed = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0]], dtype=np.float32))
    ids, scores = fi.recommend(x, viewed, 5)
    assert ids.shape == (2, 3)  # never longer than the catalogue
    assert list(ids[0]) == [30, 0, 0] and list(scores[0, 1:]) == [0, 0]
    assert sorted(ids[1]) == [10, 20, 30]


def test_fold_in_of_empty_rows_is_zero_without_solving():
    y = np.random.default_rng(0).standard_normal((ITEMS, FACTORS)).astype(np.float32)
    empty = sp.csr_matrix((3, ITEMS), dtype=np.float32)
    assert not fold_in(empty, y, gram(y, 0.0)).any()  # reg 0: a solve could fail; none runs


def test_rows_of_maps_ids_and_marks_unknown():
    fi = PublishedALS(np.array([50, 7, 4_294_967_295]), np.ones((3, 2)), 0.1, 1.0, "linear")
    np.testing.assert_array_equal(fi.rows_of([7, 4_294_967_295, 8, 50]), [1, 2, -1, 0])


def test_spark_engine_fold_in_solves_the_count_scaled_objective():
    """Spark's implicit ALS: (Y^T C_u Y + reg * n_u * I) x = Y^T C_u p_u, n_u = the user's
    number of viewed resources; checked against a direct dense solve."""
    rng = np.random.default_rng(2)
    y = rng.standard_normal((30, 4)).astype(np.float32)
    views = sp.csr_matrix(rng.integers(0, 3, (5, 30)) * (rng.random((5, 30)) < 0.3),
                          dtype=np.float32)
    reg = 2.0
    got = PublishedALS(item_ids=np.arange(1, 31), item_factors=y, regularization=reg, alpha=10.0,
                 scaling="log", engine="spark").fold_in(views)
    conf = scale_confidence(views, "log", 10.0).toarray().astype(np.float64)
    for u in range(5):
        seen = conf[u] > 0
        c = np.where(seen, conf[u], 1.0)
        a = (y.T * c) @ y + reg * seen.sum() * np.eye(4)
        want = np.linalg.solve(a, (y.T * c) @ seen.astype(float)) if seen.any() else 0 * y[0]
        np.testing.assert_allclose(got[u], want, rtol=1e-4, atol=1e-5)
    implicit_objective = PublishedALS(item_ids=np.arange(1, 31), item_factors=y, regularization=reg,
                                alpha=10.0, scaling="log").fold_in(views)
    assert not np.allclose(implicit_objective, got, atol=1e-3)
