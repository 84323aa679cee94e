"""RP3beta published to Redis: what each contract key holds, W's sparse rows switched with the
model and freed after, `recs update` giving exactly a fresh computation against the published
model (the scaled row times W), hidden resources out of every list, and forget."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from consumers.updater import Updater, UpdaterConfig
from recs.cli import main
from store.control import Control
from store.control_op import ControlOp
from store.keys import Keys
from tests.helpers import load_counts
from tests.test_ease_online import (
    LANG,
    N,
    assert_best,
    counts_of,
    info,
    new_views,
    train,
    zlist,
)
from tests.test_takedown import lists, most_listed, traces
from trainer.data.synth import generate
from trainer.models.ease import ease_input
from trainer.models.file import load_model
from trainer.pipeline.takedown import settle

pytestmark = pytest.mark.integration

KEYS = Keys()


@pytest.fixture(scope="module")
def data():
    return generate(n_users=700, n_resources=110, langs=("en",), seed=17, n_subjects=5)


def fresh_scores(model, counts: dict[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """The user's scaled row (current counts, known resources) times the published W;
    unreached resources (score 0) are never listed, so they are -inf here."""
    cols = model.items.numbers(list(counts), missing="negative")
    keep = cols >= 0
    row = sp.csr_matrix((np.array(list(counts.values()), dtype=np.float32)[keep],
                         (np.zeros(keep.sum(), dtype=int), cols[keep])),
                        shape=(1, len(model.items)))
    scores = (ease_input(row, model.config.scaling) @ model.weights).toarray().ravel()
    return np.where(scores > 0, scores, -np.inf), cols[keep]


def test_rp3beta_online_keys_rows_updater_and_back_to_als(redis_server, redis_client,
                                                           tmp_path, data):
    load_counts(redis_client, data.views_for(LANG), LANG)
    train(redis_server, tmp_path)  # ALS first: its factors keys must not survive RP3beta
    model = load_model(train(redis_server, tmp_path, "--model", "rp3beta",
                             "--rp3-neighbours", "30"))
    meta = info(redis_client)
    assert meta["model"] == "rp3beta" and meta["factors"] == "0"
    assert (float(meta["rp3_alpha"]), float(meta["rp3_beta"]), meta["rp3_neighbours"],
            meta["rp3_scaling"], meta["rp3_normalize"]) == (0.32, 0.19, "30", "log", "0")
    version, ids = meta["version"], model.items.ids

    for j in (0, 7, len(ids) - 1):  # similar: row j of W, best first, itself excluded
        row = model.weights[j].toarray().ravel()
        assert_best(zlist(redis_client, KEYS.similar(LANG, ids[j])),
                    np.where(row > 0, row, -np.inf), [j], ids)
    user = model.users.ids[3]
    assert_best(zlist(redis_client, KEYS.recs(LANG, user)),
                *fresh_scores(model, counts_of(redis_client, user)), ids)
    assert not redis_client.exists(KEYS.factors(LANG, user))
    rows = redis_client.hgetall(KEYS.ease_rows(LANG, version))
    assert len(rows) == len(ids)
    blob, w7 = rows[str(ids[7]).encode()], model.weights[7]
    half = len(blob) // 2
    assert np.array_equal(np.frombuffer(blob[:half], "<u4"), ids[w7.indices])
    assert np.array_equal(np.frombuffer(blob[half:], "<f4"), w7.data)

    views = new_views(redis_client, data)
    assert Updater(redis_client, UpdaterConfig(metrics_port=0, top_n=N)).drain() >= len(views)
    for user in views:
        assert_best(zlist(redis_client, KEYS.recs(LANG, user)),
                    *fresh_scores(model, counts_of(redis_client, user)), ids)
        assert redis_client.get(KEYS.factors(LANG, user)) == b""  # 4 x 0 factors

    train(redis_server, tmp_path)  # back to ALS: W's rows are freed, factors come back
    assert not redis_client.exists(KEYS.ease_rows(LANG, version))
    assert redis_client.scard(KEYS.ease_versions(LANG)) == 0
    assert len(redis_client.get(KEYS.factors(LANG, model.users.ids[3]))) == 4 * 16


def test_rp3beta_hidden_resources_leave_every_list_and_forget_leaves_no_trace(
        redis_server, redis_client, tmp_path, data):
    load_counts(redis_client, data.views_for(LANG), LANG)
    train(redis_server, tmp_path, "--model", "rp3beta")
    rid = most_listed(redis_client, LANG)
    before = {kind: lists(redis_client, LANG, kind) for kind in ("users", "items")}
    Control(redis_client, KEYS).run([ControlOp("hide", str(rid), LANG)])
    report = settle(redis_client, KEYS, LANG)
    assert report.users_refilled == 0 and report.users_cleaned > 0
    for kind, old in before.items():  # cleaned, never refilled with factor scores
        for key, members in lists(redis_client, LANG, kind).items():
            assert members == [m for m in old[key] if m != rid]

    views = new_views(redis_client, data)  # the updater and a retrain leave it out too
    Updater(redis_client, UpdaterConfig(metrics_port=0, top_n=N)).drain()
    assert all(rid not in members for members in lists(redis_client, LANG).values())
    assert [u for u in views if redis_client.exists(KEYS.recs(LANG, u))]
    train(redis_server, tmp_path, "--model", "rp3beta")
    for kind in ("users", "items"):
        assert all(rid not in m for m in lists(redis_client, LANG, kind).values())

    user = next(iter(views))
    assert main(["forget", "--redis-url", redis_server.url, user]) == 0
    assert [t for t in traces(redis_client, user) if ":es:" not in t] == []
    train(redis_server, tmp_path, "--model", "rp3beta")
    assert [t for t in traces(redis_client, user) if ":es:" not in t] == []


def test_a_blend_with_rp3beta_keeps_factors_and_the_updater_mixes_both(
        redis_server, redis_client, tmp_path, data):
    from store.published_model import read_published_items
    from trainer.models.als import PublishedALS
    from trainer.models.blend import mix

    load_counts(redis_client, data.views_for(LANG), LANG)
    blend = load_model(train(redis_server, tmp_path, "--model", "blend", "--blend-partner",
                             "rp3beta", "--blend-weight", "0.4"))
    meta = info(redis_client)
    assert (meta["model"], meta["blend_partner"], float(meta["blend_weight"])) == (
        "blend", "rp3beta", 0.4)
    assert meta["rp3_neighbours"] == "76" and "ease_l2" not in meta
    assert int(meta["factors"]) == 16
    ids, user = blend.items.ids, blend.users.ids[0]
    assert len(redis_client.get(KEYS.factors(LANG, user))) == 4 * 16  # the contract's key
    assert zlist(redis_client, KEYS.recs(LANG, user)) == [
        int(i) for i in blend.recommend([user], N)[0][0] if i > 0]
    assert redis_client.hlen(KEYS.ease_rows(LANG, meta["version"])) == len(ids)

    views = new_views(redis_client, data)
    assert Updater(redis_client, UpdaterConfig(metrics_port=0, top_n=N)).drain() >= len(views)
    published = read_published_items(redis_client, KEYS, LANG)
    foldin = PublishedALS(published.item_ids, published.item_factors,
                          float(meta["regularization"]), float(meta["alpha"]), meta["scaling"],
                          published.version)
    for user in views:
        counts = counts_of(redis_client, user)
        factors = foldin.fold_in(foldin.views_matrix([counts]))
        assert len(redis_client.get(KEYS.factors(LANG, user))) == 4 * 16
        rp3, viewed = fresh_scores(blend.partner, counts)
        scores = mix((factors @ published.item_factors.T).reshape(1, -1),
                     np.where(np.isfinite(rp3), rp3, 0.0).reshape(1, -1), 0.4).ravel()
        assert_best(zlist(redis_client, KEYS.recs(LANG, user)), scores, viewed, ids)
