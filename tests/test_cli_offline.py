"""End to end through the installed ``recs`` script: generate -> train -> similar/recommend
-> evaluate, plus the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import pandas as pd
import pytest

RECS = str(Path(sys.executable).with_name("recs"))
SMALL = ["--model", "als", "--factors", "16", "--iterations", "8", "--threads", "1"]
FILTERS = ["--min-item-views", "20", "--min-user-views", "3"]


def recs(*args, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    env = {k: v for k, v in env.items() if not k.startswith("RECS_")}
    done = subprocess.run([RECS, *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)
    if ok:
        assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("offline")
    recs("generate", "--out", root, "--users", "500", "--resources", "90", "--langs", "en",
         "--seed", "3", "--subjects", "5", "--gzip")
    views = root / "views_en.csv.gz"
    done = recs("train", "--views", views, "--lang", "en", "--model-dir", root / "models",
                *FILTERS, *SMALL)
    model = root / "models" / "cf_ALSModel_fa16_re0.01_it8_al50_en.dump"
    assert f"model: {model}" in done.stdout
    assert "min_item_views 20: removed" in done.stdout and "sparsity" in done.stdout
    return root, views, model


def test_similar_json_with_resources(trained):
    root, _, model = trained
    resources = pd.read_csv(root / "resources_en.csv").set_index("id")
    doc = joblib.load(model)
    query = int(doc["item_ids"][0])
    out = recs("similar", query, "--model", model, "--resources", root / "resources_en.csv",
               "-n", "4", "--json").stdout
    rows = json.loads(out)
    assert len(rows) == 4
    assert all({"resource_id", "score", "title", "subject", "tags"} <= set(r) for r in rows)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert query not in [r["resource_id"] for r in rows]
    same = [r["subject"] == resources.loc[query, "subject"] for r in rows]
    assert sum(same) >= 3
    # Plain text for people: title — subject, score.
    text = recs("similar", query, "--model", model, "--resources", root / "resources_en.csv",
                "-n", "2").stdout
    first = rows[0]
    assert f"1. {first['title']} — {first['subject']}  {first['score']:.3f}" in text


def test_recommend_skips_what_the_user_viewed(trained):
    root, _, model = trained
    users = pd.read_csv(root / "users_en.csv")
    doc = joblib.load(model)
    user = str(doc["user_ids"][0])
    rows = json.loads(recs("recommend", user, "--model", model, "-n", "5", "--json").stdout)
    assert len(rows) == 5 and set(rows[0]) == {"resource_id", "score"}
    views = pd.read_csv(root / "views_en.csv.gz")
    viewed = set(views.loc[views["user_id"] == user, "resource_id"])
    assert not viewed & {r["resource_id"] for r in rows}
    assert user in set(users["user_id"])


def test_evaluate_json_shape_and_model_beats_popularity(trained):
    _, views, _ = trained
    out = recs("evaluate", "--views", views, "--k", "10", "--json", *FILTERS, *SMALL).stdout
    result = json.loads(out)
    assert list(result) == ["k", "model", "popularity", "users", "items"]
    assert result["k"] == 10
    for part in ("model", "popularity"):
        assert list(result[part]) == ["precision", "map", "ndcg", "auc"]
    assert result["model"]["ndcg"] > result["popularity"]["ndcg"]


def test_evaluate_on_a_given_test_extract(trained, tmp_path):
    _, views, _ = trained
    df = pd.read_csv(views)
    test = df.sample(frac=0.2, random_state=1)
    df.drop(test.index).to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    done = recs("evaluate", "--views", tmp_path / "train.csv", "--test", tmp_path / "test.csv",
                *FILTERS, *SMALL)
    assert "ndcg@10" in done.stdout and "pairs outside the trained users/resources" in done.stdout


def test_errors_are_one_line_with_exit_code_2(trained, tmp_path):
    root, _, model = trained
    done = recs("similar", "1", "--model", model, ok=False)
    assert done.returncode == 2
    assert done.stderr.strip() == ("recs similar: error: unknown resource 1: not among the "
                                   f"{len(joblib.load(model)['item_ids'])} resources the model "
                                   "was trained on (filtered out, or never seen)")
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,resource_id,view_count\nu1,5,1\nu2,five,1\n")
    done = recs("train", "--views", bad, "--lang", "en", "--model-dir", tmp_path, ok=False)
    assert done.returncode == 2 and f"{bad}: line 3: resource_id 'five'" in done.stderr
    assert "Traceback" not in done.stderr
    done = recs("recommend", "u1", "--model", root / "resources_en.csv", ok=False)
    assert done.returncode == 2 and "not a model file of ours" in done.stderr


def test_clicks_reads_its_variable_as_a_boolean():
    from recs.cli import build_parser, parse_args

    for text, want in (("false", False), ("0", False), ("true", True), ("1", True)):
        args = parse_args(["consume"], build_parser({"RECS_CLICKS": text}))
        assert args.clicks is want, text
    assert parse_args(["consume"], build_parser({})).clicks is False
    assert parse_args(["consume", "--clicks"], build_parser({})).clicks is True
