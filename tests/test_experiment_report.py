"""The experiment readout: the statistics on known per-user counts (computed here by hand),
and the report built from impressions and clicks written by the real scripts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from consumers.impression_events import Impression
from core import abstats
from recs.cli import main
from store.attribution import ClickCounts
from store.experiments import Arm, Experiment, start
from store.impressions import Impressions
from store.keys import Keys

KEYS = Keys()
T0 = 1_764_201_600_000  # 2025-11-27


def test_ratio_is_the_delta_method_over_users():
    n = np.array([2, 4, 4, 10])
    c = np.array([1, 0, 2, 1])
    r = 4 / 20
    # By hand: d_i = c_i - r n_i = 0.6, -0.8, 1.2, -1.0; sum d^2 = 3.44; nbar = 5; m = 4.
    var = 3.44 / (4 * 3 * 25)
    got = abstats.ratio(n, c)
    assert (got.users, got.impressions, got.clicks) == (4, 20, 4)
    assert got.ctr == pytest.approx(r)
    assert got.se == pytest.approx(math.sqrt(var))
    assert got.low == max(r - 1.959964 * math.sqrt(var), 0.0) == 0.0  # a rate is >= 0
    assert got.high == pytest.approx(r + 1.959964 * math.sqrt(var), abs=1e-6)


def test_users_with_many_impressions_widen_the_interval_against_a_per_impression_test():
    # 50 users who click everything and 50 who click nothing: by impression the CTR looks
    # precise; by user it is as uncertain as 100 coin flips.
    n = np.full(100, 40)
    c = np.where(np.arange(100) < 50, 40, 0)
    by_user = abstats.ratio(n, c)
    by_impression_se = math.sqrt(0.5 * 0.5 / n.sum())
    assert by_user.se > 5 * by_impression_se
    assert by_user.se == pytest.approx(math.sqrt(0.25 / 99), rel=1e-6)


def test_difference_interval_p_value_and_bootstrap_agree():
    rng = np.random.default_rng(3)
    an = rng.integers(1, 20, 2000)
    bn = rng.integers(1, 20, 2000)
    ac = rng.binomial(an, 0.10)
    bc = rng.binomial(bn, 0.13)
    a, b = abstats.ratio(an, ac), abstats.ratio(bn, bc)
    d = abstats.difference(a, b)
    assert d.diff == pytest.approx(b.ctr - a.ctr)
    assert d.se == pytest.approx(math.hypot(a.se, b.se))
    assert d.significant and d.p < 1e-6 and d.relative == pytest.approx(d.diff / a.ctr)
    point, low, high = abstats.bootstrap_difference(an, ac, bn, bc, rounds=1000, seed=1)
    assert point == pytest.approx(d.diff)
    assert low == pytest.approx(d.low, abs=0.004) and high == pytest.approx(d.high, abs=0.004)
    same = abstats.difference(a, a)
    assert not same.significant and same.p == 1.0


def test_no_users_no_rate():
    assert abstats.ratio([], []).users == 0
    assert abstats.ratio([0, 0], [0, 0]).impressions == 0


# -- the report from real writes ---------------------------------------------------------------


def impression(i: int, user: str, arm: str, items, ts: int) -> Impression:
    return Impression(impression_id=f"imp-{i}", user_id=user, lang="en", list="recs",
                      resource_id=None, model="v1", arm=arm, experiment="exp1",
                      items=tuple(items), ts=ts)


SHOWN = {  # user -> (arm, impressions, clicked among them)
    "u1": ("a", 2, 1), "u2": ("a", 4, 0), "u3": ("a", 4, 2), "u4": ("a", 10, 1),
    "u5": ("b", 3, 3), "u6": ("b", 5, 1), "u7": ("b", 2, 0),
}


def write_counts(client) -> None:
    """Each user's impressions (3 items each, resources 1..9 for arm a, 1..3 for b) through
    the impressions script, then one view per clicked impression through the views
    script with attribution."""
    imps = []
    views: dict = {"en": {}}
    touches: dict = {"en": {}}
    k = 0
    for user, (arm, shown, clicked) in SHOWN.items():
        for j in range(shown):
            base = 1 + 3 * (j % 3) if arm == "a" else 1
            ts = T0 + 60_000 * k
            imps.append(impression(k, user, arm, [base, base + 1, base + 2], ts))
            if j < clicked:
                views["en"].setdefault(user, {})[base] = views["en"].get(user, {}).get(base,
                                                                                     0) + 1
                touches["en"].setdefault(user, []).append((base, ts + 1000, f"imp-{k}"))
            k += 1
    Impressions(client, KEYS).write(KEYS.offsets("g", "imp"), [], imps)
    ClickCounts(client, KEYS).write(KEYS.offsets("g", "views"), [], (views, touches))


def test_report_numbers_on_known_counts(redis_server, redis_client, capsys):
    start(redis_client, KEYS, Experiment("exp1", "en", "running", (
        Arm("a", "als", 1, {"model": "als"}), Arm("b", "ease", 1, {"model": "ease"})), T0))
    redis_client.hset(KEYS.resources("en"), mapping={str(i): "{}" for i in range(1, 21)})
    redis_client.hset(KEYS.model("en"), mapping={"version": "v1", "model": "als", "metrics":
                      json.dumps({"k": 10, "model": {"ndcg": 0.3, "map": 0.2},
                                  "popularity": {"ndcg": 0.1}})})
    write_counts(redis_client)
    assert main(["experiment", "report", "--lang", "en", "--json",
                 "--redis-url", redis_server.url]) == 0
    report = json.loads(capsys.readouterr().out)
    a, b = report["arms"]
    assert (a["users"], a["impressions"], a["clicks"]) == (4, 20, 4)
    assert (b["users"], b["impressions"], b["clicks"]) == (3, 10, 4)
    expect_a = abstats.ratio([2, 4, 4, 10], [1, 0, 2, 1])
    expect_b = abstats.ratio([3, 5, 2], [3, 1, 0])
    assert a["ctr"] == pytest.approx(0.2) and a["low"] == pytest.approx(expect_a.low)
    assert b["high"] == pytest.approx(expect_b.high)
    d = report["differences"][0]
    assert d["diff"] == pytest.approx(0.2) and d["arm"] == "b" and d["vs"] == "a"
    assert d["se"] == pytest.approx(math.hypot(expect_a.se, expect_b.se))
    assert (a["items_shown"], b["items_shown"], a["catalogue"]) == (9, 3, 20)
    assert a["coverage"] == pytest.approx(9 / 20)
    assert a["offline"] == {"ndcg": 0.3, "map": 0.2, "popularity_ndcg": 0.1, "k": 10}
    assert b["offline"] is None and b["model_version"] is None
    assert main(["experiment", "report", "--lang", "en", "--redis-url",
                 redis_server.url]) == 0
    text = capsys.readouterr().out
    assert "b - a: +0.2000" in text and "45.0%" in text
