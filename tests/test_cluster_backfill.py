"""``recs backfill`` on a real Redis Cluster (tests/redis_cluster.py): each chunk per stream
(consumers/backfill_streams.py), exactly once. The counts equal the same load on one Redis
key by key (names with their hash tags taken out); a load killed between chunks or inside
one resumes and ends exact; a completed file is refused and ``--force`` adds it again; a
slot group whose progress went back (its shard lost its last chunk) gets only that chunk
again; a load killed after its last chunk but before its record only finishes the record;
two loads at once never apply a chunk twice; a poisoned user is parked in its slot group and
repaired; a primary SIGKILLed mid-load with its replica frozen (the loss is certain) ends
exact."""

from __future__ import annotations

import contextlib
import random
import re

import orjson
import pytest
import redis

from consumers import backfill_streams
from consumers.backfill import backfill, file_digest
from consumers.backfill_streams import BACKFILL_GROUP, FIELD, stream_topic
from core.errors import InputError, RecsError
from recs.localstack_process import wait_until
from store.cluster_keys import layout
from store.connection import connect
from store.keys import Keys
from store.progress import stream_keys
from tests.test_backfill import ROWS, expected, write_csv

pytestmark = pytest.mark.integration

TAG = re.compile(r"\{([a-z]+)(?::\d+)?\}")


def make_rows(n_users: int = 120, seed: int = 7) -> list[tuple[str, int, int]]:
    rng = random.Random(seed)
    return [(f"u{u}", rid, rng.randint(1, 9)) for u in range(n_users)
            for rid in rng.sample(range(1, 60), rng.randint(1, 6))]


