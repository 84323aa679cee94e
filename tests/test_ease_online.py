"""EASE and the blend published to Redis: what each contract key holds, B's rows switched
with the model and freed after, and `recs update` giving exactly a fresh computation against
the published model (EASE: the scaled row times B; blend: ALS fold-in and row x B, mixed)."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.updater import Updater, UpdaterConfig
from recs.cli import main
from store.counts import Counts
from store.keys import Keys
from store.published_model import read_published_items
from tests.helpers import assert_top_k, load_counts
from tests.test_train_online import FLAGS
from trainer.data.synth import generate
from trainer.models.als import PublishedALS
from trainer.models.blend import mix
from trainer.models.ease import ease_input
from trainer.models.file import load_model

pytestmark = pytest.mark.integration

KEYS = Keys()
LANG = "en"
N = 10


@pytest.fixture(scope="module")
def data():
    return generate(n_users=700, n_resources=110, langs=("en",), seed=17, n_subjects=5)


def train(server, tmp_path, *extra) -> str:
    models = tmp_path / "models"
    assert main(["train", "--redis-url", server.url, "--model-dir", str(models), *FLAGS,
                 "--lang", LANG, *extra]) == 0
    return str(max(models.iterdir(), key=lambda p: p.stat().st_mtime))


def info(client) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(KEYS.model(LANG)).items()}


def zlist(client, key) -> list[int]:
    return [int(m) for m in client.zrevrange(key, 0, -1)]


def counts_of(client, user) -> dict[int, float]:
    return {int(k): float(v) for k, v in client.hgetall(KEYS.views(LANG, user)).items()}


def fresh_ease_scores(model, counts: dict[int, float]) -> np.ndarray:
    """The user's scaled row (current counts, known resources) times the published B."""
    import scipy.sparse as sp

    cols = model.items.numbers(list(counts), missing="negative")
    keep = cols >= 0
    row = sp.csr_matrix((np.array(list(counts.values()), dtype=np.float32)[keep],
                         (np.zeros(keep.sum(), dtype=int), cols[keep])),
                        shape=(1, len(model.items)))
    return (ease_input(row, model.config.scaling) @ model.weights).ravel(), cols[keep]


def assert_best(got: list[int], scores: np.ndarray, viewed, ids, n=N) -> None:
    """``got`` is the top ``n`` of ``scores`` over the resources not ``viewed`` (near-equal
    scores, rounded apart differently by the updater's float32 products, in either order)."""
    score_of = {int(ids[j]): float(scores[j]) for j in range(len(ids))
                if j not in set(viewed) and np.isfinite(scores[j])}
    assert len(got) == min(n, len(score_of))
    assert_top_k(got, score_of, tol=1e-4)


def new_views(client, data) -> dict[str, dict[int, int]]:
    """A few known users view more, and a newcomer arrives."""
    ids = sorted(data.views_for(LANG)["resource_id"].unique())
    users = sorted(data.views_for(LANG)["user_id"].unique())[:5]
    views = {u: {int(ids[i * 7 % len(ids)]): 3, int(ids[(i * 7 + 3) % len(ids)]): 1}
             for i, u in enumerate(users)}
    views["newcomer"] = {int(ids[2]): 1, int(ids[40]): 2}
    Counts(client, KEYS).apply(KEYS.offsets("tests", "direct"), [], {LANG: views})
    return views


def test_ease_online_keys_rows_and_updater(redis_server, redis_client, tmp_path, data):
    load_counts(redis_client, data.views_for(LANG), LANG)
    train(redis_server, tmp_path)  # ALS first: its factors keys must not survive EASE
    path = train(redis_server, tmp_path, "--model", "ease")
    model = load_model(path)
    meta = info(redis_client)
    assert meta["model"] == "ease" and meta["factors"] == "0"
    assert float(meta["ease_l2"]) == model.config.l2 and meta["ease_scaling"] == "binary"
    version = meta["version"]

    ids = model.items.ids
    for j in (0, 7, len(ids) - 1):  # similar: row j of B, best first, itself excluded
        assert_best(zlist(redis_client, KEYS.similar(LANG, ids[j])), model.weights[j], [j], ids)
    user = model.users.ids[3]
    scores, viewed = fresh_ease_scores(model, counts_of(redis_client, user))
    assert_best(zlist(redis_client, KEYS.recs(LANG, user)), scores, viewed, ids)
    assert not redis_client.exists(KEYS.factors(LANG, user))
    rows = redis_client.hgetall(KEYS.ease_rows(LANG, version))
    assert len(rows) == len(ids)
    assert np.array_equal(np.frombuffer(rows[str(ids[7]).encode()], "<f4"), model.weights[7])
    assert redis_client.smembers(KEYS.ease_versions(LANG)) == {version.encode()}

    views = new_views(redis_client, data)
    updater = Updater(redis_client, UpdaterConfig(metrics_port=0, top_n=N))
    assert updater.drain() >= len(views)  # plus users the filters left to the updater
    for user in views:
        scores, viewed = fresh_ease_scores(model, counts_of(redis_client, user))
        assert_best(zlist(redis_client, KEYS.recs(LANG, user)), scores, viewed, ids)
        assert redis_client.get(KEYS.factors(LANG, user)) == b""  # 4 x 0 factors

    # Back to ALS: B's rows are freed, factors come back.
    train(redis_server, tmp_path)
    assert not redis_client.exists(KEYS.ease_rows(LANG, version))
    assert redis_client.scard(KEYS.ease_versions(LANG)) == 0
    assert len(redis_client.get(KEYS.factors(LANG, model.users.ids[3]))) == 4 * 16


def test_blend_online_updater_mixes_fold_in_and_rows(redis_server, redis_client, tmp_path,
                                                     data):
    load_counts(redis_client, data.views_for(LANG), LANG)
    path = train(redis_server, tmp_path, "--model", "blend", "--blend-weight", "0.4",
                 "--blend-partner", "ease")
    blend = load_model(path)
    meta = info(redis_client)
    assert meta["model"] == "blend" and float(meta["blend_weight"]) == 0.4
    ids = blend.items.ids
    rid = ids[5]
    assert zlist(redis_client, KEYS.similar(LANG, rid)) == [
        int(i) for i in blend.als.similar_items([rid], N)[0][0]]  # the ALS part's cosine
    user = blend.users.ids[0]
    assert zlist(redis_client, KEYS.recs(LANG, user)) == [
        int(i) for i in blend.recommend([user], N)[0][0] if i > 0]
    assert len(redis_client.get(KEYS.factors(LANG, user))) == 4 * 16

    views = new_views(redis_client, data)
    assert Updater(redis_client, UpdaterConfig(metrics_port=0, top_n=N)).drain() >= len(views)
    published = read_published_items(redis_client, KEYS, LANG)
    foldin = PublishedALS(published.item_ids, published.item_factors, float(meta["regularization"]),
                    float(meta["alpha"]), meta["scaling"], published.version)
    for user in views:
        counts = counts_of(redis_client, user)
        factors = foldin.fold_in(foldin.views_matrix([counts]))
        ease_scores, viewed = fresh_ease_scores(blend.partner, counts)
        scores = mix((factors @ published.item_factors.T).reshape(1, -1),
                     ease_scores.reshape(1, -1), 0.4).ravel()
        assert_best(zlist(redis_client, KEYS.recs(LANG, user)), scores, viewed, ids)
