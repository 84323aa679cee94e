"""Time in the views extract and the split by time: the optional ``ts`` column (epoch ms),
the matrix's ``times`` (aligned with its views), ``time_split`` (each user's latest pairs
held out), the validation split going by time where the data has times, and ``recs evaluate
--split time`` (a one-line refusal, exit 2, for an extract without times)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from recs.cli import main
from trainer.data.extracts import load_views
from trainer.data.matrix import build_matrix, holdout_split, time_split
from trainer.data.synth import generate
from trainer.quality.choose import validation_split

FILTERS = ["--min-item-views", "10", "--max-item-views", "0", "--min-user-views", "3"]
SMALL = ["--factors", "8", "--iterations", "5", "--threads", "1"]


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "resource_id", "views", "ts"])


def held(split) -> set[tuple[str, int]]:
    test = split.test.tocoo()
    users, items = split.train.users.ids, split.train.items.ids
    return {(str(users[r]), int(items[c])) for r, c in zip(test.row, test.col, strict=True)}


def test_the_ts_column_is_optional_and_checked(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("user_id,resource_id,view_count\nu1,5,2\n")
    df, _ = load_views(plain)
    assert list(df.columns) == ["user_id", "resource_id", "views"]
    assert build_matrix(df).times is None

    timed = tmp_path / "timed.csv"
    timed.write_text("user_id,resource_id,view_count,ts\nu1,5,2,1764201600000\nu1,6,1,0\n")
    df, _ = load_views(timed)
    assert list(df.columns) == ["user_id", "resource_id", "views", "ts"]
    assert df["ts"].tolist() == [1764201600000, 0]

    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,resource_id,view_count,ts\nu1,5,2,17642016.5\nu2,5,1,-3\n")
    with pytest.raises(InputError, match=r"line 2: ts '17642016.5' is not an integer"):
        load_views(bad)
    df, report = load_views(bad, skip_bad_rows=True)
    assert df.empty and [b.line for b in report.bad] == [2, 3]
    assert "outside 0.." in report.bad[1].problem


def test_times_follow_the_views_pattern_and_a_repeated_pair_keeps_its_latest():
    df = table([("b", 9, 1, 50), ("a", 7, 2, 30), ("a", 3, 1, 10), ("b", 9, 4, 70)])
    m = build_matrix(df)
    assert m.times.nnz == m.views.nnz == 3
    assert (m.times.indptr == m.views.indptr).all() and (m.times.indices == m.views.indices).all()
    assert m.times[m.users.numbers(["b"])[0], m.items.numbers([9])[0]] == 70
    assert m.views[m.users.numbers(["b"])[0], m.items.numbers([9])[0]] == 5


def test_time_split_holds_out_each_users_latest_pairs():
    rows = [("a", r, 1, t) for r, t in [(1, 500), (2, 100), (3, 400), (4, 200), (5, 300)]]
    rows += [("b", 1, 1, 9), ("b", 2, 1, 1)]            # 2 pairs: ceil(0.4) = 1 held out
    rows += [("c", 3, 1, 5)]                            # 1 pair: kept for training
    rows += [("d", 4, 1, 7), ("d", 5, 1, 7), ("d", 1, 1, 1)]  # a tie at the latest time
    split = time_split(build_matrix(table(rows)), 0.2)
    # a: ceil(0.2 * 5) = 1, its latest (resource 1 at t=500); d: ceil(0.6) = 1, of the two
    # latest at t=7 the higher resource id (column) goes.
    assert held(split) == {("a", 1), ("b", 1), ("d", 5)}
    m = build_matrix(table(rows))
    assert split.train.nnz + split.test.nnz == m.nnz
    assert split.train.times.nnz == split.train.nnz
    assert time_split(m, 0.2).test.toarray().tolist() == split.test.toarray().tolist()
    assert held(time_split(m, 0.5)) == {("a", 1), ("a", 3), ("a", 5), ("b", 1), ("d", 4),
                                        ("d", 5)}
    with pytest.raises(InputError, match="needs the time of each view"):
        time_split(build_matrix(table(rows).drop(columns="ts")), 0.2)


def test_every_held_out_pair_is_later_than_what_its_user_keeps():
    rng = np.random.default_rng(3)
    df = table([(f"u{u}", int(i), 1, int(rng.integers(0, 10**12)))
                for u in range(40) for i in rng.choice(200, size=rng.integers(1, 30),
                                                       replace=False) + 1])
    m = build_matrix(df)
    split = time_split(m, 0.25)
    test, train = split.test.tocsr(), split.train
    for row in range(m.shape[0]):
        kept = train.times.data[train.times.indptr[row]:train.times.indptr[row + 1]]
        gone = m.times[row, test.indices[test.indptr[row]:test.indptr[row + 1]]].toarray()
        n = m.views.indptr[row + 1] - m.views.indptr[row]
        assert gone.size == min(n - 1, int(np.ceil(0.25 * n)))
        assert kept.size and (gone.size == 0 or gone.min() >= kept.max())
    # The random split keeps times aligned with what it kept, too.
    rand = holdout_split(m, 0.2, 1)
    assert (rand.train.times.indices == rand.train.views.indices).all()


def test_the_validation_split_goes_by_time_where_the_data_has_times():
    rows = [(f"u{u}", i, 1, 10 * i + u) for u in range(6) for i in range(1, 11)]
    m = build_matrix(table(rows))
    assert held(validation_split(m, 42)) == held(time_split(m, 0.2))
    untimed = build_matrix(table(rows).drop(columns="ts"))
    assert held(validation_split(untimed, 42)) == held(holdout_split(untimed, 0.2, 43))


@pytest.fixture(scope="module")
def extracts(tmp_path_factory):
    root = tmp_path_factory.mktemp("timed")
    views = generate(n_users=400, n_resources=80, langs=("en",), seed=5,
                     n_subjects=4).views_for("en").rename(columns={"views": "view_count"})
    plain, timed = root / "plain.csv", root / "timed.csv"
    views.to_csv(plain, index=False)
    rng = np.random.default_rng(1)
    views.assign(ts=1_700_000_000_000 + rng.integers(0, 10**9, size=len(views))).to_csv(
        timed, index=False)
    return plain, timed


def test_evaluate_split_time(extracts, capsys):
    plain, timed = extracts
    assert main(["evaluate", "--views", str(timed), *FILTERS, *SMALL, "--split", "time",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["split"] == "time" and result["model"]["ndcg"] > 0
    assert "each user's latest" in err

    assert main(["evaluate", "--views", str(plain), *FILTERS, *SMALL, "--split", "time"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--split time" in err[0] and "no ts column" in err[0]
    assert main(["evaluate", "--views", str(timed), "--test", str(plain), "--split", "time"]) == 2
    assert "does not apply with --test" in capsys.readouterr().err
