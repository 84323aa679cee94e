"""``recs update`` on a real Redis Cluster (tests/redis_cluster.py, docs/CLUSTER.md): users
queued in several slot groups are claimed per group and committed per group, against the
group's copy of the model version and of the take-downs; the same data on one Redis gives
the same factors and lists.

The model and the take-downs are written here the way the publisher and hide write them on
a cluster (the item side, then the same hash or field in every group's copy), and views the
way the consumer leaves them (the user's views hash, the user in its group's ``dirty``), so
the test needs only the updater's own code."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.config import UpdaterConfig
from consumers.updater import Updater
from store.cluster_keys import layout
from store.connection import connect
from store.keys import Keys
from store.updates import BatchWrite, UpdateQueue

pytestmark = pytest.mark.integration

LANG = "en"
ITEMS = np.arange(101, 141, dtype=np.uint32)
USERS = [f"learner-{i}" for i in range(16)]


def write_model(client, keys: Keys, version: str, seed: int = 3) -> None:
    """A live ALS model: the item side in one MULTI, then the model hash copied into every
    slot group (on one Redis the group's copy is the model hash itself)."""
    factors = np.random.default_rng(seed).normal(size=(ITEMS.size, 4)).astype("<f4")
    meta = {"version": version, "model": "als", "factors": 4, "regularization": 0.05,
            "alpha": 20.0, "scaling": "log", "items": ITEMS.size,
            "trained_at": "2025-01-01T00:00:00Z"}
    pipe = client.pipeline(transaction=True)
    pipe.delete(keys.model(LANG))
    pipe.hset(keys.model(LANG), mapping=meta)
    pipe.set(keys.item_factors(LANG), factors.tobytes())
    pipe.set(keys.item_ids(LANG), ITEMS.astype("<u4").tobytes())
    pipe.execute()
    for group in keys.slot_groups():
        if group.group_model(LANG) != keys.model(LANG):
            client.delete(group.group_model(LANG))
            client.hset(group.group_model(LANG), mapping=meta)


def hide(client, keys: Keys, rid: int) -> None:
    """What ``recs hide`` leaves: the field in ``hidden`` and in every group's copy."""
    client.hset(keys.hidden(LANG), str(rid), "test")
    for group in keys.slot_groups():
        client.hset(group.group_hidden(LANG), str(rid), "test")


def add_views(client, keys: Keys, score: int) -> None:
    """Each user viewed three resources (a different mix each); queued in its group."""
    for i, user in enumerate(USERS):
        client.hset(keys.views(LANG, user), mapping={
            str(int(ITEMS[(3 * i + j * 7) % ITEMS.size])): 1 + j for j in range(3)})
        client.zadd(keys.for_user(user).dirty(LANG), {user: score})


def updater(client, **overrides) -> Updater:
    config = UpdaterConfig(langs=(LANG,), batch_size=4, top_n=5, metrics_port=0,
                           **overrides)
    return Updater(client, config)


def lists(client, keys: Keys) -> dict[str, list[tuple[int, float]]]:
    return {u: [(int(m), round(s, 4)) for m, s in
                client.zrevrange(keys.recs(LANG, u), 0, -1, withscores=True)] for u in USERS}


def pending(client, keys: Keys) -> int:
    return sum(client.zcard(g.dirty(LANG)) for g in keys.slot_groups())


@pytest.fixture
def both(cluster, redis_server):
    """(cluster client, its keys, one-Redis client, its keys)."""
    on_cluster, single = connect(cluster.url), connect(redis_server.url)
    yield on_cluster, layout(on_cluster), single, layout(single)
    on_cluster.close()
    single.close()


def test_users_of_several_groups_are_folded_in_per_group_as_on_one_redis(both):
    cl, ck, one, ok = both
    assert ck.cluster and not ok.cluster
    groups = {ck.group_of(u) for u in USERS}
    assert len(groups) >= 8  # the users' keys are spread over many slot groups
    for client, keys in ((cl, ck), (one, ok)):
        write_model(client, keys, "v1")
        add_views(client, keys, score=1)
    assert updater(cl).drain() == len(USERS)
    assert updater(one).drain() == len(USERS)
    assert pending(cl, ck) == 0
    got, want = lists(cl, ck), lists(one, ok)
    assert all(len(v) == 5 for v in got.values())
    assert got == want
    for user in USERS:
        assert cl.get(ck.factors(LANG, user)) == one.get(ok.factors(LANG, user))
        assert cl.sismember(ck.for_user(user).published_users(LANG), user)
        assert not cl.zscore(ck.for_user(user).claims(LANG), user)


def test_a_hidden_resource_never_enters_a_committed_list(both):
    cl, ck, _, _ = both
    write_model(cl, ck, "v1")
    add_views(cl, ck, score=1)
    updater(cl).drain()
    shown = [r for v in lists(cl, ck).values() for r, _ in v]
    top = max(set(shown), key=shown.count)  # in the most lists
    hide(cl, ck, top)
    add_views(cl, ck, score=2)  # new views: every user is solved again
    assert updater(cl).drain() == len(USERS)
    after = lists(cl, ck)
    assert all(len(v) == 5 for v in after.values())  # the spare candidates fill in
    assert top not in {r for v in after.values() for r, _ in v}


def test_a_commit_against_a_group_on_another_model_version_is_refused(both):
    cl, ck, _, _ = both
    write_model(cl, ck, "v1")
    add_views(cl, ck, score=1)
    user = USERS[0]
    group = ck.for_user(user)
    others = [u for u in USERS if ck.group_of(u) != ck.group_of(user)]
    # The publisher switched the item side and has not copied the hash into this group yet.
    cl.hset(group.group_model(LANG), "version", "v0")
    queue = UpdateQueue(cl, ck)
    claim = queue.claim(LANG, 10, 30_000, group)
    assert user in claim.users and all(ck.group_of(u) == group.group for u in claim.users)
    n = len(claim.users)
    batch = BatchWrite(np.ones((n, 4), "<f4"), np.ones(n, bool),
                       np.tile(ITEMS[:5].astype(np.int64), (n, 1)), np.ones((n, 5), "<f4"))
    assert queue.commit(claim, "v1", batch, top_n=5).stale
    assert cl.get(ck.factors(LANG, user)) is None and not cl.exists(ck.recs(LANG, user))
    assert cl.zscore(group.dirty(LANG), user) == 1  # still pending, lease given back
    assert cl.zcard(group.claims(LANG)) == 0
    # The updater writes every other group and leaves this one's users pending.
    run = updater(cl)
    for _ in range(len(USERS) * 2):
        run.run_once()
    assert all(cl.exists(ck.recs(LANG, u)) for u in others)
    assert not cl.exists(ck.recs(LANG, user))
    assert pending(cl, ck) == len(claim.users)
    # Once the copy says v1 too, they are written.
    cl.hset(group.group_model(LANG), "version", "v1")
    assert run.drain() == len(claim.users)
    assert cl.exists(ck.recs(LANG, user)) and pending(cl, ck) == 0


def test_the_backlog_gauge_sums_every_group(both):
    cl, ck, _, _ = both
    write_model(cl, ck, "v1")
    add_views(cl, ck, score=1)
    assert updater(cl).refresh_pending(force=True) == {LANG: len(USERS)}


def test_the_recs_update_command_folds_in_and_refreshes_trending_on_a_cluster(
        cluster, start_recs):
    import os

    from recs.localstack_process import wait_until

    client = connect(cluster.url)
    keys = layout(client)
    write_model(client, keys, "v1")
    client.sadd(keys.langs, LANG)
    add_views(client, keys, score=1)
    client.hset(keys.item_views(LANG), mapping={str(int(r)): 5 for r in ITEMS})
    hide(client, keys, int(ITEMS[-1]))  # the most viewed below: never trending
    env = {**os.environ, "RECS_REDIS_URL": cluster.url}
    proc = start_recs(["update", "--metrics-port", "0", "--trending-every", "1",
                       "--top-n", "5"], env)
    try:
        # The first refresh takes the totals as its baseline; views since then trend.
        wait_until(lambda: proc.check_alive("folding in") or pending(client, keys) == 0
                   and client.exists(keys.trending_state(LANG)), 30, "users written")
        for i, r in enumerate(ITEMS):
            client.hincrby(keys.item_views(LANG), str(int(r)), 1 + i)
        wait_until(lambda: proc.check_alive("trending") or client.zcard(keys.trending(LANG)),
                   30, "a trending list")
        assert all(client.zcard(keys.recs(LANG, u)) == 5 for u in USERS)
        trending = [int(m) for m in client.zrevrange(keys.trending(LANG), 0, -1)]
        assert trending[0] == int(ITEMS[-2]) and int(ITEMS[-1]) not in trending
    finally:
        code = proc.stop()
        client.close()
    assert code == 0
