"""``recs backfill``: a CSV extract into the counts through the consumer's write path, once."""

import gzip

import orjson
import pytest
import redis

from consumers.backfill import backfill, file_digest
from core.errors import InputError
from recs.cli import main
from store.counts import Counts
from store.keys import Keys

pytestmark = pytest.mark.integration

KEYS = Keys("recs")

ROWS = [("alice", 10, 3), ("alice", 11, 1), ("bob", 10, 300), ("bob", 12, 2),
        ("carol", 13, 1), ("dave", 10, 7), ("dave", 11, 2), ("erin", 14, 9)]


def write_csv(path, rows, header="user_id,resource_id,view_count"):
    text = "\n".join([header] + [",".join(map(str, row)) for row in rows]) + "\n"
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def counts_in(r, lang="en") -> tuple[dict, dict]:
    users = {}
    for key in r.scan_iter(match=KEYS.views_pattern(lang)):
        users[key.rsplit(":", 1)[1]] = {int(k): int(v) for k, v in r.hgetall(key).items()}
    items = {int(k): int(v) for k, v in r.hgetall(KEYS.item_views(lang)).items()}
    return users, items


def expected(rows, times=1) -> tuple[dict, dict]:
    users, items = {}, {}
    for user, rid, n in rows:
        users.setdefault(user, {})[rid] = n * times
        items[rid] = items.get(rid, 0) + n * times
    return users, items


def run_cli(server, *args) -> int:
    return main(["backfill", *map(str, args), "--redis-url", server.url])


def test_a_file_loads_once_and_a_second_load_is_refused(module_redis, r, tmp_path, capsys):
    path = write_csv(tmp_path / "views.csv", ROWS)
    assert run_cli(module_redis, path, "--lang", "en") == 0
    assert "loaded 8 (user, resource) rows, 325 views" in capsys.readouterr().out
    assert counts_in(r) == expected(ROWS)
    assert r.smembers(KEYS.langs) == {"en"}
    assert r.smembers(KEYS.users("en")) == {"alice", "bob", "carol", "dave", "erin"}
    assert set(r.zrange(KEYS.dirty("en"), 0, -1)) == {"alice", "bob", "carol", "dave", "erin"}
    record = orjson.loads(r.hget(KEYS.backfills, f"en:{file_digest(path)}"))
    assert record["complete"] and record["views"] == 325 and record["run"] == 1

    # Again, plain or gzip-compressed (same content, same digest): refused, nothing added.
    gz = write_csv(tmp_path / "copy.csv.gz", ROWS)
    for again in (path, gz):
        assert run_cli(module_redis, again, "--lang", "en") == 2
        err = capsys.readouterr().err
        assert "already loaded" in err and "--force" in err
    assert counts_in(r) == expected(ROWS)

    # Into another language it is another load.
    assert run_cli(module_redis, path, "--lang", "es") == 0
    assert counts_in(r, "es") == expected(ROWS)

    # --force loads it again on purpose.
    assert run_cli(module_redis, gz, "--lang", "en", "--force") == 0
    assert counts_in(r) == expected(ROWS, times=2)
    record = orjson.loads(r.hget(KEYS.backfills, f"en:{file_digest(path)}"))
    assert record["run"] == 2 and record["complete"]


def test_a_load_killed_half_way_resumes_without_double_counting(r, tmp_path):
    path = write_csv(tmp_path / "views.csv", ROWS)

    def crash_after_two(done, total):
        if done == 2:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        backfill(r, KEYS, path, "en", chunk_pairs=3, on_chunk=crash_after_two)
    partial_users, partial_items = counts_in(r)
    assert 0 < sum(partial_items.values()) < 325
    assert r.get(KEYS.seq("en")) == "2"  # exactly two chunks landed

    # Even --force resumes an unfinished load rather than starting over.
    result = backfill(r, KEYS, path, "en", chunk_pairs=3, force=True)
    assert (result.resumed_at, result.chunks_applied, result.chunks) == (2, 1, 3)
    assert counts_in(r) == expected(ROWS)
    with pytest.raises(InputError, match="already loaded"):
        backfill(r, KEYS, path, "en", chunk_pairs=3)


def test_a_resend_whose_first_call_landed_counts_once(r, tmp_path, monkeypatch):
    """The reply of a chunk is lost (connection dropped after Redis applied it): the retry
    is refused by the progress guard and recognised as our own write."""
    path = write_csv(tmp_path / "views.csv", ROWS)
    real_write = Counts.write
    calls = []

    def apply_then_lose_the_reply(self, *args, **kwargs):
        result = real_write(self, *args, **kwargs)
        calls.append(result)
        if len(calls) == 2:
            raise redis.ConnectionError("connection lost after the script ran")
        return result

    monkeypatch.setattr(Counts, "write", apply_then_lose_the_reply)
    result = backfill(r, KEYS, path, "en", chunk_pairs=3)
    assert result.chunks_applied == 3 and len(calls) == 4 and calls[2].refused  # the resend
    assert counts_in(r) == expected(ROWS)


def test_resuming_with_other_rows_is_refused(r, tmp_path):
    path = write_csv(tmp_path / "views.csv", ROWS + [("frank", "oops", 1)])

    def crash(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backfill(r, KEYS, path, "en", skip_bad_rows=True, chunk_pairs=3, on_chunk=crash)
    # The same file read without skipping: it fails on the bad row before anything else.
    with pytest.raises(InputError, match="line 10"):
        backfill(r, KEYS, path, "en", chunk_pairs=3)
    # A different reading of the same file would chunk differently: refused.
    with pytest.raises(InputError, match="read it differently"):
        backfill(r, KEYS, path, "en", skip_bad_rows=True, chunk_pairs=4)
    backfill(r, KEYS, path, "en", skip_bad_rows=True, chunk_pairs=3)
    assert counts_in(r) == expected(ROWS)


def test_bad_rows_and_control_characters(module_redis, r, tmp_path, capsys):
    path = write_csv(tmp_path / "bad.csv", ROWS + [("zed", 0, 4), ("tab\tuser", 10, 1)])
    assert run_cli(module_redis, path, "--lang", "en") == 2
    assert "resource_id 0" in capsys.readouterr().err
    assert not r.exists(KEYS.item_views("en"))

    path = write_csv(tmp_path / "ctrl.csv", ROWS + [("tab\tuser", 10, 1)])
    assert run_cli(module_redis, path, "--lang", "en") == 2
    assert "control characters" in capsys.readouterr().err
    assert run_cli(module_redis, path, "--lang", "en", "--skip-bad-rows") == 0
    assert counts_in(r) == expected(ROWS)

    assert run_cli(module_redis, path, "--lang", "EN") == 2
    assert "--lang" in capsys.readouterr().err
    assert run_cli(module_redis, tmp_path / "missing.csv", "--lang", "en") == 2
