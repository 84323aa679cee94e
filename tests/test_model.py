"""ALS fit on planted subjects, batched top-N scoring, the model file."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import scipy.sparse as sp

from core.errors import InputError, ModelFileError
from tests.helpers import assert_top_k
from trainer.config import AlsConfig, FilterConfig
from trainer.data.matrix import apply_filters, build_matrix
from trainer.data.synth import generate
from trainer.models.als import fit
from trainer.models.confidence import scale_confidence
from trainer.models.file import FORMATS, load_model, model_doc, model_filename, save_model
from trainer.models.rank import as_rows, recommend_by_factors, similar_by_index, top_n

SMALL = AlsConfig(factors=16, iterations=10, seed=3)


@pytest.fixture(scope="module")
def planted():
    data = generate(n_users=800, n_resources=120, langs=["en"], seed=11, n_subjects=6)
    df, _ = apply_filters(data.views_for("en"), FilterConfig(20, 0, 3))
    matrix = build_matrix(df)
    return data, matrix, fit(matrix, SMALL, "en", num_threads=1)


def test_similar_lists_stay_in_the_planted_subject(planted):
    data, matrix, model = planted
    subject = data.subject_of("en")
    ids, scores = model.similar_items(matrix.items.ids, n=5)
    same = subject.loc[ids.ravel()].to_numpy() == np.repeat(
        subject.loc[matrix.items.ids].to_numpy(), 5)
    assert same.mean() > 0.85
    assert (ids != matrix.items.ids[:, None]).all()  # never itself
    assert (np.diff(scores, axis=1) <= 1e-6).all() and (np.abs(scores) <= 1.0 + 1e-5).all()


def cosines(model, matrix, row: int) -> dict[int, float]:
    """Resource id -> exact (float64) cosine with resource ``row``, itself left out."""
    f = model.item_factors.astype(np.float64)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return {int(matrix.items.ids[j]): c for j, c in enumerate(f @ f[row]) if j != row}


def user_scores(model, matrix, row: int) -> dict[int, float]:
    """Resource id -> exact (float64) score for user ``row``, over the resources unviewed."""
    s = model.user_factors[row].astype(np.float64) @ model.item_factors.astype(np.float64).T
    seen = set(matrix.views[row].indices)
    return {int(matrix.items.ids[j]): v for j, v in enumerate(s) if j not in seen}


# Batches and chunks change the shapes of the float32 products, so near-equal scores may
# round apart in either order: each list is checked against the exact scores, ties allowed.
def test_batched_scoring_equals_one_query_at_a_time(planted):
    _, matrix, model = planted
    rows = [3, 0, 17]
    ids, scores = model.similar_items(matrix.items.ids[rows], n=7)
    for r, row_ids, row_scores in zip(rows, ids, scores, strict=True):
        one_ids, one_scores = model.similar_items([matrix.items.ids[r]], n=7)
        for got in (row_ids, one_ids[0]):
            assert len(got) == 7
            assert_top_k(got, cosines(model, matrix, r))
        np.testing.assert_allclose(one_scores[0], row_scores, rtol=1e-5)
    users = [5, 1, 9]
    ids, _ = model.recommend(matrix.users.ids[users], n=6)
    for u, row in zip(users, ids, strict=True):
        for got in (row, model.recommend([matrix.users.ids[u]], n=6)[0][0]):
            assert len(got) == 6
            assert_top_k(got, user_scores(model, matrix, u), tol=1e-4)


def test_recommendations_exclude_viewed_and_follow_the_subjects(planted):
    data, matrix, model = planted
    subject = data.subject_of("en")
    users = matrix.users.ids
    ids, scores = model.recommend(users, n=5)
    viewed = matrix.views.toarray() > 0
    cols = matrix.items.numbers(ids.ravel()).reshape(ids.shape)
    assert not viewed[np.arange(len(users))[:, None], cols].any()
    planted_subjects = data.user_subjects.set_index("user_id")["subjects"].loc[users]
    on_subject = [subject.loc[rid] in subs.split("|")
                  for row, subs in zip(ids, planted_subjects, strict=True) for rid in row]
    assert np.mean(on_subject) > 0.8
    # Scores are dot products of the factors.
    u0 = matrix.users.number(users[0])
    expected = model.item_factors[cols[0]] @ model.user_factors[u0]
    np.testing.assert_allclose(scores[0], expected, rtol=1e-4)


def test_unknown_ids_are_clear_errors(planted):
    _, _, model = planted
    with pytest.raises(InputError, match="unknown resource 1"):
        model.similar_items([1])
    with pytest.raises(InputError, match="unknown user nobody"):
        model.recommend(["nobody"])


def test_results_do_not_depend_on_the_chunk_size(planted, monkeypatch):
    _, matrix, model = planted
    whole_sim = model.similar_items(matrix.items.ids, n=5)
    whole_rec = model.recommend(matrix.users.ids, n=5)
    monkeypatch.setattr("trainer.models.rank._CHUNK_CELLS", 7 * len(matrix.items))  # 7 rows a block
    chunked_sim = model.similar_items(matrix.items.ids, n=5)
    chunked_rec = model.recommend(matrix.users.ids, n=5)
    for r in range(len(matrix.items)):
        for got in (whole_sim[0][r], chunked_sim[0][r]):
            assert_top_k(got, cosines(model, matrix, r))
    np.testing.assert_allclose(chunked_sim[1], whole_sim[1], rtol=1e-5, atol=1e-6)
    for u in range(0, len(matrix.users), 7):
        for got in (whole_rec[0][u], chunked_rec[0][u]):
            assert_top_k(got, user_scores(model, matrix, u), tol=1e-4)
    np.testing.assert_allclose(chunked_rec[1], whole_rec[1], rtol=1e-4, atol=1e-5)


def test_top_n_matches_a_full_sort():
    rng = np.random.default_rng(0)
    scores = rng.random((50, 30)).astype(np.float32)
    idx, vals = top_n(scores, 4)
    assert idx.tolist() == np.argsort(-scores, axis=1)[:, :4].tolist()
    assert np.array_equal(vals, np.take_along_axis(scores, idx, 1))
    assert top_n(scores, 100)[0].shape == (50, 30)


def test_similar_by_index_is_cosine():
    factors = np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]], dtype=np.float32)
    idx, vals = similar_by_index(factors, [0, 2], n=5)
    assert idx.shape == (2, 3)  # at most all the others
    assert idx[0].tolist() == [1, 2, 3]
    np.testing.assert_allclose(vals[0], [0.9 / np.hypot(0.9, 0.1), 0.0, -1.0], atol=1e-6)


def test_recommend_by_factors_marks_empty_slots():
    items = np.eye(3, dtype=np.float32)
    exclude = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0]], dtype=np.float32))
    idx, vals = recommend_by_factors(np.array([[3, 2, 1], [1, 2, 3]]), items, 2, exclude=exclude)
    assert idx.tolist() == [[2, -1], [2, 1]]
    assert vals[0, 1] == -np.inf
    assert as_rows(idx[0], vals[0]) == [(2, 1.0)]


def test_model_file_round_trip_and_name(planted, tmp_path):
    _, _, model = planted
    path = save_model(model, tmp_path)
    assert path.name == "cf_ALSModel_fa16_re0.01_it10_al50_en.dump"
    loaded = load_model(path)
    assert np.array_equal(loaded.item_factors, model.item_factors)
    assert np.array_equal(loaded.user_factors, model.user_factors)
    assert loaded.users == model.users and loaded.items == model.items
    assert loaded.config == model.config and loaded.lang == "en"
    assert loaded.trained_at == model.trained_at and loaded.trained_at.endswith("Z")
    assert (loaded.seen != model.seen).nnz == 0
    assert loaded.stats["nnz"] == model.stats["nnz"]
    q = model.items.ids[:4]
    assert loaded.similar_items(q, 5)[0].tolist() == model.similar_items(q, 5)[0].tolist()
    # Only plain data in the file: numpy arrays, str, numbers, dicts.
    doc = joblib.load(path)
    assert doc["format"] == FORMATS["als"] and isinstance(doc["config"], dict)
    assert {type(v) for v in doc.values()} <= {np.ndarray, str, int, dict}


def test_non_default_scaling_is_in_the_name(planted):
    _, matrix, model = planted
    from dataclasses import replace

    other = replace(model, config=replace(model.config, scaling="linear", alpha=40.5))
    assert model_filename(other) == "cf_ALSModel_fa16_re0.01_it10_al40.5_sclinear_en.dump"


def test_foreign_files_are_rejected(planted, tmp_path):
    _, _, model = planted
    text = tmp_path / "notes.dump"
    text.write_text("user_id,resource_id,view_count\n")
    with pytest.raises(ModelFileError, match="not a model file of ours"):
        load_model(text)
    other = tmp_path / "other.dump"
    joblib.dump({"user_factors": np.zeros((2, 2))}, other)
    with pytest.raises(ModelFileError, match="format marker"):
        load_model(other)
    doc = model_doc(model)
    joblib.dump({**doc, "version": 99}, other)
    with pytest.raises(ModelFileError, match="version 99"):
        load_model(other)
    joblib.dump({**doc, "item_factors": doc["item_factors"][:, :3]}, other)
    with pytest.raises(ModelFileError, match="damaged"):
        load_model(other)
    joblib.dump({**doc, "user_factors": doc["user_factors"].astype(np.int32)}, other)
    with pytest.raises(ModelFileError, match="damaged"):
        load_model(other)
    joblib.dump({**doc, "config": {**doc["config"], "scaling": "bogus"}}, other)
    with pytest.raises(ModelFileError, match="damaged model file: unknown scaling 'bogus'"):
        load_model(other)
    with pytest.raises(ModelFileError, match="no such"):
        load_model(tmp_path / "missing.dump")


def test_nan_factors_are_rejected(planted):
    _, matrix, _ = planted
    with pytest.raises(InputError, match="diverged"):
        fit(matrix, AlsConfig(factors=4, iterations=2, alpha=1e38, scaling="linear"), "en")


def test_empty_matrix_is_a_clear_error(planted):
    _, matrix, _ = planted
    df, _ = apply_filters(generate(50, 10, ["en"]).views_for("en"), FilterConfig(10**6, 0, 0))
    with pytest.raises(InputError, match="nothing to train on"):
        fit(build_matrix(df), SMALL, "en")


def test_logshare_spreads_alpha_over_each_users_views():
    views = sp.csr_matrix(np.array([[1, 0, 3], [0, 0, 0], [0, 7, 0]], dtype=np.float32))
    c = scale_confidence(views, "logshare", 50.0).toarray()
    share = np.log1p([1, 3]) / np.log1p([1, 3]).sum()
    np.testing.assert_allclose(c[0, [0, 2]], 1 + 50 * share, rtol=1e-6)
    assert c[2, 1] == pytest.approx(51.0) and c[1].sum() == 0
    # Row-local: one user's confidences do not depend on the others.
    alone = scale_confidence(views[[0]], "logshare", 50.0).toarray()
    np.testing.assert_allclose(alone[0], c[0])


def test_bm25_is_implicits_bm25_weight_and_row_local_given_item_totals():
    from implicit.nearest_neighbours import bm25_weight

    rng = np.random.default_rng(1)
    dense = (rng.random((40, 25)) < 0.2) * rng.integers(1, 50, (40, 25))
    views = sp.csr_matrix(dense.astype(np.float32))
    c = scale_confidence(views, "bm25", 50.0)
    # implicit weights the resources x users matrix; the trainer's users x resources is its .T
    expected = 1 + 50.0 * bm25_weight(views.T.tocsr(), K1=100, B=0.8).T.toarray()
    assert c.nnz == views.nnz
    np.testing.assert_allclose(c.toarray()[dense > 0], expected[dense > 0], rtol=1e-6)
    # Some users' rows with the training column sums get the whole matrix's confidences.
    totals = np.asarray(views.sum(axis=0)).ravel()
    rows = scale_confidence(views[[3, 7]], "bm25", 50.0, item_totals=totals)
    np.testing.assert_allclose(rows.toarray(), c[[3, 7]].toarray(), rtol=1e-6)
