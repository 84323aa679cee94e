"""The split of an ALS or EASE score over the user's views (trainer.models.explain): exact."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from trainer.models.als import PublishedALS
from trainer.models.explain import explain


@pytest.mark.parametrize("scaling", ["linear", "logshare", "bm25"])
def test_contributions_sum_to_the_fold_in_score(scaling):
    rng = np.random.default_rng(3)
    ids = rng.choice(np.arange(1, 10**6), size=60, replace=False)
    model = PublishedALS(item_ids=ids, item_factors=rng.normal(size=(60, 6)).astype(np.float32),
                   regularization=0.1, alpha=20.0, scaling=scaling,
                   item_totals=rng.integers(1, 500, size=60).astype(np.float32))
    views = {int(ids[i]): int(c) for i, c in zip([1, 4, 9, 20], [1, 7, 2, 30], strict=True)}
    factors = model.fold_in(model.views_matrix([views]))[0].astype(np.float64)
    targets = [int(ids[30]), int(ids[41]), int(ids[4])]
    reasons = explain(model, views, targets, top=len(views), positive_only=False)
    for rid in targets:
        row = int(model.rows_of(np.array([rid]))[0])
        score = float(model.item_factors[row].astype(np.float64) @ factors)
        parts = reasons[rid]
        assert {r.resource_id for r in parts} == set(views)
        assert sum(r.contribution for r in parts) == pytest.approx(score, rel=1e-4, abs=1e-6)
        assert sum(r.share for r in parts) == pytest.approx(1.0, rel=1e-4)
        assert [r.contribution for r in parts] == sorted((r.contribution for r in parts),
                                                         reverse=True)


def test_top_cuts_and_unknown_resources_get_no_reasons():
    rng = np.random.default_rng(4)
    model = PublishedALS(item_ids=np.arange(1, 21), item_factors=rng.normal(size=(20, 4)),
                   regularization=0.05, alpha=10.0, scaling="log")
    views = {1: 3, 2: 1, 3: 5, 4: 2}
    every = explain(model, views, [7], top=4, positive_only=False)[7]
    got = explain(model, views, [7, 999], top=2)
    assert got[7] == [r for r in every if r.contribution > 0][:2] and got[999] == []
    assert all(r.contribution > 0 for r in explain(model, views, [7], top=4)[7])
    assert explain(model, {555: 4}, [7]) == {7: []}  # no view the model knows


@pytest.mark.parametrize("scaling", ["binary", "log"])
def test_ease_contributions_sum_to_the_ease_score(scaling):
    from trainer.models.ease import ease_input
    from trainer.models.explain import explain_ease

    rng = np.random.default_rng(5)
    ids = np.arange(100, 130)
    b = rng.normal(size=(30, 30)).astype(np.float32)
    np.fill_diagonal(b, 0)
    views = {101: 3, 105: 1, 117: 40, 999: 2}  # 999: not in the model
    rows = {j: b[j - 100] for j in views if j in set(ids.tolist())}
    got = explain_ease(ids, rows, views, scaling, [110, 120, 5], top=5, positive_only=False)
    x = np.zeros(30)
    known = [j for j in views if j in rows]
    counts = sp.csr_matrix(np.array([[views[j] for j in known]], dtype=np.float32))
    x[[j - 100 for j in known]] = ease_input(counts, scaling).toarray().ravel()
    for rid in (110, 120):
        score = float(x @ b[:, rid - 100].astype(np.float64))
        assert sum(r.contribution for r in got[rid]) == pytest.approx(score, rel=1e-5)
        assert {r.resource_id for r in got[rid]} == set(known)
    assert got[5] == []
