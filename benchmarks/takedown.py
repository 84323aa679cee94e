"""Take-downs and the trending list at GoConqr scale: time from ``recs hide`` to the last list
cleaned and refilled, what the refill costs, and the trending refresh's cost per minute at
1,000 events/s.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/takedown.py [--users 78000 ...]

Setup (untimed): a redis-server from ``recs.localstack`` (AOF on, automatic rewrite off, as
in benchmarks/retrain.py); a synthetic extract (``trainer.data.synth``; the defaults leave about
58,000 users and 3,800 resources after the platform's filters) loaded through the
consumer's write path; one ``train_language`` (40 factors; fewer iterations than production,
which changes nothing measured here).

Timed, in the same process:

- ``hide``: for the resources in the most lists, a median one and a rarely listed one, the
  time from the hide script to the last affected list refilled (``Control.run`` +
  ``trainer.pipeline.takedown.settle``), split into finding the lists (a server-side scan of the
  published lists, one ZSCORE each) and recomputing + writing them. Target < 5 s. Each
  hidden resource is unhidden again before the next one.
- ``bulk``: ``--bulk`` ids (10,000) hidden at once, ``--bulk-listed`` (200) of them
  resources the model lists, spread over the ranking, the rest ids it never heard of (a
  take-down of a publisher's catalogue): the same path as ``recs hide``, to the last list
  refilled, then the unhide of them all; each with Redis's longest script call.
- baselines in the same run: reading every published user list once (pipelined ZRANGE of
  each, what any client-side scan must at least do), and the retrain's own publish time
  (the alternative: waiting for the next retrain).
- ``trending``: each simulated minute applies 60,000 view events (1,000/s) through
  ``Counts.apply`` in batches of 1,000 (the consumer's own write cost for that minute, the
  baseline), then one refresh; printed: the refresh's time per minute and as a ratio of
  the consumer's write time for the same minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import slowlog  # noqa: E402 - benchmarks/ is the script's path; after the env
from retrain import load_counts  # noqa: E402

from trainer.config import ModelSpec


def list_counts(client, keys, lang: str) -> dict[int, int]:
    """resource -> number of user lists holding it (setup only, to pick resources)."""
    users = [m.decode() for m in client.smembers(keys.published_users(lang))]
    pipe = client.pipeline(transaction=False)
    for u in users:
        pipe.zrange(keys.recs(lang, u), 0, -1)
    counts: dict[int, int] = {}
    for members in pipe.execute():
        for m in members:
            counts[int(m)] = counts.get(int(m), 0) + 1
    return counts


def read_all_lists(client, keys, lang: str) -> float:
    """Baseline: every published user list read once, pipelined 1,000 at a time."""
    t = time.perf_counter()
    users = [m.decode() for m in client.smembers(keys.published_users(lang))]
    for s in range(0, len(users), 1000):
        pipe = client.pipeline(transaction=False)
        for u in users[s:s + 1000]:
            pipe.zrange(keys.recs(lang, u), 0, -1, withscores=True)
        pipe.execute()
    return time.perf_counter() - t


def time_hide(client, keys, lang: str, rid: int) -> dict:
    from store.control import Control
    from store.control_op import ControlOp
    from trainer.pipeline.takedown import settle

    control = Control(client, keys)
    t = time.perf_counter()
    control.run([ControlOp("hide", str(rid), lang)])
    report = settle(client, keys, lang)
    total = time.perf_counter() - t
    control.run([ControlOp("unhide", str(rid), lang)])
    settle(client, keys, lang)
    lists = report.users_refilled + report.similar_refilled
    return {"total": total, "find": report.seconds["find"], "refill": report.seconds["refill"],
            "lists": lists, "users": report.users_refilled,
            "similar": report.similar_refilled, "cleaned": report.users_cleaned}


def time_bulk(client, keys, lang: str, real: list[int], total: int) -> dict:
    """``recs hide`` of ``total`` ids at once (``real`` of them listed, the rest unknown to
    the model) to the last list refilled, then the unhide of them all; each with its
    longest Redis command."""
    from store.control import Control
    from store.control_op import ControlOp
    from trainer.pipeline.takedown import settle

    unknown = range(4_100_000_000, 4_100_000_000 + total - len(real))
    ids = [str(r) for r in [*real, *unknown]]
    control = Control(client, keys)
    out = {}
    for action in ("hide", "unhide"):
        client.slowlog_reset()
        t = time.perf_counter()
        control.run([ControlOp(action, rid, lang) for rid in ids])
        recorded = time.perf_counter() - t
        report = settle(client, keys, lang)
        out[action] = {"total": time.perf_counter() - t, "recorded": recorded,
                       "find": report.seconds.get("find", 0.0),
                       "refill": report.seconds.get("refill", 0.0),
                       "lists": report.users_refilled + report.similar_refilled,
                       "cleaned": report.users_cleaned + report.similar_cleaned,
                       "restored": report.restored, "longest": longest(client)}
    return out


def print_bulk(bulk: dict, total: int, real: int, single: float, baseline: float) -> None:
    for action, b in bulk.items():
        print(f"  {action} of {total:,} ids at once ({real} of them listed resources): "
              f"{b['total']:.2f} s = {b['total'] / single:.1f}x the most listed one's hide "
              f"(recorded {b['recorded']:.2f} s; find {b['find']:.2f} s = "
              f"{b['find'] / baseline:.2f}x reading every list; refill {b['refill']:.2f} s: "
              f"{b['lists']} lists refilled, {b['cleaned']} cleaned, {b['restored']} restored); "
              f"longest script call {b['longest']}")


def trending_minutes(client, keys, lang: str, views, minutes: int, rate: int) -> list[dict]:
    import numpy as np

    from store.counts import Counts
    from store.trending import Trending, TrendingConfig

    counts = Counts(client, keys)
    trending = Trending(client, keys, TrendingConfig())
    trending.refresh(lang, min_interval=0)  # the first refresh only records the totals
    rng = np.random.default_rng(3)
    pairs = views[["user_id", "resource_id"]].to_numpy()
    out = []
    for _ in range(minutes):
        picks = pairs[rng.integers(len(pairs), size=60 * rate)]
        t = time.perf_counter()
        for s in range(0, len(picks), 1000):
            batch: dict[str, dict[int, int]] = {}
            for user, rid in picks[s:s + 1000]:
                items = batch.setdefault(user, {})
                items[int(rid)] = items.get(int(rid), 0) + 1
            counts.apply(keys.offsets("bench", "views"), [], {lang: batch})
        consumer = time.perf_counter() - t
        client.slowlog_reset()
        t = time.perf_counter()
        _, scored, length = trending.refresh(lang, min_interval=0)
        out.append({"consumer": consumer, "refresh": time.perf_counter() - t, "scored": scored,
                    "length": length, "longest": longest(client)})
    return out


def scripts() -> dict[str, str]:
    """Name -> source of every script a hide, a refill or a refresh runs."""
    from store import control, counts_script, settle, takedown_scan, trending

    return {"CONTROL": control.CONTROL_LUA, "BEGIN": takedown_scan.BEGIN_LUA,
            "SCAN": takedown_scan.SCAN_LUA, "REFILL": settle.REFILL_LUA, "DONE": settle.DONE_LUA,
            "APPLY (consumer)": counts_script.APPLY_LUA, "TRENDING STEP": trending.STEP_LUA,
            "TRENDING FINISH": trending.FINISH_LUA}


def longest(client) -> str:
    """The slowest command since the last SLOWLOG RESET (what readers may wait behind)."""
    return slowlog.longest(client, scripts())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=78000)
    ap.add_argument("--resources", type=int, default=6300)
    ap.add_argument("--mean-items", type=float, default=9.5)
    ap.add_argument("--factors", type=int, default=40)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--minutes", type=int, default=3, help="simulated trending minutes")
    ap.add_argument("--rate", type=int, default=1000, help="view events per second")
    ap.add_argument("--bulk", type=int, default=10_000, help="ids in the bulk hide")
    ap.add_argument("--bulk-listed", type=int, default=200,
                    help="of them, resources the model lists (spread over the ranking)")
    args = ap.parse_args()

    from recs.localstack import RedisServer
    from store.keys import Keys
    from trainer.config import AlsConfig, FilterConfig
    from trainer.data.synth import generate
    from trainer.pipeline.retrain import train_language
    from trainer.settings import RetrainConfig

    lang, keys = "en", Keys()
    tmp = tempfile.TemporaryDirectory(prefix="recs-bench-takedown-")
    server = RedisServer(Path(tmp.name) / "redis").start()
    client = server.client()
    client.config_set("auto-aof-rewrite-percentage", 0)
    try:
        t = time.perf_counter()
        data = generate(n_users=args.users, n_resources=args.resources, langs=(lang,), seed=1,
                        mean_items=args.mean_items)
        views = data.views_for(lang)
        load_counts(client, keys, views, lang)
        settings = RetrainConfig(filters=FilterConfig(), spec=ModelSpec(als=AlsConfig(
            factors=args.factors, iterations=args.iterations)), top_n=20,
            model_dir=str(Path(tmp.name) / "models"))
        result = train_language(client, keys, lang, settings)
        publish = result.fields["publish_seconds"]
        print(f"setup {time.perf_counter() - t:.1f} s: {result.message}")

        held = list_counts(client, keys, lang)
        ranked = sorted(held, key=held.get, reverse=True)
        picks = {"most listed": ranked[0], "2nd most listed": ranked[1],
                 "median": ranked[len(ranked) // 2], "rarely listed": ranked[-1]}
        baseline = statistics.median(read_all_lists(client, keys, lang) for _ in range(3))
        print(f"\nbaseline: read every published user list once {baseline:.3f} s; "
              f"the retrain's publish {publish:.2f} s")
        print("hide -> last list cleaned and refilled (target < 5 s):")
        client.config_set("slowlog-log-slower-than", 500)
        client.config_set("slowlog-max-len", 10000)
        client.slowlog_reset()
        single = {}
        for name, rid in picks.items():
            h = time_hide(client, keys, lang, rid)
            single[name] = h["total"]
            per_list = 1e6 * h["refill"] / max(h["lists"], 1)
            print(f"  {name:16s} resource {rid}: in {held[rid]} user lists -> "
                  f"{h['total']:.3f} s (find {h['find']:.3f} s = "
                  f"{h['find'] / baseline:.2f}x reading every list; refill {h['refill']:.3f} s "
                  f"for {h['users']} user + {h['similar']} similar lists, {per_list:.0f} us "
                  f"per list); {h['total'] / publish:.3f}x the retrain's publish")

        print(f"  longest Redis command during the hides: {longest(client)}")
        real = ranked[::max(1, len(ranked) // args.bulk_listed)][:args.bulk_listed]
        bulk = time_bulk(client, keys, lang, real, args.bulk)
        print_bulk(bulk, args.bulk, len(real), single["most listed"], baseline)
        print(f"\ntrending at {args.rate} events/s, one refresh per simulated minute:")
        minutes = trending_minutes(client, keys, lang, views, args.minutes, args.rate)
        for m in minutes:
            print(f"  consumer writes {m['consumer']:.2f} s, refresh {1000 * m['refresh']:.1f} ms "
                  f"({m['scored']} resources scored, list {m['length']}): "
                  f"{m['refresh'] / m['consumer']:.4f}x the consumer's write time; longest "
                  f"command {m['longest']}")
        med = statistics.median(m["refresh"] for m in minutes)
        print(f"  median refresh {1000 * med:.1f} ms per minute = {100 * med / 60:.3f} % of a "
              f"minute of one Redis core")
    finally:
        client.close()
        server.stop()
        tmp.cleanup()


if __name__ == "__main__":
    main()