def dump(client) -> dict:
    """Every key but the progress (records, offsets, seq) as plain data, cluster names with
    their tags taken out (a slot group's sets merged): one Redis and a cluster compare."""
    nodes = [client] if not hasattr(client, "get_primaries") else [
        client.get_redis_connection(n) for n in client.get_primaries()]
    out: dict = {}
    for node in nodes:
        for raw in node.scan_iter(count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            name = TAG.sub(r"\1", key)
            if "_offsets" in name or name.endswith((":_seq", "backfills")):
                continue
            kind = node.type(key)
            kind = kind.decode() if isinstance(kind, bytes) else kind
            if kind == "hash":
                out[name] = {_s(k): _s(v) for k, v in node.hgetall(key).items()}
            elif kind == "set":
                out.setdefault(name, set()).update(_s(m) for m in node.smembers(key))
            elif kind == "zset":
                out.setdefault(name, set()).update(_s(m) for m in node.zrange(key, 0, -1))
            else:
                out[name] = (kind, _s(node.get(key)) if kind == "string" else None)
    return out


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def progress(client, digest: str, run: int = 1, lang: str = "en") -> dict[str, int]:
    """Every stream's progress hash of a load: {hash: next chunk} (absent: 0)."""
    names = stream_keys(layout(client), lang, BACKFILL_GROUP, stream_topic(digest, run))
    return {n: int(client.hget(n, FIELD) or 0) for n in names}


def run_cli(url: str, *args) -> int:
    from recs.cli import main

    return main(["backfill", *map(str, args), "--redis-url", url])


@pytest.fixture
def cl(cluster):
    client = connect(cluster.url, decode_responses=True)
    yield client
    client.close()


def test_a_backfill_on_a_cluster_counts_what_one_redis_does(cluster, cl, redis_server,
                                                            tmp_path, capsys):
    rows = make_rows()
    path = write_csv(tmp_path / "views.csv", rows)
    one = redis_server.client(decode_responses=True)
    for url in (redis_server.url, cluster.url):
        assert run_cli(url, path, "--lang", "en") == 0
        assert f"loaded {len(rows)} (user, resource) rows" in capsys.readouterr().out
    assert dump(cl) == dump(one)
    assert dump(cl)["recs:en:item_views"] == {str(k): str(v)
                                              for k, v in expected(rows)[1].items()}
    digest = file_digest(path)
    assert set(progress(cl, digest).values()) == {1}  # one chunk, every stream holds it
    record = orjson.loads(cl.hget(Keys("recs").backfills, f"en:{digest}"))
    assert record["complete"] and record["chunks_done"] == 1 and record["run"] == 1

    # Again: refused with the one-Redis line, nothing added; --force adds it again.
    assert run_cli(cluster.url, path, "--lang", "en") == 2
    err = capsys.readouterr().err
    assert "already loaded" in err and "--force" in err
    for url in (redis_server.url, cluster.url):
        assert run_cli(url, path, "--lang", "en", "--force") == 0
        assert "reload #2" in capsys.readouterr().out
    assert dump(cl) == dump(one)
    assert dump(cl)["recs:en:item_views"] == {str(k): str(v)
                                              for k, v in expected(rows, 2)[1].items()}
    assert set(progress(cl, digest, run=2).values()) == {1}
    one.close()


def test_a_load_killed_between_or_inside_chunks_resumes_and_ends_exact(cl, tmp_path,
                                                                       monkeypatch):
    rows = make_rows()
    path = write_csv(tmp_path / "views.csv", rows)
    keys = layout(cl)

    def crash_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        backfill(cl, keys, path, "en", chunk_pairs=50, on_chunk=crash_after_two)
    digest = file_digest(path)
    assert set(progress(cl, digest).values()) == {2}

    # Killed inside the third chunk: the item side and some slot groups have it, the others not.
    real = backfill_streams.evalsha_per_node

    def half_then_killed(client, script, calls):
        real(client, script, calls[: len(calls) // 2])
        raise KeyboardInterrupt("killed mid-chunk")

    monkeypatch.setattr(backfill_streams, "evalsha_per_node", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        backfill(cl, keys, path, "en", chunk_pairs=50, force=True)  # --force resumes too
    monkeypatch.setattr(backfill_streams, "evalsha_per_node", real)
    held = progress(cl, digest)
    assert set(held.values()) == {2, 3} and held[next(iter(held))] == 3  # item side first

    result = backfill(cl, keys, path, "en", chunk_pairs=50)
    chunks = -(-len(rows) // 50)
    assert (result.resumed_at, result.chunks, result.run) == (2, chunks, 1)
    assert set(progress(cl, digest).values()) == {chunks}
    users, items = expected(rows)
    assert dump(cl)["recs:en:item_views"] == {str(k): str(v) for k, v in items.items()}
    for user, views in users.items():
        assert cl.hgetall(keys.views("en", user)) == {str(k): str(v) for k, v in views.items()}
    with pytest.raises(InputError, match="already loaded"):
        backfill(cl, keys, path, "en", chunk_pairs=50)


def test_a_group_that_lost_its_last_chunk_gets_only_that_chunk_again(cl, tmp_path):
    """A shard that failed over loses its last writes, counts and progress together: here
    one slot group's last chunk is taken out by hand, and the next run (no --force: the
    record says complete, the streams do not) writes it there and nowhere else."""
    rows = sorted(ROWS)
    path = write_csv(tmp_path / "views.csv", rows)
    keys = layout(cl)
    assert backfill(cl, keys, path, "en", chunk_pairs=3).chunks == 3
    before = dump(cl)
    last = rows[6:]  # the last chunk: dave's 11, erin's 14
    g = keys.for_user("erin")
    for user, rid, n in last:
        if keys.group_of(user) == g.group and cl.hincrby(keys.views("en", user), rid, -n) == 0:
            cl.hdel(keys.views("en", user), rid)
    digest = file_digest(path)
    group_stream = g.group_offsets("en", BACKFILL_GROUP, stream_topic(digest, 1))
    cl.hset(group_stream, FIELD, 2)
    empty = next(h for h in keys.slot_groups() if h.group not in
                 {keys.group_of(u) for u, _r, _n in rows})
    cl.hset(empty.group_offsets("en", BACKFILL_GROUP, stream_topic(digest, 1)), FIELD, 2)

    with pytest.raises(InputError, match="read it differently"):  # other chunks: refused
        backfill(cl, keys, path, "en", chunk_pairs=4)
    result = backfill(cl, keys, path, "en", chunk_pairs=3)
    assert (result.resumed_at, result.chunks_applied) == (2, 1)
    assert dump(cl) == before  # the item totals were not sent again, nothing else moved
    assert set(progress(cl, digest).values()) == {3}
    with pytest.raises(InputError, match="already loaded"):
        backfill(cl, keys, path, "en", chunk_pairs=3)


def test_two_loads_at_once_never_apply_a_chunk_twice(cl, tmp_path):
    rows = make_rows()
    path = write_csv(tmp_path / "views.csv", rows)
    keys = layout(cl)
    others = []

    def another_load_meanwhile(done, total):
        if done == 1 and not others:
            others.append(backfill(cl, keys, path, "en", chunk_pairs=50))

    with pytest.raises(InputError, match="another load of this file"):
        backfill(cl, keys, path, "en", chunk_pairs=50, on_chunk=another_load_meanwhile)
    assert others[0].resumed_at == 1
    assert dump(cl)["recs:en:item_views"] == {str(k): str(v)
                                              for k, v in expected(rows)[1].items()}


def test_a_poisoned_user_is_parked_in_its_group_and_repaired(cluster, cl, tmp_path, capsys):
    path = write_csv(tmp_path / "views.csv", ROWS)
    keys = layout(cl)
    cl.set(keys.views("en", "bob"), "not a hash")
    assert run_cli(cluster.url, path, "--lang", "en") == 0
    capsys.readouterr()
    assert cl.hlen(keys.for_user("bob").quarantine("en")) == 1
    assert cl.hgetall(keys.item_views("en")) == {str(k): str(v)
                                                 for k, v in expected(ROWS)[1].items()}
    cl.delete(keys.views("en", "bob"))
    from recs.cli import main

    assert main(["repair", "--redis-url", cluster.url]) == 0
    assert cl.hgetall(keys.views("en", "bob")) == {"10": "300", "12": "2"}
    assert cl.hgetall(keys.item_views("en")) == {str(k): str(v)
                                                 for k, v in expected(ROWS)[1].items()}


def test_a_primary_killed_mid_load_loses_chunks_and_the_load_ends_exact(fresh_cluster,
                                                                        tmp_path, caplog):
    client = connect(fresh_cluster.url, decode_responses=True)
    keys = layout(client)
    rows = make_rows(300, seed=11)
    path = write_csv(tmp_path / "views.csv", rows)
    by_node: dict[str, int] = {}
    for g in keys.slot_groups():
        name = client.get_node_from_key(g.users("en")).name
        by_node[name] = by_node.get(name, 0) + 1
    victim = fresh_cluster.node(max(by_node, key=by_node.get))
    replica = fresh_cluster.replica_of(victim)
    paused = []

    def freeze_then_kill(done, total):
        if done == 2:  # the replica stops applying: what follows is lost with the primary
            paused.append(replica.client())
            paused[0].execute_command("CLIENT", "PAUSE", 8000, "WRITE")
        elif done == 4:
            victim.kill()

    with contextlib.suppress(RecsError):  # gave up waiting for the failover: resumed below
        backfill(client, keys, path, "en", chunk_pairs=100, on_chunk=freeze_then_kill)
    wait_until(lambda: len(fresh_cluster.primaries()) == 3, 30, "a replica promoted")
    for _attempt in range(5):
        try:
            backfill(client, keys, path, "en", chunk_pairs=100)
        except InputError as exc:
            assert "already loaded" in str(exc)
            break
        except (RecsError, redis.RedisError):
            continue
    else:
        raise AssertionError("the load never finished")
    assert "progress went back" in caplog.text  # the loss was real, and made good
    users, items = expected(rows)
    assert {int(k): int(v) for k, v in client.hgetall(keys.item_views("en")).items()} == items
    for user, views in users.items():
        assert {int(k): int(v) for k, v in client.hgetall(
            keys.views("en", user)).items()} == views
    assert set(progress(client, file_digest(path)).values()) == {-(-len(rows) // 100)}
    client.close()


def test_a_load_killed_after_its_last_chunk_but_before_its_record_is_finished(cl, tmp_path):
    """Every stream holds every chunk, the record still says one short: the next run moves
    the record to complete, writes nothing, and refuses nothing."""
    path = write_csv(tmp_path / "views.csv", ROWS)
    keys = layout(cl)

    def killed_before_the_record(done, total):
        if done == total:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        backfill(cl, keys, path, "en", chunk_pairs=3, on_chunk=killed_before_the_record)
    field = f"en:{file_digest(path)}"
    assert orjson.loads(cl.hget(keys.backfills, field))["chunks_done"] == 2
    result = backfill(cl, keys, path, "en", chunk_pairs=3)
    assert (result.resumed_at, result.chunks_applied, result.run) == (3, 0, 1)
    assert orjson.loads(cl.hget(keys.backfills, field))["complete"]
    assert cl.hgetall(keys.item_views("en")) == {str(k): str(v)
                                                 for k, v in expected(ROWS)[1].items()}
    with pytest.raises(InputError, match="already loaded"):
        backfill(cl, keys, path, "en", chunk_pairs=3)
