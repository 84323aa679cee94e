"""The loopback Redis Cluster harness (tests/redis_cluster.py) and ``redis+cluster://``:
the URL is parsed and reaches a real cluster through redis-py's RedisCluster; every
``recs`` command that reaches Redis runs on it (``CLUSTER_COMMANDS``), and one left off
that list refuses it with one line (exit 2) instead of failing later with CROSSSLOT
(docs/CLUSTER.md)."""

from __future__ import annotations

import shutil

import pytest
import redis

from core import redis_urls
from core.redis_urls import CLUSTER_COMMANDS, ClusterTarget, special
from recs.cli import build_parser, main
from store.connection import connect_cluster
from tests.redis_cluster import BUS_OFFSET, RedisCluster
from tests.test_compose import _subcommands

pytestmark = pytest.mark.integration

SECRET = "cluster-Pa55word"
URL = f"redis+cluster://:{SECRET}@127.0.0.1:7000,127.0.0.1:7001"


@pytest.fixture
def redis_cluster(tmp_path):
    if not shutil.which("redis-cli"):
        pytest.skip("needs Debian's redis-tools (redis-cli; .ci/run installs it)")
    cluster = RedisCluster(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()


def test_the_cluster_forms_and_a_cluster_url_reaches_it(redis_cluster):
    assert all(n.port + BUS_OFFSET <= 65535 and n.port < 55536 for n in redis_cluster.nodes)
    client = connect_cluster(redis_cluster.url)
    try:
        assert client.cluster_info()["cluster_state"] == "ok"
        keys = [f"recs:en:views:user-{i}" for i in range(50)]
        for i, key in enumerate(keys):
            client.hset(key, "5", i)
        owners = {client.get_node_from_key(k).port for k in keys}
        assert len(owners) == 3  # the keys landed on every primary
        assert [int(client.hget(k, "5")) for k in keys] == list(range(50))
        # Why the commands refuse the URL today: one script call over many users' keys.
        first = keys[0]
        other = next(k for k in keys if client.keyslot(k) != client.keyslot(first))
        node = redis_cluster.nodes[0].client()
        with pytest.raises(redis.ResponseError, match="hash to the same slot"):  # CROSSSLOT
            node.eval("return redis.call('EXISTS', KEYS[1], KEYS[2])", 2, first, other)
        node.close()
    finally:
        client.close()


def test_a_cluster_url_is_parsed():
    target = special(URL)
    assert isinstance(target, ClusterTarget)
    assert target.nodes == (("127.0.0.1", 7000), ("127.0.0.1", 7001))
    assert target.password == SECRET and SECRET not in repr(target)
    with pytest.raises(ValueError, match="database 0"):
        special("redis+cluster://h:1/3")


def test_every_command_that_reaches_redis_runs_on_a_cluster():
    """A command added later must be placed on purpose: in CLUSTER_COMMANDS, or refused."""
    with_url = {n for n, s in _subcommands(build_parser()).items()
                if any(a.dest == "redis_url" for a in s._actions)}
    assert with_url and with_url <= CLUSTER_COMMANDS


def _refusal(err: str) -> str:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert "does not run on a Redis Cluster" in lines[0] and "docs/CLUSTER.md" in lines[0]
    assert SECRET not in err
    return lines[0]


def test_a_command_not_on_the_list_refuses_a_cluster_url_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(redis_urls, "CLUSTER_COMMANDS", CLUSTER_COMMANDS - {"experiment"})
    assert main(["experiment", "status", "--lang", "en", "--redis-url", URL]) == 2
    line = _refusal(capsys.readouterr().err)
    assert "recs experiment" in line
    assert "backfill" in line.split("the commands that do:", 1)[1]  # named as one that runs
    monkeypatch.setenv("RECS_REDIS_URL", URL)  # the variable is refused too
    assert main(["experiment", "status", "--lang", "en"]) == 2
    assert "recs experiment" in _refusal(capsys.readouterr().err)


def test_backfill_is_not_refused(cluster, tmp_path, capsys):
    path = tmp_path / "views.csv"
    path.write_text("user_id,resource_id,view_count\nu1,5,2\n")
    assert main(["backfill", str(path), "--lang", "en", "--redis-url", cluster.url]) == 0
    assert "loaded 1 (user, resource) rows, 2 views" in capsys.readouterr().out
