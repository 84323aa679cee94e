"""`recs train` from the Redis counts: counts written by the consumer's write path, trained on
planted synthetic data, published, read back through the CLI; readers during a retrain, two
trainers at once, a crash half-way, users with views during training, --every and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from core.signals import StopFlag, on_stop_signals
from recs.cli import main
from store.counts import Counts
from store.keys import Keys
from tests.helpers import load_counts
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.matrix import apply_filters
from trainer.data.synth import generate
from trainer.pipeline.retrain import train_language
from trainer.pipeline.rounds import stop_at_once
from trainer.settings import RetrainConfig

pytestmark = pytest.mark.integration

KEYS = Keys()
N = 10
FLAGS = ["--model", "als", "--min-item-views", "20", "--min-user-views", "3", "--factors", "16",
         "--iterations", "8", "--top-n", str(N)]
LOW = FilterConfig(min_item_views=20, max_item_views=20000, min_user_views=3)
STRICT = FilterConfig(min_item_views=60, max_item_views=20000, min_user_views=8)


@pytest.fixture(scope="module")
def data():
    return generate(n_users=1500, n_resources=250, langs=("en", "es"), seed=11)


def train(server, tmp_path, *extra) -> int:
    return main(["train", "--redis-url", server.url, "--model-dir", str(tmp_path / "models"),
                 *FLAGS, *extra])


def settings(tmp_path, filters=LOW, **kw) -> RetrainConfig:
    return RetrainConfig(filters=filters,
                         spec=ModelSpec("als", als=AlsConfig(factors=16, iterations=8)),
                         top_n=N, model_dir=str(tmp_path / "models"), **kw)


def model_hash(client, lang="en") -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(KEYS.model(lang)).items()}


def members(client, key) -> list[int]:
    return [int(m) for m in client.zrevrange(key, 0, -1)]


def published(client, kind: str, lang="en") -> set[str]:
    key = KEYS.published_items(lang) if kind == "items" else KEYS.published_users(lang)
    return {m.decode() for m in client.smembers(key)}


def coverage(views: pd.DataFrame, filters: FilterConfig) -> tuple[set[str], set[str], pd.DataFrame]:
    kept, _ = apply_filters(views, filters)
    return ({str(r) for r in kept["resource_id"].unique()}, set(kept["user_id"].astype(str)),
            kept)


def test_train_publishes_what_the_contract_says(redis_server, redis_client, tmp_path, data,
                                                capsys):
    for lang in ("en", "es"):
        load_counts(redis_client, data.views_for(lang), lang)
    assert train(redis_server, tmp_path) == 0
    assert "en: published" in capsys.readouterr().out

    for lang in ("en", "es"):
        views = data.views_for(lang)
        items, users, kept = coverage(views, LOW)
        info = model_hash(redis_client, lang)
        for field in ("version", "trained_at", "factors", "regularization", "iterations",
                      "alpha", "users", "items", "nnz", "scaling"):
            assert info[field], field
        assert (int(info["users"]), int(info["items"]), int(info["nnz"])) == (
            len(users), len(items), len(kept))
        assert info["factors"] == "16" and info["trained_at"].endswith("Z")
        assert published(redis_client, "items", lang) == items
        assert published(redis_client, "users", lang) == users
        ids = np.frombuffer(redis_client.get(KEYS.item_ids(lang)), "<u4")
        assert sorted(str(i) for i in ids) == sorted(items)
        assert len(redis_client.get(KEYS.item_factors(lang))) == 4 * 16 * len(items)

        subject = data.subject_of(lang)
        same = []
        for rid in items:
            neighbours = members(redis_client, KEYS.similar(lang, rid))
            assert len(neighbours) == N and int(rid) not in neighbours
            assert {str(m) for m in neighbours} <= items
            same.append(np.mean([subject[m] == subject[int(rid)] for m in neighbours]))
        # Planted subjects: most resources' neighbours share their subject.
        assert np.median(same) >= 0.8, np.median(same)

        viewed = kept.groupby("user_id")["resource_id"].apply(set)
        for user in list(users)[:300]:
            recs = members(redis_client, KEYS.recs(lang, user))
            assert len(recs) == min(N, len(items) - len(viewed[user]))
            assert not set(recs) & viewed[user]
            assert len(redis_client.get(KEYS.factors(lang, user))) == 4 * 16
        assert (tmp_path / "models" / f"cf_ALSModel_fa16_re0.01_it8_al50_{lang}.dump").is_file()
        assert redis_client.zcard(KEYS.touched(lang)) == 0  # all in the model
        assert not redis_client.exists(KEYS.train_lock(lang))

    # The lookups read what was published, in the --model path's shapes.
    rid = next(iter(published(redis_client, "items")))
    assert main(["similar", rid, "--lang", "en", "--redis-url", redis_server.url,
                 "-n", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["resource_id"] for r in rows] == members(redis_client, KEYS.similar("en", rid))[:3]
    assert set(rows[0]) == {"resource_id", "score"}
    paths = data.write(tmp_path / "csv")
    user = next(iter(published(redis_client, "users")))
    assert main(["recommend", user, "--lang", "en", "--redis-url", redis_server.url,
                 "--json", "--resources", str(paths["en"]["resources"])]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["resource_id"] for r in rows] == members(redis_client, KEYS.recs("en", user))
    assert {"resource_id", "score", "title", "subject", "tags"} <= set(rows[0])
    assert main(["recommend", user, "--lang", "en", "--redis-url", redis_server.url]) == 0
    assert "1. " in capsys.readouterr().out


def test_lookups_say_clearly_what_is_missing(redis_server, redis_client, tmp_path, data, capsys):
    url = redis_server.url
    assert main(["similar", "123", "--lang", "en", "--redis-url", url]) == 2
    assert "no model published" in capsys.readouterr().err
    assert main(["train", "--redis-url", url, "--lang", "en", *FLAGS]) == 2
    assert "en: no counts in Redis" in capsys.readouterr().err
    load_counts(redis_client, data.views_for("en"), "en")
    assert train(redis_server, tmp_path, "--lang", "en") == 0
    assert main(["similar", "123", "--lang", "en", "--redis-url", url]) == 2
    assert "unknown resource 123" in capsys.readouterr().err
    assert main(["recommend", "nobody", "--lang", "en", "--redis-url", url]) == 2
    assert "unknown user nobody" in capsys.readouterr().err
    assert main(["recommend", "x", "--lang", "es", "--redis-url", url]) == 2


def test_a_stricter_retrain_removes_uncovered_keys_while_readers_see_whole_lists(
        redis_server, redis_client, tmp_path, data):
    views = data.views_for("en")
    load_counts(redis_client, views, "en")
    train_language(redis_client, KEYS, "en", settings(tmp_path))
    old_items, old_users, _ = coverage(views, LOW)
    new_items, new_users, new_kept = coverage(views, STRICT)
    assert new_items < old_items and new_users < old_users
    # Covered by both models, with a full list in both (fewer unviewed resources than N
    # would make a shorter list legitimately).
    viewed = new_kept.groupby("user_id")["resource_id"].nunique()
    both_users = [u for u in new_users & old_users if viewed[u] <= len(new_items) - N]
    both_items = sorted(new_items & old_items)
    assert all(redis_client.zcard(KEYS.recs("en", u)) == N for u in both_users)

    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader():
        client = redis_server.client()
        rng = np.random.default_rng(0)
        while not stop.is_set():
            pipe = client.pipeline(transaction=False)
            sample_users = rng.choice(both_users, 20)
            sample_items = rng.choice(both_items, 20)
            for u in sample_users:
                pipe.zrevrange(KEYS.recs("en", u), 0, N - 1)
                pipe.strlen(KEYS.factors("en", u))
            for r in sample_items:
                pipe.zrevrange(KEYS.similar("en", r), 0, N - 1)
            got = pipe.execute()
            reads[0] += 1
            for u, lst, flen in zip(sample_users, got[0:40:2], got[1:40:2], strict=True):
                if len(lst) != N or flen != 64:
                    problems.append(f"user {u}: {len(lst)} recs, {flen} factor bytes")
            for r, lst in zip(sample_items, got[40:], strict=True):
                if len(lst) != N:
                    problems.append(f"resource {r}: {len(lst)} similar")
        client.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        # Small chunks and a pause per round trip stretch the publish over many reads.
        result = train_language(redis_client, KEYS, "en", settings(tmp_path, filters=STRICT),
                                publish_options={"entries_per_call": 50,
                                                 "calls_per_round_trip": 2,
                                                 "after_chunk": lambda kind, n: time.sleep(0.002)})
    finally:
        stop.set()
        thread.join()
    assert result.outcome == "published"
    assert reads[0] > 20
    assert problems == []
    assert published(redis_client, "items") == new_items
    assert published(redis_client, "users") == new_users
    for rid in old_items - new_items:
        assert not redis_client.exists(KEYS.similar("en", rid))
    for user in old_users - new_users:
        assert not redis_client.exists(KEYS.recs("en", user), KEYS.factors("en", user))
        # ...but they still have views: the updater is to fold them into the new model.
        assert redis_client.zscore(KEYS.dirty("en"), user) is not None
    assert result.fields["refolded_users"] == len(old_users - new_users)
    assert result.fields["removed_resources"] == len(old_items - new_items)
    assert result.fields["removed_users"] == len(old_users - new_users)


def test_two_trainers_at_once_publish_once(redis_server, redis_client, tmp_path, data, capsys):
    load_counts(redis_client, data.views_for("en"), "en")
    start = threading.Barrier(2)
    outcomes = []

    loser_done = threading.Event()

    def run():
        start.wait()
        result = train_language(redis_client, KEYS, "en", settings(tmp_path),
                                publish_options={"after_chunk": hold})
        outcomes.append(result)
        if result.outcome != "published":
            loser_done.set()

    def hold(kind, done):
        # The winner publishes (holding the lock) until the other run has ended, so the
        # other finds the lock held however the two threads are scheduled.
        assert loser_done.wait(60), "the second trainer never finished"

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.outcome for r in outcomes) == ["locked", "published"]
    winner = next(r for r in outcomes if r.outcome == "published")
    assert model_hash(redis_client)["version"] == winner.fields["version"]

    # The CLI skips a language whose lock is held, says so, and exits 0.
    redis_client.set(KEYS.train_lock("en"), "another-host:1:abc")
    assert train(redis_server, tmp_path, "--lang", "en") == 0
    assert "another trainer (another-host:1:abc)" in capsys.readouterr().out
    assert model_hash(redis_client)["version"] == winner.fields["version"]
    # With --lock-wait it waits for the holder, then publishes.
    threading.Timer(0.5, redis_client.delete, [KEYS.train_lock("en")]).start()
    assert train(redis_server, tmp_path, "--lang", "en", "--lock-wait", "20") == 0
    assert model_hash(redis_client)["version"] != winner.fields["version"]


def test_a_crash_half_way_leaves_the_old_model_readable_and_a_rerun_completes(
        redis_server, redis_client, tmp_path, data):
    views = data.views_for("en")
    load_counts(redis_client, views, "en")
    first = train_language(redis_client, KEYS, "en", settings(tmp_path))
    _, users, _ = coverage(views, LOW)
    before = {u: members(redis_client, KEYS.recs("en", u)) for u in users}

    def crash(kind, done):
        if kind == "recs" and done >= 300:
            raise RuntimeError("injected crash in the publisher")

    with pytest.raises(RuntimeError, match="injected"):
        train_language(redis_client, KEYS, "en", settings(tmp_path),
                       publish_options={"entries_per_call": 100, "calls_per_round_trip": 1,
                                        "after_chunk": crash})
    assert model_hash(redis_client)["version"] == first.fields["version"]
    assert not redis_client.exists(KEYS.train_lock("en"))  # released on the way out
    for u in users:  # every list whole: old or (the first chunks) rewritten
        assert len(members(redis_client, KEYS.recs("en", u))) == len(before[u])
        assert redis_client.strlen(KEYS.factors("en", u)) == 64

    again = train_language(redis_client, KEYS, "en", settings(tmp_path))
    assert again.outcome == "published"
    assert model_hash(redis_client)["version"] == again.fields["version"]
    assert published(redis_client, "users") == users


def test_users_with_views_during_training_are_handed_to_the_updater(
        redis_server, redis_client, tmp_path, data):
    views = data.views_for("en")
    load_counts(redis_client, views, "en")
    seq = int(redis_client.get(KEYS.seq("en")))
    existing, finished = sorted(set(views["user_id"]))[:2]
    hooked = []

    def during_publish(kind, done):
        if hooked:
            return
        hooked.append(kind)
        # New views arrive (seq + 1), and the updater finishes a user that was pending.
        assert Counts(redis_client, KEYS).apply(
            KEYS.offsets("test", "views"), [],
            {"en": {existing: {int(views["resource_id"][0]): 1}, "brand-new": {1: 1}}}) == {}
        redis_client.zrem(KEYS.dirty("en"), finished)

    result = train_language(redis_client, KEYS, "en", settings(tmp_path),
                            publish_options={"after_chunk": during_publish})
    assert result.fields["seq"] == seq and result.fields["requeued"] == 2
    dirty = {m.decode(): s for m, s in redis_client.zrange(KEYS.dirty("en"), 0, -1,
                                                            withscores=True)}
    assert dirty[existing] == seq + 1 and dirty["brand-new"] == seq + 1
    assert dirty[finished] == seq  # back in the queue, against the new model
    # Every other user was pending since the load: those the new model covers leave the
    # queue (their lists are fresh); the ones filtered out stay for the updater.
    _, covered, _ = coverage(views, LOW)
    others = set(dirty) - {existing, "brand-new", finished}
    assert others == set(views["user_id"]) - covered - {existing, finished}
    assert result.fields["pending_dropped"] == len(covered - {existing, finished})
    touched = [m.decode() for m in redis_client.zrange(KEYS.touched("en"), 0, -1)]
    assert sorted(touched) == sorted([existing, "brand-new"])


def test_evaluate_stores_metrics_in_the_model_hash(redis_server, redis_client, tmp_path, data):
    load_counts(redis_client, data.views_for("en"), "en")
    assert train(redis_server, tmp_path, "--evaluate", "--test-fraction", "0.2") == 0
    metrics = json.loads(model_hash(redis_client)["metrics"])
    assert metrics["k"] == 10 and metrics["test_fraction"] == 0.2
    for row in ("model", "popularity"):
        assert set(metrics[row]) == {"precision", "map", "ndcg", "auc"}
        assert all(0.0 <= v <= 1.0 for v in metrics[row].values())
    assert metrics["model"]["precision"] > metrics["popularity"]["precision"]


def test_every_repeats_until_sigterm_and_stops_cleanly(redis_server, redis_client, tmp_path,
                                                       data):
    load_counts(redis_client, data.views_for("en"), "en")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RECS_REDIS_URL": redis_server.url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "recs.cli", "train", "--every", "0.2", "--model-dir",
         str(tmp_path / "models"), "--metrics-port", "0", *FLAGS], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        versions = set()
        deadline = time.monotonic() + 90
        while len(versions) < 2 and time.monotonic() < deadline and proc.poll() is None:
            v = redis_client.hget(KEYS.model("en"), "version")
            if v:
                versions.add(v)
            time.sleep(0.05)
        assert len(versions) >= 2, proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopping after the current run" in err and "stopped" in err
    assert not redis_client.exists(KEYS.train_lock("en"))


def test_a_second_signal_stops_at_once():
    """The trainer's routing, with real signals: the first asks for a stop after the run in
    hand, the second unwinds at once (through the lock's ``finally``)."""
    stop = StopFlag()
    restore = on_stop_signals(lambda name: stop.set(), stop_at_once)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    finally:
        restore()



def test_filtered_out_users_who_viewed_known_resources_get_folded_in(redis_server, redis_client,
                                                                     tmp_path, data):
    """A user below --min-user-views whose only resource became known with this model: the
    updater had nothing to fold them into before (no factors), and no view of theirs is new,
    so only the trainer can hand them over (found by tests/test_chaos.py)."""
    from consumers.updater import Updater, UpdaterConfig

    views = data.views_for("en")
    load_counts(redis_client, views, "en")
    items, covered, _ = coverage(views, LOW)
    top = int(views.groupby("resource_id")["views"].sum().idxmax())
    assert Counts(redis_client, KEYS).apply(KEYS.offsets("test", "views"), [], {"en": {
        "light": {top: 1}, "elsewhere": {4_000_000_000: 1}}}) == {}
    redis_client.delete(KEYS.dirty("en"))  # as if the updater had seen them all, model-less
    result = train_language(redis_client, KEYS, "en", settings(tmp_path))
    seq = result.fields["seq"]
    dirty = {m.decode(): s for m, s in redis_client.zrange(KEYS.dirty("en"), 0, -1,
                                                            withscores=True)}
    outside = {u for u, r in zip(views["user_id"].astype(str), views["resource_id"].astype(str),
                                 strict=True) if r in items and u not in covered}
    assert "light" in dirty and "elsewhere" not in dirty
    assert set(dirty) == outside | {"light"} and set(dirty.values()) == {seq}
    assert result.fields["uncovered_queued"] == len(outside) + 1
    Updater(redis_client, UpdaterConfig(metrics_port=0)).drain()
    assert redis_client.exists(KEYS.factors("en", "light"), KEYS.recs("en", "light")) == 2
    assert top not in {int(m) for m in redis_client.zrange(KEYS.recs("en", "light"), 0, -1)}
    assert not redis_client.exists(KEYS.factors("en", "elsewhere"))
