"""Redis behind Sentinel (``redis+sentinel://``, docs/CONTRACT.md): real servers on loopback
(tests/sentinel.py: a primary, a replica, three redis-sentinels), ``recs consume`` reading
the session's Kafka broker while the primary is SIGKILLed and the Sentinels promote a
replica that lost the primary's latest writes, and ``recs serve`` reading through the
Sentinels across a failover. Counts must end exact: the lost writes took their offsets with
them, and the consumer's guarded script and idle check replay from what the new primary
holds (the rollback handling of consumers/replay.py, unchanged)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlparse

import pytest

from core.redis_urls import SentinelTarget, special
from recs.cli import main
from recs.localstack_process import wait_until
from recs.serve import ServeConfig
from store.client import RecsClient
from store.keys import Keys
from tests.conftest import recs_env
from tests.helpers import publish_views
from tests.sentinel import PASSWORD
from tests.test_consume import Stream, make_events, stop_cleanly, total_views
from trainer.config import AlsConfig, FilterConfig, ModelSpec
from trainer.data.synth import generate
from trainer.settings import RetrainConfig

pytestmark = pytest.mark.integration

KEYS = Keys()


def _offsets(client, env) -> dict[str, str]:
    return client.hgetall(KEYS.offsets(env["RECS_GROUP"], env["RECS_TOPIC"]))


def test_failover_to_a_replica_that_lost_writes_keeps_the_counts_exact(
        sentinel_redis, broker, topics, start_recs):
    topic, dlq = topics
    env = recs_env(sentinel_redis.url, broker.bootstrap, topic, dlq)
    stream = Stream(env, sentinel_redis)
    stream.send(make_events(4000, seed=41, users=300, items=100))
    primary = sentinel_redis.primary.client(password=PASSWORD, decode_responses=True)
    replica = sentinel_redis.replica_client(decode_responses=True)
    proc = start_recs(["consume"], {**env, "RECS_BATCH_SIZE": "100"})
    wait_until(lambda: total_views(primary) > 1000, 60, "some views written")

    # Replication frozen, then more views written: the primary acknowledges batches (and
    # their offsets) that the replica will never see.
    sentinel_redis.relay.freeze()
    frozen_at = _offsets(primary, env)
    stream.send(make_events(2000, seed=42, users=300, items=100))
    wait_until(lambda: _offsets(primary, env) != frozen_at, 60, "batches past the freeze")
    lost = _offsets(primary, env)
    sentinel_redis.kill_primary()
    assert _offsets(replica, env) != lost  # the replica to be promoted lacks those writes

    sentinel_redis.wait_promoted()
    stream.send(make_events(2000, seed=43, users=300, items=100))
    stream.wait_converged(timeout=120)
    proc.wait_for_log("offsets in Redis differ from ours")  # the rollback was seen and replayed
    proc.check_alive("after the failover")
    assert PASSWORD not in proc.log_path.read_text()
    stop_cleanly(proc)


def _get(base: str, path: str) -> tuple[int, dict]:
    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return reply.status, json.loads(reply.read() or b"{}")
    finally:
        conn.close()


def test_serve_and_the_cli_read_through_the_sentinels_across_a_failover(
        sentinel_redis, serve_http, tmp_path, capsys):
    client = sentinel_redis.client()
    data = generate(n_users=300, n_resources=60, langs=("en",), seed=7)
    settings = RetrainConfig(
        filters=FilterConfig(min_item_views=3, max_item_views=0, min_user_views=2),
        spec=ModelSpec(als=AlsConfig(factors=4, iterations=3)), top_n=5,
        model_dir=str(tmp_path / "models"))
    publish_views(client, data.views_for("en"), "en", settings)
    rid = int(sorted(client.smembers(KEYS.published_items("en")))[0])
    assert client.wait(1, 10_000) == 1  # the replica holds the model before the primary dies
    expected = [s.resource_id for s in RecsClient(sentinel_redis.url).similar("en", rid, 5)]
    assert expected

    base = serve_http(ServeConfig(redis_url=sentinel_redis.url))
    path = f"/v1/en/resources/{rid}/similar?n=5"
    status, body = _get(base, path)
    assert status == 200 and [i["resource_id"] for i in body["items"]] == expected

    sentinel_redis.kill_primary()
    sentinel_redis.wait_promoted()
    # The pooled connections went to the dead primary: a read after the failover reconnects
    # through the Sentinels (a 503 is allowed only while the failover lasts).
    status, body = wait_until(lambda: (r := _get(base, path))[0] == 200 and r, 60,
                              "serve answering from the new primary")
    assert [i["resource_id"] for i in body["items"]] == expected
    capsys.readouterr()
    assert main(["similar", str(rid), "--lang", "en", "-n", "5", "--json",
                 "--redis-url", sentinel_redis.url]) == 0
    out = capsys.readouterr().out
    assert [i["resource_id"] for i in json.loads(out)] == expected


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_credentials():
    target = special("redis+sentinel://recs:p%40ss@s1:26380,s2,[::1]:5/recs-primary?db=3"
                     "&sentinel_auth=yes")
    assert isinstance(target, SentinelTarget)
    assert target.sentinels == (("s1", 26380), ("s2", 26379), ("::1", 5))
    assert (target.service, target.db, target.username, target.password,
            target.sentinel_auth) == ("recs-primary", 3, "recs", "p@ss", True)
    assert "p@ss" not in repr(target)
    assert special("redis://h:1/0") is None


@pytest.mark.parametrize("url", [
    f"redis+sentinel://:{PASSWORD}@h:1",                  # no service name
    f"redis+sentinel://:{PASSWORD}@h:1/a/b",              # not one name
    f"redis+sentinel://:{PASSWORD}@h:99999/svc",          # not a port
    f"redis+sentinel://:{PASSWORD}@h:1,/svc",             # an empty host
    f"redis+sentinel://:{PASSWORD}@h:1/svc?db=x",         # not a database number
    f"redis+sentinel://:{PASSWORD}@h:1/svc?password=x",   # an unknown setting
    f"redis+sentinel://:{PASSWORD}@h:1/svc#frag",
])
def test_a_bad_sentinel_url_is_one_line_and_exit_2(url, capsys):
    assert main(["similar", "5", "--lang", "en", "--redis-url", url]) == 2
    err = capsys.readouterr().err
    assert "--redis-url" in err and PASSWORD not in err
    assert [line for line in err.splitlines() if "error:" in line][0].count("\n") == 0


def test_no_sentinel_answering_is_one_masked_line(capsys):
    from recs.localstack_process import free_port

    url = f"redis+sentinel://:{PASSWORD}@127.0.0.1:{free_port()}/svc"
    assert main(["hidden", "--lang", "en", "--redis-url", url]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and PASSWORD not in err
    assert "no Sentinel of 127.0.0.1" in err and "'svc'" in err
