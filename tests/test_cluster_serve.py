"""The readers on a real Redis Cluster (tests/redis_cluster.py, docs/CLUSTER.md): the Python
client (store/client.py) and a real ``recs serve`` over HTTP answer the same as on one Redis
for the same data, and serve rides a primary's SIGKILL (503 while its slots have no primary,
then the same answers from the promoted replica).

The data are written here with each layout's key names (``store.cluster_keys.layout``), as the
publisher, the updater and hide leave them; the cluster's per-group copies of the model hash
and of ``hidden`` included."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from recs.serve_base import ServeConfig
from store.aclient import AsyncRecsClient
from store.aconnect import connect_async
from store.client import RecsClient
from store.cluster_keys import layout
from store.connection import connect
from store.keys import Keys
from store.read import encode_details
from tests.test_cluster_update import LANG, hide, write_model
from tests.test_serve import call

pytestmark = pytest.mark.integration

TOKEN = "cluster-serve-token"
OWN = "learner/with list"          # a personal list (one entry hidden since)
NEW = "learner-new ü"              # no list: trending without what they viewed
NOBODY = "nobody-at-all"
SIMILAR_TO = 101


def write_data(client, keys: Keys) -> None:
    """A published model, lists, trending, details and take-downs, in ``keys``' layout."""
    write_model(client, keys, "v7")
    client.sadd(keys.langs, LANG)
    client.zadd(keys.recs(LANG, OWN), {str(r): 1.0 - r / 1000 for r in range(110, 120)})
    client.set(keys.factors(LANG, OWN), b"\0" * 16)
    client.sadd(keys.for_user(OWN).published_users(LANG), OWN)
    client.zadd(keys.similar(LANG, SIMILAR_TO), {str(r): 0.9 - r / 1000 for r in range(120, 135)})
    client.zadd(keys.trending(LANG), {str(r): 50.0 - r / 10 for r in range(101, 131)})
    client.hset(keys.views(LANG, NEW), mapping={"101": 2, "103": 1})
    client.hset(keys.views(LANG, OWN), mapping={"101": 3, "105": 1})
    client.hset(keys.resources(LANG), mapping={
        str(r): encode_details({"title": f"Resource {r}", "folder": "f", "subject": "s",
                                "tags": "t"}) for r in range(101, 141) if r != 112})
    client.hset(keys.item_views(LANG), mapping={"101": 40, "102": 9})
    hide(client, keys, 111)  # in the personal list
    hide(client, keys, 102)  # in trending


@pytest.fixture
def stores(cluster, redis_server):
    """The same data on the session's cluster and on one Redis: their URLs."""
    for url in (cluster.url, redis_server.url):
        client = connect(url)
        write_data(client, layout(client))
        client.close()
    return cluster.url, redis_server.url


def reads(client: RecsClient) -> dict:
    out = {}
    for user in (OWN, NEW, NOBODY):
        out[f"for_user {user}"] = client.for_user(LANG, user, 5)
        out[f"tagged {user}"] = client.for_user_tagged(LANG, user, 5)
        out[f"recommend {user}"] = client.recommend(LANG, user, 5)
        out[f"knows {user}"] = client.knows_user(LANG, user)
    out["similar"] = client.similar(LANG, SIMILAR_TO, 5)
    out["model"] = client.model_info(LANG)
    out["details"] = client.details(LANG, [101, 112, 125])
    out["trending"] = client.trending(LANG, 3)
    return out


def test_the_client_reads_the_same_on_a_cluster_as_on_one_redis(stores):
    on_cluster, single = (RecsClient(url) for url in stores)
    assert on_cluster.keys.cluster and not single.keys.cluster
    got, want = reads(on_cluster), reads(single)
    on_cluster.close()
    single.close()
    assert got == want
    rows, source = got[f"for_user {OWN}"]
    assert source == "personal" and [r for r, _ in rows] == [110, 112, 113, 114, 115]
    rows, source = got[f"for_user {NEW}"]
    assert source == "trending" and [r for r, _ in rows] == [104, 105, 106, 107, 108]
    assert got[f"tagged {OWN}"][2].model_version == "v7"
    assert got[f"tagged {NEW}"][2].model_version == ""
    assert got[f"for_user {NOBODY}"][1] == "trending"


def test_the_tag_is_the_version_read_with_the_list(cluster):
    """On a cluster a user's list is tagged with its group's copy of the model version (the
    copy the updater's commit compares): read in the same script as the list."""
    client = connect(cluster.url)
    keys = layout(client)
    write_data(client, keys)
    client.hset(keys.for_user(OWN).group_model(LANG), "version", "v6")
    reader = RecsClient(client)
    assert reader.for_user_tagged(LANG, OWN, 3)[2].model_version == "v6"
    reader.close()


PATHS = [f"/v1/{LANG}/users/{OWN.replace('/', '%2F').replace(' ', '%20')}/recommendations?n=5",
         f"/v1/{LANG}/users/learner-new%20%C3%BC/recommendations?n=4",
         f"/v1/{LANG}/users/{NOBODY}/recommendations",
         f"/v1/{LANG}/users/{NOBODY}/recommendations?n=0",
         f"/v1/{LANG}/resources/{SIMILAR_TO}/similar?n=5",
         f"/v1/{LANG}/resources/999/similar",
         "/v1/xx/users/u/recommendations",
         f"/v1/{LANG}/users/{OWN.replace('/', '%2F').replace(' ', '%20')}/explain?n=3"]


