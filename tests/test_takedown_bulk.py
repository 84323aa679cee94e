"""A bulk take-down against a real redis-server (issue 23, item 1): hiding hundreds of
resources at once costs about one read of every published list (not one per list and
resource), no script call runs more than a bounded number of commands, and a settle that
stopped half-way is resumed from the progress it recorded in Redis, repeating nothing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from recs.cli import main
from store.control import Control
from store.control_op import ControlOp
from tests.helpers import assert_top_k
from tests.test_takedown import KEYS, N, exact_user_scores, lists, load, train
from trainer.data.synth import generate
from trainer.pipeline.takedown import settle

pytestmark = pytest.mark.integration

MAX_COMMANDS_PER_CALL = 12_000
"""What one script call may run (about a few milliseconds of Redis time)."""


@pytest.fixture(scope="module")
def data():
    return generate(n_users=500, n_resources=100, langs=("en",), seed=5)


def _bulk(client) -> tuple[list[int], list[int]]:
    """Ten resources the model lists (the least listed ones) and 590 it never heard of."""
    counts: dict[int, int] = {}
    for recs in lists(client).values():
        for m in recs:
            counts[m] = counts.get(m, 0) + 1
    real = sorted(counts, key=lambda r: (counts[r], r))[:10]
    return real, real + list(range(3_000_000_000, 3_000_000_590))


def _lookups(client) -> int:
    stats = client.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0)
               for c in ("zscore", "hexists", "zrange", "sismember"))


def test_a_bulk_hide_reads_each_list_once_whatever_the_number_of_resources(
        redis_server, redis_client, data, tmp_path):
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    published = redis_client.scard(KEYS.published_users("en")) + redis_client.scard(
        KEYS.published_items("en"))
    real, everything = _bulk(redis_client)
    holders = [u for u, recs in lists(redis_client).items() if set(recs) & set(real)]
    assert holders
    redis_client.config_resetstat()
    assert main(["hide", "--lang", "en", "--redis-url", redis_server.url,
                 *map(str, everything)]) == 0
    # One list read and its 20 members looked up, per published list (and the refills):
    # one ZSCORE per list and resource would be 600 per list.
    assert _lookups(redis_client) <= 25 * published + 25 * len(holders)
    for recs in lists(redis_client).values():
        assert not set(recs) & set(real) and len(recs) == N
    for user in holders:  # refilled to N, exactly the next best (near-ties in any order)
        got = lists(redis_client)[user]
        assert len(got) == N
        assert_top_k(got, exact_user_scores(redis_client, user, set(real)), tol=1e-4)
    assert not redis_client.exists(KEYS.takedown_work("en"), KEYS.takedown_scan("en"))


def test_no_script_call_of_a_bulk_hide_runs_long(redis_server, redis_client, data, tmp_path):
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    _, everything = _bulk(redis_client)
    seen: list[dict] = []
    ready = threading.Event()

    def monitor() -> None:
        with redis_server.client().monitor() as m:
            ready.set()
            for command in m.listen():
                seen.append(command)
                if command["command"] == "SET recs:test:stop 1":
                    return

    watcher = threading.Thread(target=monitor)
    watcher.start()
    ready.wait(10)
    assert main(["hide", "--lang", "en", "--redis-url", redis_server.url,
                 *map(str, everything)]) == 0
    redis_client.set("recs:test:stop", 1)
    watcher.join(60)
    per_call, calls = [], 0
    for command in seen:
        if command["client_type"] == "lua":
            per_call[-1] += 1
        elif command["command"].startswith(("EVALSHA", "EVAL ")):
            per_call.append(0)
            calls += 1
    assert calls > 5 and max(per_call) <= MAX_COMMANDS_PER_CALL, max(per_call)


def test_a_settle_that_stopped_half_way_resumes_and_repeats_nothing(redis_client, data,
                                                                    tmp_path, monkeypatch):
    from store import takedown_scan
    from store.takedown_scan import begin_scan, scan_lists

    monkeypatch.setattr(takedown_scan, "LIST_STEP_OPS", 21 * 50)  # 50 lists a step
    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    real, everything = _bulk(redis_client)
    control = Control(redis_client, KEYS)
    # Baseline: an uninterrupted settle of the same hides, then everything unhidden again.
    control.run([ControlOp("hide", str(r), "en") for r in everything])
    redis_client.config_resetstat()
    settle(redis_client, KEYS, "en")
    whole = redis_client.info("commandstats")["cmdstat_sscan"]["calls"]
    control.run([ControlOp("unhide", str(r), "en") for r in everything])
    settle(redis_client, KEYS, "en")
    train(redis_client, tmp_path)
    before = lists(redis_client)

    control.run([ControlOp("hide", str(r), "en") for r in everything])
    redis_client.config_resetstat()
    # A settle that died (or timed out) after two steps of its scan: its progress is in Redis.
    seq = begin_scan(redis_client, KEYS, "en")
    assert seq is not None and not scan_lists(redis_client, KEYS, "en", "users", None, 2)
    assert redis_client.hget(KEYS.takedown_scan("en"), "users") not in (b"0", b"done")
    report = settle(redis_client, KEYS, "en")  # `recs control` or the next `recs hide`
    assert redis_client.info("commandstats")["cmdstat_sscan"]["calls"] == whole
    assert report.users_refilled == sum(bool(set(r) & set(real)) for r in before.values())
    for recs in lists(redis_client).values():
        assert not set(recs) & set(real) and len(recs) == N
    assert not redis_client.exists(KEYS.takedown_work("en"), KEYS.takedown_scan("en"),
                                   KEYS.takedown_found("en", "users"))


def test_hides_queued_during_a_settle_are_settled_by_it_too(redis_client, data, tmp_path):
    from store.takedown_scan import begin_scan

    load(redis_client, data, "en")
    train(redis_client, tmp_path)
    real, _ = _bulk(redis_client)
    control = Control(redis_client, KEYS)
    control.run([ControlOp("hide", str(real[0]), "en")])
    assert begin_scan(redis_client, KEYS, "en") is not None  # a scan covering real[0] only
    control.run([ControlOp("hide", str(r), "en") for r in real[1:]])
    settle(redis_client, KEYS, "en")
    for recs in lists(redis_client).values():
        assert not set(recs) & set(real) and len(recs) == N
    assert not redis_client.exists(KEYS.takedown_work("en"))
    ids = np.frombuffer(redis_client.get(KEYS.item_ids("en")), "<u4")
    assert set(real) <= set(int(i) for i in ids)  # the model still has them: refilled, not gone
