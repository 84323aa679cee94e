"""Scoring the published lists (trainer/scoring/): exact faiss search agrees
with the numpy scoring, approximate lists keep every invariant (viewed resources never in a
user's list, the resource never in its own similar list, lists full length), and
``recs train --recs-method/--similar-method`` publishes through them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from core.errors import InputError
from recs.cli import main
from trainer.models.rank import recommend_by_factors, similar_by_index
from trainer.scoring.search import Scorer
from trainer.scoring_config import AnnConfig, ScoringConfig

# faiss_min_items=0: exact scoring through faiss even on these small catalogues, so the
# comparison with the numpy scoring is between two implementations.
EXACT = ScoringConfig(similar_method="exact", recs_method="exact", faiss_min_items=0)
ANN = ScoringConfig(similar_method="ann", recs_method="ann", faiss_min_items=0)


def clustered(rng, rows: int, centres: np.ndarray) -> np.ndarray:
    """Factors around a few centres, like trained item factors (planted subjects)."""
    pick = rng.integers(0, len(centres), rows)
    return (centres[pick] + 0.3 * rng.standard_normal((rows, centres.shape[1]))).astype(
        np.float32)


@pytest.fixture(scope="module")
def factors():
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((12, 16)).astype(np.float32)
    items, users = clustered(rng, 4000, centres), clustered(rng, 1500, centres)
    seen = sp.random(1500, 4000, density=0.01, format="csr", random_state=3,
                     dtype=np.float32)
    # One heavy viewer who has seen all but 7 resources: their list must hold exactly 7.
    heavy = np.zeros((1, 4000), dtype=np.float32)
    heavy[0, 7:] = 1
    seen = sp.vstack([sp.csr_matrix(heavy), seen[1:]]).tocsr()
    return items, users, seen


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean share of each row of ``b`` found in the same row of ``a`` (recall of a vs b)."""
    return float(np.mean([len(set(x) & set(y)) / max(len(y), 1) for x, y in zip(a, b,
                                                                                  strict=True)]))


def assert_user_lists_valid(idx, seen, n):
    for row, cols in enumerate(idx):
        filled = cols[cols >= 0]
        want = min(n, seen.shape[1] - seen[row].nnz)
        assert len(filled) == want, f"user {row}: {len(filled)} entries, want {want}"
        assert not set(filled) & set(seen[row].indices), f"user {row}: viewed resource listed"
        assert (cols[:want] >= 0).all()  # filled slots come first


def test_exact_search_matches_numpy_scoring(factors):
    items, users, seen = factors
    want_idx, want_val = recommend_by_factors(users, items, 20, exclude=seen)
    got_idx, got_val = Scorer(items, EXACT).user_lists(users, seen, 20)
    np.testing.assert_allclose(got_val, want_val, rtol=1e-5, atol=1e-5)
    assert overlap(got_idx, want_idx) > 0.999  # only near-ties may swap
    assert_user_lists_valid(got_idx, seen, 20)
    small_catalogue = Scorer(items, ScoringConfig(recs_method="exact"))  # the numpy search
    assert_user_lists_valid(small_catalogue.user_lists(users, seen, 20)[0], seen, 20)
    want_idx, want_val = similar_by_index(items, np.arange(len(items)), 20)
    got_idx, got_val = Scorer(items, EXACT).similar_lists(np.arange(len(items)), 20)
    np.testing.assert_allclose(got_val, want_val, rtol=1e-5, atol=1e-5)
    assert overlap(got_idx, want_idx) > 0.999


def test_ann_lists_keep_the_invariants_and_recall(factors):
    items, users, seen = factors
    exact, _ = Scorer(items, EXACT).user_lists(users, seen, 20)
    got, _ = Scorer(items, ANN).user_lists(users, seen, 20)
    assert_user_lists_valid(got, seen, 20)
    assert overlap(got, exact) >= 0.95
    rows = np.arange(len(items))
    sim_exact, _ = Scorer(items, EXACT).similar_lists(rows, 20)
    sim, sim_val = Scorer(items, ANN).similar_lists(rows, 20)
    assert (sim >= 0).all() and not (sim == rows[:, None]).any()
    assert (np.diff(sim_val, axis=1) <= 1e-6).all()  # best first
    assert overlap(sim, sim_exact) >= 0.95


def test_rows_the_index_cannot_fill_are_rescored_exactly(factors):
    items, users, seen = factors
    # One cell probed out of many: most candidates lists come back short or full of
    # viewed resources; the exact fallback must still fill every list.
    poor = AnnConfig(cells_per_sqrt=8, min_probe=1, probe_share=0.0, recs_probe_share=0.0)
    got, _ = Scorer(items, ANN, ann_config=poor).user_lists(users, seen, 50)
    assert_user_lists_valid(got, seen, 50)


def test_auto_switches_to_ann_by_catalogue_size():
    config = ScoringConfig(ann_min_items=1000, recs_ann_min_items=5000)
    assert config.resolve("auto", 999) == "exact"
    assert config.resolve("auto", 1000) == "ann"
    assert config.resolve("exact", 10**6) == "exact"
    items = np.zeros((2000, 4), dtype=np.float32)
    scorer = Scorer(items, config)
    assert (scorer.similar_method, scorer.recs_method) == ("ann", "exact")
    assert Scorer(np.zeros((5000, 4), dtype=np.float32), config).recs_method == "ann"
    with pytest.raises(InputError):
        ScoringConfig(recs_method="fast")


def test_bad_method_is_one_line_and_exit_2(capsys):
    assert main(["train", "--recs-method", "fast"]) == 2
    assert "--recs-method" in capsys.readouterr().err


@pytest.mark.integration
def test_train_publishes_ann_lists_without_viewed_resources(redis_server, tmp_path):
    from store.client import RecsClient
    from tests.helpers import load_counts
    from tests.test_train_online import FLAGS, KEYS, N
    from trainer.data.synth import generate

    data = generate(n_users=600, n_resources=150, langs=("en",), seed=4)
    client = redis_server.client()
    load_counts(client, data.views_for("en"), "en")
    assert main(["train", "--redis-url", redis_server.url, "--model-dir",
                 str(tmp_path / "models"), *FLAGS, "--lang", "en", "--recs-method", "ann",
                 "--similar-method", "ann"]) == 0
    reader = RecsClient(client)
    views = data.views_for("en")
    users = [m.decode() for m in client.smembers(KEYS.published_users("en"))]
    assert users
    items = int(client.hget(KEYS.model("en"), "items"))
    for user in users[:200]:
        listed = {rid for rid, _ in reader.recommend("en", user, N)}
        viewed = set(views.loc[views["user_id"] == user, "resource_id"])
        assert not listed & viewed
        assert len(listed) == min(N, items - len(viewed & _model_items(client)))
    client.close()


def _model_items(client) -> set[int]:
    from tests.test_train_online import KEYS

    raw = client.get(KEYS.item_ids("en"))
    return set(np.frombuffer(raw, dtype="<u4").tolist())