def answers(base: str) -> dict:
    out = {}
    for path in PATHS:
        got = call(base, path, token=TOKEN)
        out[path] = (got.status, got.json)
    model = call(base, f"/v1/{LANG}/model", token=TOKEN)
    out["model"] = (model.status, {k: v for k, v in model.json.items() if k != "age_seconds"})
    health = call(base, "/healthz")
    body = health.json
    for m in body.get("models", {}).values():
        m.pop("age_seconds", None)
    out["health"] = (health.status, body)
    return out


def test_serve_answers_the_same_json_on_a_cluster(stores, serve_http):
    on_cluster, single = (serve_http(ServeConfig(redis_url=url, token=TOKEN)) for url in stores)
    got, want = answers(on_cluster), answers(single)
    assert got == want
    status, body = got[PATHS[0]]
    assert status == 200 and body["source"] == "personal" and body["model_version"] == "v7"
    assert [i["resource_id"] for i in body["items"]] == [110, 112, 113, 114, 115]
    assert "title" not in body["items"][1] and body["items"][0]["title"] == "Resource 110"
    assert got[PATHS[1]][1]["source"] == "trending"
    assert any(i["because"] for i in got[PATHS[-1]][1]["items"])  # the item side was read
    assert got["health"] == (200, {"status": "ok", "redis": "ok", "models": {
        LANG: {"version": "v7", "trained_at": "2025-01-01T00:00:00Z"}}})
    # The operator page and the metrics work (no experiment: no readout, no note).
    page = call(on_cluster, "/", token=TOKEN)
    assert page.status == 200 and b"Experiments do not run" not in page.body
    assert b"updater backlog" in page.body
    assert call(on_cluster, "/metrics", token=TOKEN).status == 200


def test_serve_rides_a_failover_of_the_users_primary(fresh_cluster, serve_http):
    client = connect(fresh_cluster.url)
    keys = layout(client)
    write_data(client, keys)
    owner = client.get_node_from_key(keys.recs(LANG, OWN)).port
    for node in fresh_cluster.primaries():
        node.client().wait(1, 5000)  # the replicas hold the data before the kill
    client.close()
    base = serve_http(ServeConfig(redis_url=fresh_cluster.url, redis_timeout=1.0))
    path = PATHS[0]
    before = call(base, path)
    assert before.status == 200
    victim = next(n for n in fresh_cluster.nodes if n.port == owner)
    os.kill(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(10)
    statuses = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        got = call(base, path)
        statuses.append(got.status)
        if got.status == 200 and 503 in statuses:
            break
        assert got.status in (200, 503), got.body
        time.sleep(0.1)
    assert 503 in statuses  # while the slot had no primary
    assert statuses[-1] == 200 and got.json == before.json  # the promoted replica answers
    assert call(base, "/healthz").status == 200


def test_recs_similar_and_recommend_print_the_same_from_a_cluster(stores, capsys):
    from recs.cli import main

    printed = []
    for url in stores:
        out = []
        for argv in (["similar", str(SIMILAR_TO)], ["recommend", OWN], ["recommend", NOBODY]):
            code = main([*argv, "--lang", LANG, "--redis-url", url, "-n", "3"])
            out.append((code, capsys.readouterr()))
        printed.append(out)
    assert printed[0] == printed[1]
    (similar, _), (own, _), (nobody, _) = printed[0]
    assert similar == 0 and own == 0 and "Resource 110" in printed[0][1][1].out
    assert nobody == 2 and "unknown user" in printed[0][2][1].err


def test_a_full_pool_waits_for_a_connection_and_offsets_are_the_restart_point(cluster):
    """connect_async on a cluster: with one connection per node, 30 look-ups at once all
    answer (each waits for the connection instead of failing: load, not an outage); the
    consumer's applied offset per partition is the minimum over every progress stream."""
    client = connect(cluster.url)
    keys = layout(client)
    write_data(client, keys)
    groups = keys.slot_groups()
    client.hset(keys.item_offsets(LANG, "g", "views"), mapping={"0": 90, "1": 40})
    client.hset(groups[3].group_offsets(LANG, "g", "views"), mapping={"0": 70})
    client.hset(groups[40].group_offsets(LANG, "g", "views"), mapping={"0": 80, "1": 55})
    client.close()

    async def run():
        reader = AsyncRecsClient(connect_async(cluster.url, connections=1, wait=10))
        try:
            found = await asyncio.gather(*(reader.recommend(LANG, user, 3)
                                           for user in (OWN, NEW, NOBODY) * 10))
            return found, await reader.offsets("g", "views"), await reader.status(LANG)
        finally:
            await reader.redis.aclose()

    found, offsets, status = asyncio.run(run())
    assert [f.source for f in found[:3]] == ["personal", "trending", "trending"]
    assert offsets == {0: 70, 1: 40}
    assert status.backlog == 0 and status.idle_seconds is not None and status.resources == 39
