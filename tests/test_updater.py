"""``recs update`` against a real redis-server: fold-in results, leases, crashes, retrains.

Counts go in through the consumer's own write path (store/counts.py) and models through the
trainer's publisher (store/publish.py), so these tests exercise the keys exactly as the other
components write them. Subprocess tests run the real ``recs update`` command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from functools import cache

import numpy as np
import pytest

from consumers.updater import Updater, UpdaterConfig
from store.counts import Counts
from store.handover import requeue_touched
from store.keys import Keys
from store.publish import Lists, Publisher
from store.published_model import read_published_items
from store.updates import BatchWrite, UpdateQueue
from store.user_reads import read_views
from trainer.config import AlsConfig
from trainer.data.matrix import build_matrix
from trainer.data.synth import generate
from trainer.models.als import PublishedALS, fit

pytestmark = pytest.mark.integration

LANG = "en"
KEYS = Keys()
REG, ALPHA = 0.05, 20.0


# -- helpers ------------------------------------------------------------------------------


def add_views(client, views: dict[str, dict[int, int]], lang: str = LANG) -> None:
    """One consumer batch: counts, seq, dirty and touched in the consumer's atomic step."""
    Counts(client, KEYS).apply(KEYS.offsets("tests", "direct"), [], {lang: views})


def publish(client, item_ids, item_factors, *, lang: str = LANG, reg: float = REG,
            alpha: float = ALPHA, scaling: str = "log", users: Lists | None = None,
            publisher: Publisher | None = None) -> str:
    """Make a model live the way the trainer does (optionally with per-user lists first)."""
    pub = publisher or Publisher(client, KEYS, lang)
    if users is not None:
        pub.write_users([users])
    factors = np.asarray(item_factors, dtype=np.float32)
    return pub.switch({"factors": factors.shape[1], "regularization": reg, "alpha": alpha,
                       "scaling": scaling, "iterations": 10, "trained_at": "2025-01-01T00:00:00Z",
                       "users": 0, "items": len(item_ids), "nnz": 0}, item_ids, factors)


def stored_factors(client, user: str, lang: str = LANG) -> np.ndarray | None:
    raw = client.get(KEYS.factors(lang, user))
    return None if raw is None else np.frombuffer(raw, dtype="<f4")


def stored_recs(client, user: str, lang: str = LANG) -> list[int]:
    return [int(m) for m in client.zrevrange(KEYS.recs(lang, user), 0, -1)]


def current_foldin(client, lang: str = LANG) -> PublishedALS:
    p = read_published_items(client, KEYS, lang)
    return PublishedALS(p.item_ids, p.item_factors, float(p.meta["regularization"]),
                  float(p.meta["alpha"]), p.meta["scaling"], p.version)


def expected_factors(client, users: list[str], lang: str = LANG) -> np.ndarray:
    """The fold-in of each user's CURRENT counts against the CURRENT published model."""
    fi = current_foldin(client, lang)
    raw = read_views(client, KEYS, lang, users)
    counts = [{int(k): int(v) for k, v in h.items()} for h in raw]
    return fi.fold_in(fi.views_matrix(counts))


def batch_of(n_users: int, factors: int, recs: list[int]) -> BatchWrite:
    """The same hand-made factors and list (scores descending) for ``n_users`` users."""
    return BatchWrite(np.ones((n_users, factors), np.float32), np.ones(n_users, bool),
                      np.tile(np.asarray(recs, np.int64), (n_users, 1)),
                      np.tile(-np.arange(len(recs), dtype=np.float32), (n_users, 1)))


