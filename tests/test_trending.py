"""The trending fallback list against a real redis-server: what was viewed since the last
refresh, decayed by the half-life, hidden and too-popular resources left out, forgets and
Redis rollbacks never counted twice; ``RecsClient.for_user`` picks the user's own list or
the trending one in one script; ``recs update`` and ``recs trending`` refresh it."""

from __future__ import annotations

import threading
import time

import pytest

from consumers.updater import Updater, UpdaterConfig
from recs.cli import main
from store.client import RecsClient
from store.control import Control
from store.control_op import ControlOp
from store.counts import Counts
from store.keys import Keys
from store.trending import Trending, TrendingConfig

pytestmark = pytest.mark.integration

KEYS = Keys()


def views(client, batch: dict[str, dict[int, int]], lang: str = "en") -> None:
    assert Counts(client, KEYS).apply(KEYS.offsets("t", "v"), [], {lang: batch}) == {}


def listed(client, lang: str = "en") -> list[tuple[int, float]]:
    return [(int(m), s) for m, s in client.zrevrange(KEYS.trending(lang), 0, -1,
                                                       withscores=True)]


def trending(client, **config) -> Trending:
    return Trending(client, KEYS, TrendingConfig(**{"half_life": 3600.0, **config}))


def test_the_list_is_what_was_viewed_since_hidden_and_too_popular_left_out(r):
    t = trending(r, max_item_views=1000)
    views(r, {"old": {1: 500, 2: 5}})
    assert t.refresh("en", min_interval=0) == (True, 0, 0)  # the first refresh only records
    views(r, {"a": {1: 4, 2: 1, 3: 2}, "b": {3: 5, 4: 1, 5: 600}})
    Control(r, KEYS).run([ControlOp("hide", "4", "en")])
    t.refresh("en", min_interval=0)
    got = listed(r)
    # 5 reached 600 views in one go but its total (600) is under the cap; 1 (504) too.
    assert [m for m, _ in got] == [5, 3, 1, 2]
    assert [round(s) for _, s in got] == [600, 7, 4, 1]
    views(r, {"c": {5: 500}})  # now over the cap of 1000 all-time views
    t.refresh("en", min_interval=0)
    assert 5 not in [m for m, _ in listed(r)] and 4 not in [m for m, _ in listed(r)]
    # A refresh within min_interval of the previous one does nothing.
    assert t.refresh("en", min_interval=3600)[0] is False


def test_scores_decay_with_the_half_life(r):
    t = trending(r, half_life=0.5)
    t.refresh("en", min_interval=0)
    views(r, {"a": {1: 100}})
    t.refresh("en", min_interval=0)
    first = dict(listed(r))[1]
    assert first == pytest.approx(100, rel=0.05)
    time.sleep(1.0)  # two half-lives at least
    t.refresh("en", min_interval=0)
    later = dict(listed(r))[1]
    assert 0 < later <= first * 0.26


def test_a_forget_leaves_the_scores_and_later_views_count_once(r):
    t = trending(r)
    t.refresh("en", min_interval=0)
    views(r, {"a": {1: 10}, "b": {1: 5}})
    t.refresh("en", min_interval=0)
    assert dict(listed(r))[1] == pytest.approx(15, rel=1e-3)
    Control(r, KEYS).run([ControlOp("forget", "a", "en")])
    t.refresh("en", min_interval=0)  # the total fell by 10: no negative score
    assert dict(listed(r))[1] == pytest.approx(15, rel=1e-3)
    assert r.hget(KEYS.trending_seen("en"), "1") == "5"
    views(r, {"c": {1: 2}})
    t.refresh("en", min_interval=0)
    assert dict(listed(r))[1] == pytest.approx(17, rel=1e-3)


def test_views_replayed_after_a_redis_rollback_are_counted_once(redis_server, redis_client):
    t = trending(redis_client)
    t.refresh("en", min_interval=0)
    views(redis_client, {"a": {1: 3}})
    t.refresh("en", min_interval=0)
    backup = redis_server.snapshot()
    views(redis_client, {"b": {2: 8}})
    t.refresh("en", min_interval=0)
    redis_server.restore(backup)  # the views of "b" and that refresh are lost
    client = redis_server.client()
    t = trending(client)
    views(client, {"b": {2: 8}})  # the consumer replays them
    t.refresh("en", min_interval=0)
    got = {m: round(s) for m, s in listed(client)}
    assert got == {2: 8, 1: 3}
    client.close()


def test_for_user_gives_their_list_else_trending_without_what_they_viewed(r):
    client = RecsClient(r)
    assert client.for_user("en", "nobody", 5) == ([], "none")
    r.zadd(KEYS.trending("en"), {"10": 9.0, "11": 8.0, "12": 7.0, "13": 6.0})
    views(r, {"new": {11: 1}})
    rows, source = client.for_user("en", "new", 2)
    assert source == "trending" and [x.resource_id for x in rows] == [10, 12]
    r.zadd(KEYS.recs("en", "known"), {"20": 2.0, "21": 1.0, "22": 0.5})
    Control(r, KEYS).run([ControlOp("hide", "20", "en"), ControlOp("hide", "12", "en")])
    rows, source = client.for_user("en", "known", 5)
    assert source == "personal" and [x.resource_id for x in rows] == [21, 22]
    rows, source = client.recommend_or_trending("en", "new", 5)
    assert source == "trending" and [x.resource_id for x in rows] == [10, 13]
    assert client.for_user("es", "known", 5) == ([], "none")


def test_recs_update_refreshes_the_list_every_trending_every_seconds(r):
    views(r, {"a": {1: 1}})
    config = UpdaterConfig(trending=TrendingConfig(every=0.1))
    updater = Updater(r, config)
    stop = threading.Event()
    thread = threading.Thread(target=updater.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not r.exists(KEYS.trending_state("en")) and time.monotonic() < deadline:
            time.sleep(0.05)
        views(r, {"b": {2: 3}})
        while not listed(r) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert [m for m, _ in listed(r)] == [2]


def test_recs_trending_refreshes_once(module_redis, r, capsys):
    views(r, {"a": {1: 1}})
    assert main(["trending", "--redis-url", module_redis.url]) == 0
    views(r, {"a": {3: 2}})
    assert main(["trending", "--redis-url", module_redis.url, "--max-item-views", "0"]) == 0
    assert "en: 1 resources trending" in capsys.readouterr().out
    assert [m for m, _ in listed(r)] == [3]


@pytest.mark.parametrize("args", [["--trending-half-life", "0"], ["--trending-size", "0"],
                                  ["--max-item-views", "-1"], ["--lang", "EN"]])
def test_bad_trending_options_are_refused(args, capsys):
    assert main(["trending", *args]) == 2
    assert "error" in capsys.readouterr().err
