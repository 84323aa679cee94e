"""RP3beta against its definition computed densely by hand (walk probabilities, popularity
penalty, top-k prune, block by block), its lists, its model file, and the Spark refusal."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from core.errors import InputError, ModelFileError
from tests.helpers import assert_top_k
from tests.test_ease import SMALL_ALS, planted_matrix, tiny
from trainer.config import AlsConfig, BlendConfig, ModelSpec, Rp3betaConfig
from trainer.data.matrix import holdout_split
from trainer.models.ease import ease_input
from trainer.models.file import load_model, model_doc, save_model
from trainer.models.rp3beta import RP3betaModel, fit_rp3beta, rp3beta_weights
from trainer.quality.choose import evaluate_spec, fit_model


def dense_rp3beta(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """W before the prune, in float64, straight from the definition."""
    def walk(m):
        sums = m.sum(axis=1, keepdims=True)
        return np.power(m / np.where(sums > 0, sums, 1.0), alpha)

    w = walk(x.T) @ walk(x)
    w /= np.power(np.maximum((x > 0).sum(axis=0), 1), beta)[None, :]
    np.fill_diagonal(w, 0.0)
    return w


@pytest.mark.parametrize("scaling", ["binary", "log"])
def test_rp3beta_equals_the_definition_by_hand(scaling):
    matrix, counts = tiny()
    x = (counts > 0).astype(float) if scaling == "binary" else np.log1p(counts)
    config = Rp3betaConfig(alpha=0.6, beta=0.3, neighbours=10, scaling=scaling)
    expected = dense_rp3beta(x, 0.6, 0.3)

    model = fit_rp3beta(matrix, config, "en")
    assert np.allclose(model.weights.toarray(), expected, atol=1e-6)
    assert np.allclose(model.score_rows(np.arange(5)), x @ expected, atol=1e-5)
    ids, _ = model.recommend(["u1"], n=4)  # u1 viewed 10 and 12: 11 and 13 are left
    assert_top_k([i for i in ids[0] if i >= 0], {10 + j: (x[1] @ expected)[j] for j in (1, 3)
                                                 if (x[1] @ expected)[j] > 0})
    sim_ids, sim_scores = model.similar_items([11], n=3)
    assert_top_k(sim_ids[0][sim_ids[0] >= 0], {10 + j: expected[1, j] for j in (0, 2, 3)
                                               if expected[1, j] > 0})


def test_the_prune_keeps_each_rows_k_largest_block_by_block(monkeypatch):
    matrix = planted_matrix()
    x = ease_input(matrix.views, "log")
    expected = dense_rp3beta(x.toarray().astype(np.float64), 0.32, 0.19)
    monkeypatch.setattr("trainer.models.rp3beta.BLOCK_CELLS", 7 * matrix.shape[1])  # 7 rows
    w = rp3beta_weights(x, Rp3betaConfig(neighbours=9))
    assert np.diff(w.indptr).max() == 9 and (w.diagonal() == 0).all()
    for j in (0, 5, 6, 7, len(expected) - 1):
        kept = w[j].indices
        assert np.allclose(w[j].data, expected[j, kept], rtol=1e-4)
        assert_top_k(kept[np.argsort(-w[j].data)], dict(enumerate(expected[j])), tol=1e-6)


def test_normalize_rescales_each_row_to_one():
    w = fit_rp3beta(planted_matrix(), Rp3betaConfig(normalize=True), "en").weights
    sums = np.asarray(w.sum(axis=1)).ravel()
    assert np.allclose(sums[sums > 0], 1.0, atol=1e-5)


def test_unreached_resources_are_never_listed():
    matrix, _ = tiny()
    model = fit_rp3beta(matrix, Rp3betaConfig(neighbours=1), "en")
    ids, scores = model.recommend(matrix.users.ids, n=4)
    assert np.isfinite(scores[ids >= 0]).all() and (scores[ids >= 0] > 0).all()
    assert (ids < 0).any()  # one neighbour a row: some users reach fewer than 4


def test_rp3beta_beats_popularity_and_saves_a_loadable_file(tmp_path):
    matrix = planted_matrix()
    split = holdout_split(matrix, 0.2, 42)
    result = evaluate_spec(split.train, split.test, ModelSpec("rp3beta"), threads=1)
    assert result["model_kind"] == "rp3beta"
    assert result["model"]["ndcg"] > 1.3 * result["popularity"]["ndcg"]

    model, kind = fit_model(matrix, ModelSpec("rp3beta"), "en")
    assert kind == "rp3beta" and isinstance(model, RP3betaModel)
    path = save_model(model, tmp_path)
    assert path.name == "cf_RP3beta_a0.32_b0.19_k76_log_en.dump"
    back = load_model(path)
    assert (back.weights != model.weights).nnz == 0 and back.config == model.config
    users = matrix.users.ids[:15]
    assert np.array_equal(back.recommend(users, 10)[0], model.recommend(users, 10)[0])


def test_a_damaged_rp3beta_file_is_a_model_file_error(tmp_path):
    import joblib

    doc = model_doc(fit_rp3beta(tiny()[0], Rp3betaConfig(), "en"))
    doc["weights_indices"] = doc["weights_indices"] + 99
    joblib.dump(doc, tmp_path / "bad.dump")
    with pytest.raises(ModelFileError, match="damaged"):
        load_model(tmp_path / "bad.dump")


def test_spark_is_refused_in_one_line_naming_what_works():
    with pytest.raises(InputError, match="--engine spark fits ALS only") as err:
        fit_model(tiny()[0], ModelSpec("rp3beta", als=AlsConfig(engine="spark")), "en")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [dict(alpha=0.0), dict(beta=-1.0), dict(neighbours=0),
                                 dict(scaling="linear")])
def test_bad_settings_are_one_line(bad):
    with pytest.raises(InputError):
        Rp3betaConfig(**bad)


def test_recs_similar_and_recommend_read_an_rp3beta_file(tmp_path, capsys):
    import json

    from recs.cli import main

    matrix = planted_matrix()
    model = fit_rp3beta(matrix, Rp3betaConfig(), "en")
    path = str(save_model(model, tmp_path))
    rid, user = int(matrix.items.ids[3]), str(matrix.users.ids[2])
    assert main(["similar", str(rid), "--model", path, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [r["resource_id"] for r in got] == [int(i) for i in model.similar_items([rid])[0][0]]
    assert main(["recommend", user, "--model", path]) == 0
    assert "For user" in capsys.readouterr().out


# -- memory rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["als", "ease", "rp3beta", "blend"])
def test_every_family_refuses_a_fit_over_the_memory_limit_in_one_line(kind, monkeypatch):
    from trainer.models.registry import FAMILIES

    matrix = planted_matrix()
    spec = ModelSpec(kind, als=SMALL_ALS, memory_limit=10_000)
    need = FAMILIES[kind].fit_bytes(*matrix.shape, matrix.nnz, spec)
    assert need > 10_000
    monkeypatch.setattr("trainer.models.als.fit", lambda *a, **k: pytest.fail("allocated"))
    monkeypatch.setattr("trainer.models.rp3beta.rp3beta_weights",
                        lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(InputError, match="more than the 10 kB --memory-limit") as err:
        fit_model(matrix, replace(spec, blend=BlendConfig(weight=0.5)), "en")
    assert "\n" not in str(err.value)
    monkeypatch.undo()
    fit_model(matrix, replace(spec, memory_limit=need, blend=BlendConfig(weight=0.5)), "en",
              threads=1)  # exactly enough: fitted


def test_the_cli_refuses_before_the_fit_and_writes_nothing(tmp_path, capsys):
    from recs.cli import main
    from trainer.data.synth import generate

    csv = generate(n_users=300, n_resources=60, langs=("en",), seed=3).write(tmp_path)
    models = tmp_path / "models"
    assert main(["train", "--views", str(csv["en"]["views"]), "--lang", "en", "--model",
                 "rp3beta", "--min-item-views", "5", "--min-user-views", "2",
                 "--memory-limit", "2K", "--model-dir", str(models)]) == 2
    err = capsys.readouterr().err.strip()
    assert "RP3beta on" in err and "--memory-limit" in err and "\n" not in err
    assert not list(models.glob("*.dump"))


def test_available_memory_is_read_from_meminfo(tmp_path):
    from trainer.models.memory import available_bytes, fits

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       16000000 kB\nMemAvailable:    2000000 kB\n")
    assert available_bytes(str(meminfo)) == 2_048_000_000
    assert available_bytes(str(tmp_path / "absent")) is None
    assert fits(10**18, limit=None) is (available_bytes() is None)
    assert fits(5, limit=5) and not fits(6, limit=5)
