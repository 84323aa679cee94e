"""`recs tune` offline: the search never sees the test split, is seeded, and its settings
reach `recs train|evaluate --settings` under the precedence flag > RECS_* > tuned > default."""

from __future__ import annotations

import json

import pytest
import scipy.sparse as sp

from recs.cli import main, parse_args
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.extracts import load_views
from trainer.data.matrix import apply_filters, build_matrix, holdout_split
from trainer.data.synth import generate
from trainer.quality import tune as tune_module
from trainer.quality.tune import tune
from trainer.settings import SearchConfig, apply_tuned

FILTERS = ["--min-item-views", "10", "--max-item-views", "0", "--min-user-views", "3"]
SMALL = ["--factors", "8", "--iterations", "5", "--threads", "1"]


@pytest.fixture(scope="module")
def views_csv(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    data = generate(n_users=500, n_resources=100, langs=("en",), seed=9, n_subjects=5)
    path = root / "views.csv"
    data.views_for("en").rename(columns={"views": "view_count"}).to_csv(path, index=False)
    return path


def matrix_of(path):
    df, _ = load_views(path)
    df, _ = apply_filters(df, FilterConfig(10, 0, 3))
    return build_matrix(df)


def pairs(m: sp.csr_matrix) -> sp.csr_matrix:
    out = m.tocsr().copy()
    out.data[:] = 1.0
    return out


def test_the_search_inside_evaluate_never_sees_a_test_pair(views_csv, monkeypatch, capsys):
    """Records every matrix the search fits on or scores against; none may hold a test pair.
    (Fails if ``recs evaluate --tune`` handed the search the whole matrix.)"""
    seen: list[tuple[str, sp.csr_matrix]] = []
    real_fit = tune_module.fit_family
    real_ndcg = tune_module.validation_ndcg

    def fit_family(kind, matrix, *a, **kw):
        seen.append(("fit", matrix.views))
        return real_fit(kind, matrix, *a, **kw)

    def ndcg(score_rows, split, k=10):
        seen.append(("fit", split.train.views))
        seen.append(("validation", split.test))
        return real_ndcg(score_rows, split, k)

    monkeypatch.setattr(tune_module, "fit_family", fit_family)
    monkeypatch.setattr(tune_module, "validation_ndcg", ndcg)
    assert main(["evaluate", "--views", str(views_csv), *FILTERS, *SMALL, "--tune",
                 "--trials", "4", "--seed", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tuned"]["trials"] == 4 and result["tuned"]["model"]["ndcg"] > 0

    split = holdout_split(matrix_of(views_csv), 0.2, 3)  # the split evaluate made
    test, train = pairs(split.test), pairs(split.train.views)
    assert {kind for kind, _ in seen} == {"fit", "validation"}
    for kind, m in seen:
        assert pairs(m).multiply(test).nnz == 0, f"a {kind} matrix holds test pairs"
        # and everything the search saw is training data
        assert (pairs(m) - pairs(m).multiply(train)).nnz == 0


def test_a_tune_is_seeded_and_reports_every_trial(views_csv):
    matrix = matrix_of(views_csv)
    base = ModelSpec(als=AlsConfig(factors=8, iterations=5, seed=4))
    lines: list[str] = []
    first = tune(matrix, base, trials=6, threads=1, say=lines.append)
    again = tune(matrix, base, trials=6, threads=1, say=lambda _: None)
    assert first.settings == again.settings and first.ndcg == again.ndcg
    assert len(lines) == 6 and all("best" in line for line in lines)
    # The first trials are the given settings of each model: the best is never worse.
    assert lines[0].startswith("trial 1/6") and "model=als factors=8" in lines[0]
    best_of_enqueued = max(float(line.split()[3]) for line in lines[:len(SearchConfig.models)])
    assert first.ndcg >= best_of_enqueued - 5e-5  # printed to 4 places


def parsed(argv, monkeypatch, env=None):
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    return parse_args(argv)


def test_precedence_flag_then_variable_then_tuned_then_default(monkeypatch):
    tuned = {"model": "blend", "factors": 99, "alpha": 7.0, "regularization": 0.5,
             "iterations": 12, "ease_l2": 300.0, "blend_weight": 0.25}
    # --factors 40 is the built-in default's value, given on purpose: still a given flag.
    args = parsed(["train", "--views", "v.csv", "--factors", "40", "--ease-l2", "150"],
                  monkeypatch, {"RECS_ALPHA": "3", "RECS_MODEL_KIND": "ease"})
    spec = ModelSpec.from_values(vars(apply_tuned(args, tuned)))
    assert spec.als.factors == 40            # flag
    assert spec.ease.l2 == 150.0             # flag
    assert spec.als.alpha == 3.0             # RECS_ALPHA
    assert spec.model == "ease"              # RECS_MODEL_KIND
    assert spec.als.regularization == 0.5 and spec.als.iterations == 12  # tuned
    assert spec.blend.weight == 0.25         # tuned
    assert spec.als.scaling == "logshare"    # nobody set it: built-in default
    # Without tuned settings everything not given is the default.
    plain = ModelSpec.from_values(vars(parsed(["train", "--views", "v.csv"], monkeypatch)))
    assert plain == ModelSpec(model="ease", als=AlsConfig(alpha=3.0))


def test_tune_writes_settings_that_train_and_evaluate_read(views_csv, tmp_path, capsys):
    out = tmp_path / "tuned.json"
    assert main(["tune", "--views", str(views_csv), *FILTERS, *SMALL, "--trials", "3",
                 "--search", "ease", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["model"] == "ease" and doc["trials"] == 3 and "ease_l2" in doc
    assert "settings written to" in capsys.readouterr().out

    models = tmp_path / "models"
    assert main(["train", "--views", str(views_csv), "--lang", "en", "--model-dir",
                 str(models), *FILTERS, *SMALL, "--settings", str(out)]) == 0
    assert [p.name for p in models.iterdir()] == [
        f"cf_EASEModel_l2{doc['ease_l2']:g}_{doc['ease_scaling']}_en.dump"]
    assert "trained ease: EASE(" in capsys.readouterr().out
    # A flag given beats the file: --model als trains ALS.
    assert main(["evaluate", "--views", str(views_csv), *FILTERS, *SMALL, "--settings",
                 str(out), "--model", "als", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "model_kind" not in result  # ALS keeps the historical JSON shape


def test_a_bad_settings_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": "svd"}))
    assert main(["evaluate", "--views", "x.csv", "--settings", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "model='svd'" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["tune"], "say what to tune on"),
    (["tune", "--views", "v.csv", "--search", "svd"], "--search 'svd'"),
    (["train", "--lang", "en", "--settings", "t.json"], "--settings FILE is for offline runs"),
    (["history", "--lang", "en", "--redis-url", "redis://:s3cret@127.0.0.1:1/0"],
     "cannot reach Redis"),
])
def test_tune_mistakes_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "s3cret" not in err


def count_fits(monkeypatch) -> list[str]:
    """Every model fit from here on, by family (a blend counts once), plus the ALS and
    partner (EASE or RP3beta) fits ``auto`` makes on its validation split when it chooses at
    fit time."""
    from trainer.models.registry import FAMILIES
    from trainer.quality import choose

    fits: list[str] = []
    for name, family in FAMILIES.items():
        real = family.fit.__func__

        def fit(cls, *a, _real=real, _name=name, **kw):
            fits.append(_name)
            return _real(cls, *a, **kw)
        monkeypatch.setattr(family, "fit", classmethod(fit))
    for name, label in (("fit", "validation als"), ("fit_partner", "validation partner")):
        real = getattr(choose, name)

        def counted(*a, _real=real, _label=label, **kw):
            fits.append(_label)
            return _real(*a, **kw)
        monkeypatch.setattr(choose, name, counted)
    return fits


def test_tune_decides_auto_and_a_retrain_fits_only_the_choice(views_csv, tmp_path, monkeypatch,
                                                              capsys):
    """``recs tune`` stores auto's choice with each candidate's validation NDCG@10 and fit
    seconds; ``recs train --model auto`` with those settings then fits that family once (the
    untuned ``auto`` fits ALS and EASE on validation, then the winner)."""
    out = tmp_path / "tuned.json"
    assert main(["tune", "--views", str(views_csv), *FILTERS, *SMALL, "--trials", "5",
                 "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["auto_choice"] == doc["model"] in SearchConfig.models
    evidence = doc["auto_evidence"]
    assert set(evidence) == set(SearchConfig.models)  # each family had its enqueued trial
    for entry in evidence.values():
        assert 0 < entry["validation_ndcg"] <= doc["validation_ndcg"]
        assert entry["fit_seconds"] >= 0 and entry["trials"] >= 1
    assert evidence[doc["auto_choice"]]["validation_ndcg"] == doc["validation_ndcg"]

    train = ["train", "--views", str(views_csv), *FILTERS, *SMALL, "--lang", "en",
             "--model-dir", str(tmp_path / "models"), "--model", "auto"]
    fits = count_fits(monkeypatch)
    assert main([*train, "--settings", str(out)]) == 0
    assert fits == [doc["auto_choice"]]
    fits.clear()
    assert main(train) == 0  # no stored decision: chosen at fit time, at a cost
    assert fits[:2] == ["validation als", "validation partner"] and len(fits) == 3
    capsys.readouterr()
