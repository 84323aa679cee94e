"""Metrics: implicit's definitions, the popularity baseline, model vs popularity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from implicit.evaluation import ranking_metrics_at_k

from trainer.config import AlsConfig, FilterConfig
from trainer.data.matrix import apply_filters, build_matrix, holdout_split
from trainer.data.synth import generate
from trainer.models.als import fit
from trainer.quality.evaluate import (
    PopularityRanker,
    as_implicit,
    evaluate,
    evaluate_model,
    evaluate_popularity,
)


def csr(rows: list[list[int]]) -> sp.csr_matrix:
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def reference_metrics(ranked: dict[int, list[int]], test: sp.csr_matrix, k: int) -> dict:
    """The definitions of implicit's ranking_metrics_at_k, written out plainly."""
    test = test.tocsr()
    items = test.shape[1]
    relevant = pr_div = ap_sum = ndcg_sum = auc_sum = 0.0
    users = [u for u in range(test.shape[0]) if test.indptr[u + 1] > test.indptr[u]]
    gains = 1.0 / np.log2(np.arange(2, k + 2))
    for u in users:
        likes = set(test.indices[test.indptr[u]:test.indptr[u + 1]].tolist())
        top = ranked[u][:k]
        hits = [i in likes for i in top]
        pr_div += min(k, len(likes))
        relevant += sum(hits)
        ap = hit = 0
        for rank, h in enumerate(hits):
            if h:
                hit += 1
                ap += hit / (rank + 1)
        ap_sum += ap / min(k, len(likes))
        ndcg_sum += gains[np.flatnonzero(hits)].sum() / gains[:min(k, len(likes))].sum()
        # AUC as implicit computes it: hits ranked above each miss in the top k, the rest
        # of the negatives assumed to rank below the average positive.
        auc = hit_so_far = miss = 0
        for h in hits:
            if h:
                hit_so_far += 1
            else:
                miss += 1
                auc += hit_so_far
        neg = items - len(likes)
        auc += (hit_so_far + len(likes)) / 2.0 * (neg - miss)
        auc_sum += auc / (len(likes) * neg)
    n = len(users)
    return {"precision": relevant / pr_div, "map": ap_sum / n, "ndcg": ndcg_sum / n,
            "auc": auc_sum / n}


def test_popularity_ranker_orders_by_training_users_skipping_viewed():
    train = csr([
        [1, 0, 5, 0, 0, 0],
        [1, 0, 1, 0, 9, 0],
        [0, 0, 1, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
    ])
    ranker = PopularityRanker(train)
    assert ranker.popularity.tolist() == [3, 0, 3, 0, 1, 0]
    ids, _ = ranker.recommend(np.array([0, 2]), train[[0, 2]], N=3)
    # Ties (items 0 and 2; items 1, 3, 5) go to the lower column; view counts don't matter.
    assert ids.tolist() == [[4, 1, 3], [0, 4, 1]]


def test_metrics_follow_the_definitions_by_hand():
    train = csr([
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0, 0, 0],
        [1, 0, 1, 0, 1, 0, 0],
    ])
    test = csr([
        [0, 0, 0, 1, 0, 0, 1],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 0],
    ])
    got = evaluate_popularity(train, test, k=2)
    # Popularity: 0 (3 users), 1 and 2 (2), 4 (1), then 3, 5, 6 by column.
    # user 0 gets [1, 2]: no hit; user 1 gets [2, 4]: no hit; user 3 gets [1, 3]: hit at 1.
    assert got["precision"] == pytest.approx(1 / (2 + 1 + 1))
    assert got["map"] == pytest.approx((0 + 0 + 1) / 3)
    assert got["ndcg"] == pytest.approx((0 + 0 + 1) / 3)
    ranked = {u: PopularityRanker(train).recommend([u], train[[u]], N=2)[0][0].tolist()
              for u in range(4)}
    assert got == pytest.approx(reference_metrics(ranked, test, 2))


@pytest.fixture(scope="module")
def split():
    data = generate(n_users=700, n_resources=100, langs=["en"], seed=5, n_subjects=5)
    df, _ = apply_filters(data.views_for("en"), FilterConfig(20, 0, 3))
    return holdout_split(build_matrix(df), 0.2, seed=1)


def test_model_path_is_implicits_ranking_metrics(split):
    model = fit(split.train, AlsConfig(factors=12, iterations=8), "en", num_threads=1)
    ours = evaluate_model(model, split.train.views, split.test, k=10, num_threads=1)
    theirs = ranking_metrics_at_k(as_implicit(model, 1), split.train.views, split.test, K=10,
                                  show_progress=False)
    assert ours == pytest.approx(theirs)
    # And both match the plain definitions on the model's own rankings.
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    ids, _ = as_implicit(model, 1).recommend(users, split.train.views[users], N=10)
    ranked = dict(zip(users.tolist(), ids.tolist(), strict=True))
    assert ours == pytest.approx(reference_metrics(ranked, split.test, 10))


def test_popularity_path_matches_the_definitions(split):
    ranker = PopularityRanker(split.train.views)
    users = np.flatnonzero(np.diff(split.test.indptr) > 0)
    ids, _ = ranker.recommend(users, split.train.views[users], N=10)
    ranked = dict(zip(users.tolist(), ids.tolist(), strict=True))
    got = evaluate_popularity(split.train.views, split.test, k=10)
    assert got == pytest.approx(reference_metrics(ranked, split.test, 10))


def test_model_beats_popularity_on_planted_subjects(split):
    result = evaluate(split.train, split.test, AlsConfig(factors=12, iterations=8), k=10,
                      num_threads=1)
    assert set(result) == {"k", "model", "popularity", "users", "items"}
    assert set(result["model"]) == set(result["popularity"]) == {"precision", "map", "ndcg",
                                                                  "auc"}
    assert result["users"] == len(split.users) and result["items"] == split.train.shape[1]
    assert result["model"]["ndcg"] > 1.5 * result["popularity"]["ndcg"]