def updater(client, **overrides) -> Updater:
    config = UpdaterConfig(metrics_port=0, batch_size=overrides.pop("batch_size", 64),
                           **overrides)
    return Updater(client, config)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def start_updater(redis_server, tmp_path):
    """``start_updater(name, *flags)``: ``recs update`` as a subprocess on this test's Redis,
    logging to ``tmp_path/name.log``; whatever still runs at the end is killed."""
    started: list[subprocess.Popen] = []

    def start(name: str, *extra: str) -> subprocess.Popen:
        with open(tmp_path / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "recs.cli", "update", "--redis-url", redis_server.url,
                 "--metrics-port", "0", "--poll-interval", "0.02", *extra],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_processes(*procs: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 20
                   ) -> list[int | None]:
    """Signal every process, then collect the exit codes (None: still running)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(sig)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout))
        except subprocess.TimeoutExpired:
            codes.append(None)
    return codes


@cache
def planted():
    """A small synthetic language with planted subjects and an ALS model trained on it."""
    data = generate(n_users=700, n_resources=120, langs=(LANG,), seed=3, n_subjects=5,
                    mean_items=10.0, off_subject=0.05)
    matrix = build_matrix(data.views_for(LANG))
    model = fit(matrix, AlsConfig(factors=8, regularization=REG, iterations=15, alpha=ALPHA),
                LANG, num_threads=1)
    return data, matrix, model


def subject_resources(data, subject: str) -> list[int]:
    """Resources of ``subject``, most viewed first."""
    subjects = data.subject_of(LANG)
    totals = data.views_for(LANG).groupby("resource_id")["views"].sum()
    ids = [int(i) for i in subjects.index[subjects == subject]]
    return sorted(ids, key=lambda i: -totals.get(i, 0))


# -- fold-in results ----------------------------------------------------------------------


def test_updated_users_get_the_fold_in_of_their_counts(redis_client):
    rng = np.random.default_rng(0)
    item_ids = np.arange(500, 560)
    version = publish(redis_client, item_ids, rng.standard_normal((60, 8)) * 0.3)
    views = {f"u{i}": {int(r): int(rng.integers(1, 9))
                       for r in rng.choice(item_ids, size=rng.integers(1, 12), replace=False)}
             for i in range(150)}
    views["newcomer"] = {int(item_ids[3]): 1}
    views["unknown-only"] = {999: 4, 1_000_000: 1}
    views["mixed"] = {int(item_ids[5]): 2, 999: 7}
    add_views(redis_client, views)
    up = updater(redis_client, top_n=10)
    assert up.drain() == len(views)
    users = list(views)
    expected = expected_factors(redis_client, users)
    for i, user in enumerate(users):
        got = stored_factors(redis_client, user)
        if user == "unknown-only":
            # No known views: no factors and no recommendations until a retrain knows them.
            assert got is None and not redis_client.exists(KEYS.recs(LANG, user))
            continue
        np.testing.assert_allclose(got, expected[i], rtol=1e-5, atol=1e-6)
        recs = stored_recs(redis_client, user)
        assert len(recs) == 10 and not set(recs) & set(views[user])
        # The recs are the ten best items of these factors, scored by the same model.
        fi = current_foldin(redis_client)
        scores = fi.item_factors @ got
        allowed = [j for j in range(60) if int(item_ids[j]) not in views[user]]
        best = sorted(allowed, key=lambda j: -scores[j])[:10]
        assert recs == [int(item_ids[j]) for j in best]
    assert redis_client.zcard(KEYS.dirty(LANG)) == 0
    assert redis_client.zcard(KEYS.claims(LANG)) == 0
    published = {m.decode() for m in redis_client.smembers(KEYS.published_users(LANG))}
    assert published == set(users) - {"unknown-only"}
    assert current_foldin(redis_client).version == version
    assert up.metrics.users.labels(LANG, "updated")._value.get() == len(views) - 1
    assert up.metrics.users.labels(LANG, "no_factors")._value.get() == 1
    assert up.refresh_pending(force=True) == {LANG: 0}


def test_a_new_users_views_bring_recommendations_in_their_subject(redis_client):
    data, matrix, model = planted()
    publish(redis_client, model.items.ids, model.item_factors, scaling=model.config.scaling)
    subjects = data.subject_of(LANG)
    for subject in subjects.unique():
        user = f"new-{subject}"
        add_views(redis_client, {user: {r: 1 for r in subject_resources(data, subject)[:3]}})
    updater(redis_client).drain()
    for subject in subjects.unique():
        top = stored_recs(redis_client, f"new-{subject}")[:10]
        on_subject = sum(subjects[r] == subject for r in top)
        assert on_subject >= 8, (subject, [subjects[r] for r in top])


def test_an_existing_user_who_starts_a_new_subject_sees_it_in_their_top_10(redis_client):
    data, matrix, model = planted()
    publish(redis_client, model.items.ids, model.item_factors, scaling=model.config.scaling)
    subjects = data.subject_of(LANG)
    views = data.views_for(LANG)
    planted_subjects = data.user_subjects.set_index("user_id")["subjects"]
    # A learner of exactly one subject, with a real history there.
    sizes = views.groupby("user_id").size()
    user = next(u for u in sizes[sizes >= 8].index if "|" not in planted_subjects[u])
    old = planted_subjects[user]
    new = next(s for s in subjects.unique() if s != old)
    history = {int(r): int(v) for r, v in
               views[views.user_id == user][["resource_id", "views"]].to_numpy()}
    add_views(redis_client, {user: history})
    up = updater(redis_client)
    up.drain()
    before = stored_recs(redis_client, user)[:10]
    assert sum(subjects[r] == new for r in before) <= 1
    add_views(redis_client, {user: {r: 2 for r in subject_resources(data, new)[:4]}})
    up.drain()
    after = stored_recs(redis_client, user)[:10]
    assert sum(subjects[r] == new for r in after) >= 2, [subjects[r] for r in after]
    assert sum(subjects[r] == old for r in after) >= 3  # the old subject is not forgotten


# -- the queue's guarantees ---------------------------------------------------------------


def test_views_that_arrive_during_the_solve_keep_the_user_pending(redis_client):
    item_ids = np.arange(1, 21)
    version = publish(redis_client, item_ids, np.eye(20, 4))
    add_views(redis_client, {"a": {1: 1}, "b": {2: 1}})
    queue = UpdateQueue(redis_client, KEYS)
    claim = queue.claim(LANG, 10, 30_000)
    assert sorted(claim.users) == ["a", "b"]
    add_views(redis_client, {"a": {3: 1}})  # lands while "a" is being solved
    result = queue.commit(claim, version, batch_of(2, 4, [5, 7, 0]))
    assert (result.stale, result.written, result.pending) == (False, 2, 1)
    assert stored_recs(redis_client, "b") == [5, 7]  # the empty slot is left out
    np.testing.assert_array_equal(stored_factors(redis_client, "b"), np.ones(4))
    assert [m.decode() for m in redis_client.zrange(KEYS.dirty(LANG), 0, -1)] == ["a"]
    assert redis_client.zcard(KEYS.claims(LANG)) == 0
    # The next round solves "a" with both views.
    updater(redis_client).drain()
    np.testing.assert_allclose(stored_factors(redis_client, "a"),
                               expected_factors(redis_client, ["a"])[0], rtol=1e-5)


def test_two_updaters_never_hold_the_same_user_and_an_expired_lease_passes_on(redis_client):
    publish(redis_client, np.arange(1, 11), np.eye(10, 4))
    add_views(redis_client, {f"u{i}": {1 + i % 10: 1} for i in range(30)})
    first, second = UpdateQueue(redis_client, KEYS), UpdateQueue(redis_client, KEYS)
    a = first.claim(LANG, 20, 1000)
    b = second.claim(LANG, 20, 1000)
    assert len(a.users) == 20 and len(b.users) == 10 and not set(a.users) & set(b.users)
    assert second.claim(LANG, 20, 30_000).users == []
    # The first holder stalls past its lease (waited for, not slept): every user passes on.
    taken: list[str] = []
    wait_for(lambda: taken.extend(second.claim(LANG, 50, 30_000).users)
             or sorted(taken) == sorted(a.users + b.users), 30, "the leases to expire")
    version = redis_client.hget(KEYS.model(LANG), "version").decode()
    late = first.commit(a, version, batch_of(20, 4, []))
    # ...so its late write is refused: the new holder writes these users.
    assert (late.written, late.lost) == (0, 20)
    assert not any(redis_client.exists(KEYS.factors(LANG, u)) for u in a.users)
    assert redis_client.zcard(KEYS.dirty(LANG)) == 30


def test_a_publish_during_the_solve_makes_the_write_a_no_op(redis_client):
    rng = np.random.default_rng(1)
    item_ids = np.arange(1, 31)
    old = publish(redis_client, item_ids, rng.standard_normal((30, 6)))
    add_views(redis_client, {"a": {1: 3, 2: 1}})
    queue = UpdateQueue(redis_client, KEYS)
    claim = queue.claim(LANG, 10, 30_000)
    new = publish(redis_client, item_ids, rng.standard_normal((30, 6)))
    assert new != old
    result = queue.commit(claim, old, batch_of(1, 6, [3]))
    assert result.stale
    assert not redis_client.exists(KEYS.factors(LANG, "a"), KEYS.recs(LANG, "a"))
    assert redis_client.zcard(KEYS.dirty(LANG)) == 1  # still pending...
    assert redis_client.zcard(KEYS.claims(LANG)) == 0  # ...and free to take at once
    up = updater(redis_client)
    up.drain()
    np.testing.assert_allclose(stored_factors(redis_client, "a"),
                               expected_factors(redis_client, ["a"])[0], rtol=1e-5)
    assert up.metrics.model_switches.labels(LANG)._value.get() == 1


def test_the_updater_switches_models_when_a_retrain_publishes(redis_client):
    rng = np.random.default_rng(2)
    item_ids = np.arange(1, 41)
    publish(redis_client, item_ids, rng.standard_normal((40, 6)))
    up = updater(redis_client)
    add_views(redis_client, {"a": {1: 1}})
    up.drain()
    first = stored_factors(redis_client, "a")
    publish(redis_client, item_ids[::-1].copy(), rng.standard_normal((40, 6)))
    add_views(redis_client, {"a": {2: 1}})
    up.drain()
    second = stored_factors(redis_client, "a")
    np.testing.assert_allclose(second, expected_factors(redis_client, ["a"])[0], rtol=1e-5)
    assert not np.allclose(first, second)
    assert up.metrics.model_switches.labels(LANG)._value.get() == 2


def test_languages_are_updated_separately_and_unpublished_ones_wait(redis_client):
    publish(redis_client, np.arange(1, 11), np.eye(10, 4), lang="es")
    add_views(redis_client, {"a": {1: 1}}, lang="es")
    add_views(redis_client, {"a": {1: 1}}, lang="pt")  # no model for pt yet
    updater(redis_client).drain()
    assert redis_client.exists(KEYS.factors("es", "a"))
    assert not redis_client.exists(KEYS.factors("pt", "a"))
    assert redis_client.zcard(KEYS.dirty("pt")) == 1  # waits for pt's first model


# -- crashes and retrains with the real command -------------------------------------------


def _backlog(client, users: int, items: np.ndarray, seed: int) -> dict[str, dict[int, int]]:
    rng = np.random.default_rng(seed)
    views = {f"user-{i}": {int(r): int(rng.integers(1, 6))
                           for r in rng.choice(items, size=rng.integers(3, 15), replace=False)}
             for i in range(users)}
    names = list(views)
    for s in range(0, users, 500):
        add_views(client, {u: views[u] for u in names[s:s + 500]})
    return views


def _assert_everyone_current(client, users: list[str]) -> None:
    expected = expected_factors(client, users)
    for i, user in enumerate(users):
        got = stored_factors(client, user)
        assert got is not None, user
        np.testing.assert_allclose(got, expected[i], rtol=1e-4, atol=1e-5, err_msg=user)


def test_an_updater_killed_mid_batch_leaves_no_user_stale(redis_client, start_updater,
                                                          tmp_path):
    rng = np.random.default_rng(3)
    item_ids = np.arange(100, 400)
    publish(redis_client, item_ids, rng.standard_normal((300, 16)) * 0.2)
    views = _backlog(redis_client, 8000, item_ids, seed=4)
    users = list(views)
    args = ("--batch-size", "200", "--lease-seconds", "1.5")
    for _attempt in range(5):
        proc = start_updater(f"killed-{_attempt}", *args)
        wait_for(lambda: redis_client.zcard(KEYS.claims(LANG)) > 0, 30, "a claimed batch",
                 interval=0.002)
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait()
        held = [m.decode() for m in redis_client.zrange(KEYS.claims(LANG), 0, -1)]
        if held:
            break
    assert held, "the updater was never killed while holding a batch"
    assert redis_client.zcard(KEYS.dirty(LANG)) > 0
    # New views for some of the users the dead updater held, while nobody runs.
    add_views(redis_client, {u: {int(item_ids[0]): 5} for u in held[:20]})
    # Two updaters take over (several may run at once; the leases split the work).
    procs = [start_updater(f"restarted-{i}", *args) for i in (1, 2)]
    wait_for(lambda: redis_client.zcard(KEYS.dirty(LANG)) == 0, 90, "an empty backlog")
    assert stop_processes(*procs, sig=signal.SIGINT) == [0, 0]  # Ctrl-C: a clean stop
    logs = [(tmp_path / f"restarted-{i}.log").read_text() for i in (1, 2)]
    assert all("lease lost" not in text for text in logs)
    assert redis_client.zcard(KEYS.claims(LANG)) == 0
    _assert_everyone_current(redis_client, users)


def test_the_updater_rides_out_a_redis_restart(redis_server, start_updater):
    client = redis_server.client()
    item_ids = np.arange(1, 201)
    publish(client, item_ids, np.random.default_rng(12).standard_normal((200, 8)))
    views = _backlog(client, 3000, item_ids, seed=13)
    client.close()
    proc = start_updater("outage", "--batch-size", "100", "--lease-seconds", "1")
    probe = redis_server.client()
    wait_for(lambda: probe.scard(KEYS.published_users(LANG)) > 0, 30, "a first batch")
    probe.close()
    redis_server.restart()  # SIGKILL and start again on its AOF: the updater loses Redis
    client = redis_server.client()
    add_views(client, {"after-restart": {1: 2}})
    wait_for(lambda: client.zcard(KEYS.dirty(LANG)) == 0, 60, "an empty backlog")
    assert stop_processes(proc) == [0]
    _assert_everyone_current(client, [*views, "after-restart"])
    client.close()


def test_a_retrain_during_updates_leaves_every_user_on_the_new_model(
        redis_server, redis_client, start_updater):
    rng = np.random.default_rng(5)
    item_ids = np.arange(1000, 1200)
    publish(redis_client, item_ids, rng.standard_normal((200, 12)) * 0.3)
    views = _backlog(redis_client, 3000, item_ids, seed=6)
    users = list(views)
    proc = start_updater("retrain", "--batch-size", "100")
    stop_writing = threading.Event()
    writer_client = redis_server.client()

    def keep_viewing() -> None:
        # A steady trickle of new views for random users, through the consumer's write path.
        local = np.random.default_rng(7)
        while not stop_writing.wait(0.01):
            batch = {users[j]: {int(local.choice(item_ids)): 1}
                     for j in local.choice(len(users), size=20, replace=False)}
            add_views(writer_client, batch)

    writer = threading.Thread(target=keep_viewing)
    writer.start()
    try:
        wait_for(lambda: redis_client.scard(KEYS.published_users(LANG)) > 500, 30,
                 "the updater at work")
        # The trainer's protocol (trainer/pipeline/retrain.py): read seq, note who is pending,
        # read the counts, train, write every user's lists, switch, hand newer views back.
        seq = int(redis_client.get(KEYS.seq(LANG)))
        pending = sorted({m.decode() for key in (KEYS.dirty(LANG), KEYS.claims(LANG))
                          for m in redis_client.zrange(key, 0, -1)})
        new_items = rng.standard_normal((200, 12)).astype(np.float32) * 0.3
        trained = PublishedALS(item_ids, new_items, REG, ALPHA, "log")
        raw = read_views(redis_client, KEYS, LANG, users)
        counts = trained.views_matrix([{int(k): int(v) for k, v in h.items()} for h in raw])
        user_factors = trained.fold_in(counts)
        members, scores = trained.recommend(user_factors, counts, 20)
        publisher = Publisher(redis_client, KEYS, LANG, entries_per_call=200,
                              calls_per_round_trip=2,
                              # Slow per-user writes: the updater keeps writing with the old
                              # model meanwhile, the race the hand-over must cover.
                              after_chunk=lambda *_: time.sleep(0.01))
        publish(redis_client, item_ids, new_items, publisher=publisher,
                users=Lists(users, members, scores, user_factors))
        requeue_touched(redis_client, KEYS, LANG, seq, pending=pending)
        time.sleep(0.5)
    finally:
        stop_writing.set()
        writer.join()
        writer_client.close()
    wait_for(lambda: redis_client.zcard(KEYS.dirty(LANG)) == 0, 60, "an empty backlog")
    assert stop_processes(proc) == [0]
    assert current_foldin(redis_client).version == publisher.version
    _assert_everyone_current(redis_client, users)


def test_sigterm_finishes_the_batch_and_exits_zero(redis_client, start_updater, tmp_path):
    publish(redis_client, np.arange(1, 101), np.random.default_rng(8).standard_normal((100, 8)))
    _backlog(redis_client, 8000, np.arange(1, 101), seed=9)
    proc = start_updater("sigterm", "--batch-size", "50")
    wait_for(lambda: redis_client.scard(KEYS.published_users(LANG)) > 0, 30, "a first batch")
    assert stop_processes(proc) == [0]
    # Whatever it had claimed was written and released: no lease left behind.
    assert redis_client.zcard(KEYS.claims(LANG)) == 0
    assert redis_client.zcard(KEYS.dirty(LANG)) > 0  # it stopped, it did not drain
    # A second signal does not wait for the batch (a big one here, to be caught in it).
    proc = start_updater("twice", "--batch-size", "5000")
    wait_for(lambda: redis_client.zcard(KEYS.claims(LANG)) > 0, 30, "a claimed batch",
             interval=0.002)
    proc.send_signal(signal.SIGTERM)
    log = tmp_path / "twice.log"
    wait_for(lambda: "stopping after the current batch" in log.read_text(), 10,
             "the first signal handled", interval=0.002)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 128 + signal.SIGTERM
    assert redis_client.zcard(KEYS.claims(LANG)) > 0  # left to expire, as after a crash


def test_bad_flags_are_one_line_errors():
    proc = subprocess.run([sys.executable, "-m", "recs.cli", "update", "--batch-size", "0",
                           "--metrics-port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--batch-size: '0': must be at least 1" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- the whole pipeline: recs consume -> recs train -> recs update ------------------------


def test_through_the_consumer_and_the_trainer(redis_client, broker, topics, consume_env,
                                             start_recs, tmp_path):
    """Views produced to Kafka reach recommendations through the real commands, and a retrain
    under a stream of views leaves every user on the new model."""
    from consumers.produce import events_from_views, produce_events
    from trainer.models.file import load_model

    data, _, _ = planted()
    topic, _ = topics
    history = data.views_for(LANG)
    start_recs(["consume"], consume_env)
    produce_events(broker.bootstrap, topic, events_from_views(history, LANG))
    total = int(history["views"].sum())
    wait_for(lambda: sum(int(v) for v in redis_client.hvals(KEYS.item_views(LANG))) == total,
             60, "the consumer to apply the history")
    train = [sys.executable, "-m", "recs.cli", "train", "--lang", LANG, "--factors", "8",
             "--iterations", "15", "--alpha", str(ALPHA), "--regularization", str(REG),
             "--min-item-views", "0", "--max-item-views", "0", "--min-user-views", "0",
             "--threads", "1", "--model-dir", str(tmp_path / "models")]
    subprocess.run(train, env=consume_env, check=True, capture_output=True, timeout=120)
    first_version = redis_client.hget(KEYS.model(LANG), "version")
    updater_proc = start_recs(["update", "--poll-interval", "0.02", "--batch-size", "100"],
                              consume_env)
    updater_proc.wait_for_log("updater started")

    # A brand-new learner opens three Spanish vocabulary resources...
    subjects = data.subject_of(LANG)
    subject = subjects.unique()[0]
    picks = subject_resources(data, subject)[:3]
    produce_events(broker.bootstrap, topic, [
        {"user_id": "newcomer", "resource_id": r, "lang": LANG} for r in picks])
    wait_for(lambda: len(stored_recs(redis_client, "newcomer")) == 20, 30, "newcomer's recs")
    top = stored_recs(redis_client, "newcomer")[:10]
    assert sum(subjects[r] == subject for r in top) >= 8
    assert not set(top) & set(picks)

    # ...then existing users keep viewing while the model is retrained and published.
    users = history["user_id"].unique().tolist()
    rng = np.random.default_rng(11)
    items = subjects.index.to_numpy()

    def stream(n: int):
        for _ in range(n):
            yield {"user_id": users[rng.integers(len(users))],
                   "resource_id": int(rng.choice(items)), "lang": LANG}

    produced = total + len(picks)  # every view sent so far; each counts exactly once
    produce_events(broker.bootstrap, topic, stream(300))
    produced += 300
    retrain = subprocess.Popen(train, env=consume_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    while retrain.poll() is None:
        produce_events(broker.bootstrap, topic, stream(50))
        produced += 50
    assert retrain.returncode == 0
    produce_events(broker.bootstrap, topic, stream(200))
    produced += 200
    wait_for(lambda: sum(int(v) for v in redis_client.hvals(KEYS.item_views(LANG))) == produced,
             30, "every view to be counted")
    wait_for(lambda: redis_client.zcard(KEYS.dirty(LANG)) == 0, 60, "an empty backlog")
    updater_proc.send(signal.SIGTERM)
    assert updater_proc.wait(20) == 0
    assert redis_client.hget(KEYS.model(LANG), "version") != first_version

    # Every user's factors come from the new model: either the trainer's own (users without
    # views since it read the counts) or the fold-in of their current counts.
    trained = load_model(next((tmp_path / "models").glob("*.dump")))
    published = sorted(m.decode() for m in redis_client.smembers(KEYS.published_users(LANG)))
    assert len(published) == len(users) + 1
    folded = expected_factors(redis_client, published)
    by_trainer = 0
    for i, user in enumerate(published):
        got = stored_factors(redis_client, user)
        if user in trained.users and np.array_equal(
                got, trained.user_factors[trained.users.number(user)]):
            by_trainer += 1
            continue
        np.testing.assert_allclose(got, folded[i], rtol=1e-4, atol=1e-5, err_msg=user)
    assert 0 < by_trainer < len(published)
