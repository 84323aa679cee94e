"""``recs backfill`` with hostile extracts and poisoned keys: never a half-written chunk,
never a chunk recorded as done that was not written, never a traceback."""

from __future__ import annotations

import orjson
import pytest

from consumers.backfill import backfill, file_digest
from core.errors import RecsError
from recs.cli import main
from store.keys import Keys
from store.quarantine import repair
from tests.test_backfill import ROWS, counts_in, expected, write_csv

pytestmark = pytest.mark.integration

KEYS = Keys("recs")


def test_the_issue_reproduction_a_huge_count_is_one_error_and_writes_nothing(
        module_redis, r, tmp_path, capsys):
    path = tmp_path / "huge.csv"
    path.write_text("user_id,resource_id,view_count\nu,5,100000000000000000\n")
    assert main(["backfill", str(path), "--lang", "en", "--redis-url", module_redis.url]) == 2
    err = capsys.readouterr().err
    assert "line 2: view_count 100000000000000000 is above the maximum" in err
    assert "Traceback" not in err
    assert r.keys("*") == []


def test_a_header_only_file_is_not_recorded_as_loaded(module_redis, r, tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("user_id,resource_id,view_count\n")
    assert main(["backfill", str(path), "--lang", "en", "--redis-url", module_redis.url]) == 2
    assert "no data rows" in capsys.readouterr().err
    assert r.keys("*") == []


def test_a_refused_chunk_writes_nothing_is_not_done_and_resumes(r, tmp_path):
    path = write_csv(tmp_path / "views.csv", ROWS)
    field = f"en:{file_digest(path)}"

    def poison_after_first(done, total):
        if done == 1:  # an internal key of the wrong type: the next chunk is refused whole
            r.set(KEYS.touched("en"), "oops")

    with pytest.raises(RecsError, match="chunk 2 of 3.*nothing of it was written"):
        backfill(r, KEYS, path, "en", chunk_pairs=3, on_chunk=poison_after_first)
    record = orjson.loads(r.hget(KEYS.backfills, field))
    assert record["chunks_done"] == 1 and not record["complete"]
    first = ROWS[:3]  # the chunks follow (user, resource) order, which ROWS already has
    assert counts_in(r) == expected(first)

    r.delete(KEYS.touched("en"))
    result = backfill(r, KEYS, path, "en", chunk_pairs=3)
    assert (result.resumed_at, result.chunks_applied) == (1, 2)
    assert counts_in(r) == expected(ROWS)


def test_a_poisoned_user_is_parked_the_rest_loads_and_repair_finishes_it(r, tmp_path, caplog):
    path = write_csv(tmp_path / "views.csv", ROWS)
    r.hset(KEYS.views("en", "bob"), "12", "abc")
    backfill(r, KEYS, path, "en", chunk_pairs=3)
    assert any("parked in the quarantine" in m for m in caplog.messages)
    # Chunks of 3 rows: bob's (10, 300) is in chunk 1 and counted; (12, 2) is in chunk 2,
    # refused by the poisoned field and parked; the rest of chunk 2 is counted.
    assert r.hgetall(KEYS.views("en", "bob")) == {"12": "abc", "10": "300"}
    r.hdel(KEYS.views("en", "bob"), "12")
    users, items = counts_in(r)
    want_users, want_items = expected([row for row in ROWS if row != ("bob", 12, 2)])
    assert users == want_users and items == want_items
    assert repair(r, KEYS, "en").applied == 1
    assert counts_in(r) == expected(ROWS)


def test_totals_at_the_count_bound_are_exact(r, tmp_path):
    big = 10**9
    rows = [(f"user-{i:05d}", 7, big) for i in range(2500)]
    backfill(r, KEYS, write_csv(tmp_path / "big.csv", rows), "en", chunk_pairs=1000)
    assert r.hget(KEYS.item_views("en"), "7") == str(2500 * big)
