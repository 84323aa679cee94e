"""The synthetic GoConqr-like extracts: shape, planted structure, calibration, files."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from trainer.config import FilterConfig
from trainer.data.extracts import load_resources, load_views
from trainer.data.matrix import apply_filters
from trainer.data.synth import generate

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def default_data():
    return generate()  # 5,000 users and 800 resources per language, en and es


def test_seeded_and_reproducible():
    a, b = generate(200, 40, ["en"], seed=3), generate(200, 40, ["en"], seed=3)
    pd.testing.assert_frame_equal(a.views, b.views)
    pd.testing.assert_frame_equal(a.resources, b.resources)
    assert not generate(200, 40, ["en"], seed=4).views.equals(a.views)


def test_ids_look_like_the_platforms(default_data):
    v, r = default_data.views, default_data.resources
    assert v["user_id"].str.fullmatch(UUID).all()
    assert r["id"].min() >= 100_000 and r["id"].max() <= 4294967295
    assert r["id"].is_unique  # across languages too
    assert not r["id"].isin(range(1, 801)).any()
    assert not v.duplicated(["lang", "user_id", "resource_id"]).any()
    assert set(v["lang"]) == {"en", "es"}
    # Each language has its own users.
    en, es = (set(v.loc[v["lang"] == lang, "user_id"]) for lang in ("en", "es"))
    assert not en & es


def test_planted_subjects_and_heavy_tails(default_data):
    d = default_data
    subjects = d.user_subjects[d.user_subjects["lang"] == "en"].set_index("user_id")["subjects"]
    assert subjects.str.count(r"\|").between(0, 2).all()
    assert d.resources["subject"].nunique() == 16
    v = d.views_for("en")
    subject_of = d.subject_of("en")
    on_subject = [s in subs.split("|") for s, subs in
                  zip(subject_of.loc[v["resource_id"]], subjects.loc[v["user_id"]], strict=True)]
    assert 0.85 < np.mean(on_subject) < 0.97
    counts = v["views"]
    assert (counts <= 3).mean() > 0.75 and counts.max() >= 100 and (counts >= 10).sum() > 100
    # Power-law popularity: the top 10% of resources take a large share of the views.
    totals = v.groupby("resource_id")["views"].sum().sort_values(ascending=False)
    assert totals.iloc[:80].sum() > 0.3 * totals.sum()
    # The title names the subject, so similar lists are checkable by eye.
    r = d.resources_for("en")
    assert all(t.startswith(s) for t, s in zip(r["title"], r["subject"], strict=True))


def test_platform_filters_keep_a_useful_catalogue(default_data):
    for lang in ("en", "es"):
        df, report = apply_filters(default_data.views_for(lang), FilterConfig())
        assert df["resource_id"].nunique() >= 200
        assert df["user_id"].nunique() >= 3000


def test_written_files_read_back(tmp_path):
    data = generate(300, 50, ["en", "pt"], seed=2)
    paths = data.write(tmp_path, gzip=True)
    assert paths["pt"]["views"].name == "views_pt.csv.gz"
    df, report = load_views(paths["pt"]["views"])
    pd.testing.assert_frame_equal(df, data.views_for("pt"))
    assert report.duplicates == 0 and not report.bad
    res = load_resources(paths["en"]["resources"])
    pd.testing.assert_frame_equal(res, data.resources_for("en"), check_dtype=False)
    users = pd.read_csv(paths["en"]["users"])
    assert list(users.columns) == ["user_id", "subjects"] and len(users) == 300
