"""EASE against its closed form computed by hand, the size limit, the blend, --model choice
and the model files of each kind."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from core.errors import InputError
from tests.helpers import assert_top_k
from trainer.config import AlsConfig, BlendConfig, EaseConfig, FilterConfig, ModelSpec
from trainer.data.matrix import apply_filters, build_matrix, holdout_split
from trainer.data.synth import generate
from trainer.models.als import ALSModel
from trainer.models.blend import BlendModel, zscore_rows
from trainer.models.ease import EASEModel, check_size, ease_input, ease_weights, fit_ease
from trainer.models.file import load_model, model_doc, save_model
from trainer.quality.choose import evaluate_spec, fit_model

SMALL_ALS = AlsConfig(factors=8, iterations=5)


def tiny():
    rows = [[3, 1, 0, 0], [1, 0, 2, 0], [0, 1, 1, 1], [5, 0, 0, 1], [0, 0, 4, 1]]
    df = pd.DataFrame([(f"u{u}", 10 + i, v) for u, row in enumerate(rows)
                       for i, v in enumerate(row) if v],
                      columns=["user_id", "resource_id", "views"])
    return build_matrix(df), np.array(rows, dtype=np.float64)


@pytest.mark.parametrize("scaling", ["binary", "log"])
def test_ease_equals_the_closed_form_by_hand(scaling):
    matrix, dense = tiny()
    x = (dense > 0).astype(float) if scaling == "binary" else np.log1p(dense)
    l2 = 0.7
    p = np.linalg.inv(x.T @ x + l2 * np.eye(4))
    expected = np.eye(4) - p / np.diag(p)[None, :]  # B = I - P / diag(P): column j by P_jj
    np.fill_diagonal(expected, 0.0)

    assert np.allclose(ease_weights(ease_input(matrix.views, scaling), l2), expected, atol=1e-6)
    model = fit_ease(matrix, EaseConfig(l2=l2, scaling=scaling), "en")
    assert np.allclose(model.score_rows(np.arange(5)), x @ expected, atol=1e-5)
    # recommend: x_u @ B over the resources u has not viewed, best first.
    # (Under binary scaling resources 12 and 13 tie exactly, for both lists: either order.)
    ids, scores = model.recommend(["u0"], n=4)
    unseen = [2, 3]
    assert_top_k(ids[0][:2], {10 + j: (x[0] @ expected)[j] for j in unseen})
    assert ids[0][2] == -1
    # similar(j): row j of B, j itself excluded.
    sim_ids, sim_scores = model.similar_items([11], n=3)
    row = expected[1].copy()
    assert_top_k(sim_ids[0], {10 + j: row[j] for j in (0, 2, 3)})
    row[1] = -np.inf
    assert np.allclose(sim_scores[0], np.sort(row)[::-1][:3], atol=1e-6)


def test_a_catalogue_over_the_memory_limit_is_refused_with_one_line_and_auto_falls_back(
        monkeypatch):
    gb = 10**9
    with pytest.raises(InputError, match=r"on 10001 resources needs about 1\.2 GB to fit, "
                                         r"more than the 1\.0 GB --memory-limit") as err:
        check_size(10_001, memory_limit=gb)
    assert "\n" not in str(err.value)
    check_size(9_128, memory_limit=gb)  # 12 x 9128^2 is just under 1 GB

    matrix = planted_matrix()
    monkeypatch.setattr("trainer.models.ease.ease_fit_bytes", lambda n: 10**15)  # a petabyte
    model, kind = fit_model(matrix, ModelSpec("auto", als=SMALL_ALS, memory_limit=10**12,
                                              blend=BlendConfig(weight=None, partner="ease")),
                            "en", threads=1)
    assert kind == "als" and isinstance(model, ALSModel)
    with pytest.raises(InputError, match="O\\(resources\\^2\\)"):
        fit_model(matrix, ModelSpec("ease", memory_limit=10**12), "en")


def test_a_memory_limit_above_the_available_memory_lets_ease_fit(monkeypatch):
    """--memory-limit decides, not MemAvailable: every check on the way (the model's, the
    blend partner's) takes the given limit."""
    monkeypatch.setattr("trainer.models.memory.available_bytes", lambda *a: 1)
    matrix = planted_matrix()
    model, kind = fit_model(matrix, ModelSpec("ease", memory_limit=10**12), "en")
    assert kind == "ease" and model.weights.shape == (matrix.shape[1],) * 2
    blend = ModelSpec("blend", als=SMALL_ALS, memory_limit=10**12,
                      blend=BlendConfig(weight=0.5, partner="ease"))
    assert fit_model(matrix, blend, "en", threads=1)[1] == "blend"
    with pytest.raises(InputError, match="MemAvailable|available"):
        fit_model(matrix, ModelSpec("ease"), "en")


def planted_matrix():
    data = generate(n_users=600, n_resources=120, langs=("en",), seed=5, n_subjects=6)
    df, _ = apply_filters(data.views_for("en"), FilterConfig(10, 0, 3))
    return build_matrix(df)


def test_zscore_rows_standardises_each_user():
    z = zscore_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    assert np.allclose(z[0], [-1.2247, 0.0, 1.2247], atol=1e-4) and np.allclose(z[1], 0.0)


def test_blend_weight_one_ranks_like_als_and_zero_like_ease():
    matrix = planted_matrix()
    als = fit_model(matrix, ModelSpec("als", als=SMALL_ALS), "en", threads=1)[0]
    ease = fit_ease(matrix, EaseConfig(), "en")
    users = matrix.users.ids[:20]
    exact = {  # each model's own scores, float64, rows = the first 20 users
        "als": als.user_factors[:20].astype(np.float64) @ als.item_factors.astype(np.float64).T,
        "ease": np.asarray(ease.score_rows(np.arange(20)), dtype=np.float64)}
    for weight, kind in ((1.0, "als"), (0.0, "ease")):
        blend = BlendModel(als=als, partner=ease, weight=weight)
        # The blend standardises each row first: near-equal scores may round into a tie,
        # broken either way, so each list is checked against the single model's scores.
        for u, got in enumerate(blend.recommend(users, 10)[0]):
            seen = set(matrix.views[u].indices)
            assert len(got) == 10
            assert_top_k(got, {int(matrix.items.ids[j]): exact[kind][u, j]
                               for j in range(len(matrix.items)) if j not in seen})
    blend = BlendModel(als=als, partner=ease, weight=0.5)
    assert np.array_equal(blend.similar_items([matrix.items.ids[0]], 5)[0],
                          als.similar_items([matrix.items.ids[0]], 5)[0])


@pytest.mark.parametrize("kind", ["ease", "blend", "auto"])
def test_every_model_kind_beats_popularity_and_saves_a_loadable_file(kind, tmp_path):
    matrix = planted_matrix()
    split = holdout_split(matrix, 0.2, 42)
    spec = ModelSpec(kind, als=SMALL_ALS, blend=BlendConfig(weight=None, partner="ease"))
    result = evaluate_spec(split.train, split.test, spec, threads=1)
    assert result["model_kind"] in (("als", "ease", "blend") if kind == "auto" else (kind,))
    assert result["model"]["ndcg"] > 1.3 * result["popularity"]["ndcg"]

    model, fitted = fit_model(matrix, spec, "en", threads=1)
    back = load_model(save_model(model, tmp_path))
    assert type(back) is type(model)
    users = matrix.users.ids[:15]
    assert np.array_equal(back.recommend(users, 10)[0], model.recommend(users, 10)[0])
    if isinstance(model, EASEModel):
        assert np.array_equal(back.weights, model.weights)
    if fitted == "blend":
        assert "validation_ndcg" in model.stats and 0 < model.weight < 1


def test_a_damaged_ease_file_is_a_model_file_error(tmp_path):
    import joblib

    from core.errors import ModelFileError

    model = fit_ease(tiny()[0], EaseConfig(l2=1.0), "en")
    doc = model_doc(model)
    doc["weights"] = np.zeros((2, 2), dtype=np.float32)
    joblib.dump(doc, tmp_path / "bad.dump")
    with pytest.raises(ModelFileError, match="damaged"):
        load_model(tmp_path / "bad.dump")


def test_ease_input_keeps_the_sparsity():
    views = sp.csr_matrix(np.array([[0, 3], [1, 0]], dtype=np.float32))
    assert ease_input(views, "binary").toarray().tolist() == [[0, 1], [1, 0]]
    assert np.allclose(ease_input(views, "log").toarray(), [[0, np.log(4)], [np.log(2), 0]])
