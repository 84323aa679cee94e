"""``recs update`` end to end: backlog throughput, and produce -> fresh recs latency.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/update.py [--backlog 100000 ...]

Everything runs for real on loopback (recs.localstack): redis-server, the broker (each of
``--kafka``, default Apache Kafka then Tansu, in one run), ``recs consume`` and ``recs
update`` as subprocesses. The model is GoConqr-sized (4,000
resources x 40 factors) with random item factors: the fold-in's cost does not depend on the
values. Users' histories are heavy-tailed (lognormal, mean ~14 resources) over Zipf-popular
resources, like trainer.data.synth's.

1. Backlog. ``--backlog`` users' counts go into Redis through the consumer's own write path
   (store/counts.py, the Lua step that also queues them in dirty), then ONE ``recs update``
   process starts. Rate = users cleared / time from its first commit to an empty queue
   (polled every 20 ms). Baseline in the same run: the fold-in math alone (PublishedALS.solve +
   top-N in this process, no Redis) on 5,000 of the same users, in the same batch size.
2. Latency. With the updater still running, ``recs consume`` starts and events arrive at a
   steady ``--rate`` per second for ``--seconds``: half for fresh users (never seen), half for
   users of the backlog (one event per user, so each user's first change after its event is
   that event's). Redis keyspace notifications, read by a separate subscriber process, time
   each user's first ``recs:{lang}:recs:{user}`` write (the updater's commit) and first
   ``views`` write (the consumer's batch) after its event was produced, on the same clock as
   the producer. Latency = notification receipt - produce call, so it includes the broker,
   the consumer's batching (``--batch-timeout``), the updater's polling and the solve; the
   views-hash latency is the baseline (the consumer's share), measured on the same events.

The consumer is tuned for latency here: ``--batch-timeout 0.02 --batch-size 20`` and
librdkafka ``fetch.wait.max.ms=10``. With ``--batch-size 5000`` a batch fills for about
0.5 s whatever ``--batch-timeout`` says (the consumer's idle ``consume()`` call waits up to
0.5 s for a full batch), and with librdkafka's default ``fetch.wait.max.ms`` (500) Tansu
holds fetches: either alone puts p95 far above 200 ms (``--consumer-batch-size 5000`` or
``--fetch-wait-ms 500`` reproduce it).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

LANG = "en"


def _history(rng: np.random.Generator, item_ids: np.ndarray, users: int):
    """{user: {resource: views}} with heavy-tailed sizes over Zipf-popular resources."""
    weight = (1.0 + rng.permutation(item_ids.size)) ** -0.8
    p = weight / weight.sum()
    sizes = np.clip(np.rint(rng.lognormal(np.log(14) - 0.405, 0.9, users)), 1, 300).astype(int)
    picks = rng.choice(item_ids.size, size=int(sizes.sum()), p=p)
    counts = np.minimum(rng.zipf(2.0, size=picks.size), 500)
    out, pos = {}, 0
    for u, k in enumerate(sizes):
        views: dict[int, int] = {}
        for i, c in zip(picks[pos:pos + k].tolist(), counts[pos:pos + k].tolist(), strict=True):
            rid = int(item_ids[i])
            views[rid] = views.get(rid, 0) + c
        out[f"user-{u}"] = views
        pos += k
    return out, p


def _percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    a = np.asarray(values) * 1000
    return (f"p50 {np.percentile(a, 50):6.1f} ms  p95 {np.percentile(a, 95):6.1f} ms  "
            f"p99 {np.percentile(a, 99):6.1f} ms  max {a.max():7.1f} ms  (n={a.size})")


def _subscriber(port: int, prefix: str, ready, stop, out) -> None:
    """First notification time per (kind, user): kind 'recs' (updater) or 'views' (consumer)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    head = f"__keyspace@0__:{prefix}:{LANG}:"
    pubsub.psubscribe(head + "recs:*", head + "views:*")
    seen: dict[tuple[str, str], float] = {}
    ready.set()
    while not stop.is_set():
        msg = pubsub.get_message(timeout=0.1)
        if msg is None:
            continue
        now = time.time()
        if msg["data"] not in (b"zadd", b"hincrby"):
            continue
        kind, _, user = msg["channel"].decode()[len(head):].partition(":")
        seen.setdefault((kind, user), now)
    out.put(seen)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen([sys.executable, "-m", "recs.cli", *args], stdout=fh,
                            stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()
    return proc.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backlog", type=int, default=100_000, help="pending users to clear")
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--factors", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=500, help="the updater's --batch-size")
    ap.add_argument("--rate", type=float, default=1000.0, help="events per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the steady phase")
    ap.add_argument("--batch-timeout", type=float, default=0.02,
                    help="the consumer's --batch-timeout for the latency phase")
    ap.add_argument("--poll-interval", type=float, default=0.02,
                    help="the updater's --poll-interval")
    ap.add_argument("--consumer-batch-size", type=int, default=20,
                    help="the consumer's --batch-size for the latency phase")
    ap.add_argument("--fetch-wait-ms", type=int, default=10,
                    help="librdkafka fetch.wait.max.ms for the consumer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kafka", default="apache,tansu",
                    help="brokers to run on, one after the other in this run: apache "
                         "(Apache Kafka, jars from tests/kafka/pom.xml), tansu (default both)")
    args = ap.parse_args()
    for kind in [k.strip() for k in args.kafka.split(",") if k.strip()]:
        if kind not in ("apache", "tansu"):
            ap.error(f"--kafka: unknown broker {kind!r}")
        run(args, kind)
    return 0


def run(args, kind: str) -> None:
    """Both phases on one broker (``kind``), from a fresh stack."""
    from confluent_kafka import Producer

    from recs.localstack import LocalStack
    from store.counts import Counts
    from store.keys import Keys
    from store.publish import Publisher
    from store.published_model import read_published_items
    from store.user_reads import read_views, views_arrays
    from trainer.models.als import PublishedALS

    rng = np.random.default_rng(args.seed)
    keys = Keys()
    work = Path(tempfile.mkdtemp(prefix="recs-bench-update-"))
    stack = LocalStack(work, external_kafka=os.environ.get("RECS_KAFKA_BOOTSTRAP_SERVERS"),
                       kafka=kind)
    stack.start()
    print(f"--- broker: {stack.broker.kind}", flush=True)
    procs: list[subprocess.Popen] = []
    try:
        client = stack.redis.client()
        item_ids = np.unique(rng.integers(100_000, 4_000_000_000, size=2 * args.items))
        item_ids = np.sort(rng.permutation(item_ids)[:args.items])
        item_factors = (rng.standard_normal((args.items, args.factors)) * 0.1).astype(np.float32)
        Publisher(client, keys, LANG).switch(
            {"factors": args.factors, "regularization": 0.01, "alpha": 50.0, "scaling": "log",
             "iterations": 50, "users": args.backlog, "items": args.items, "nnz": 0},
            item_ids, item_factors)

        # -- 1. backlog ------------------------------------------------------------------
        t = time.perf_counter()
        history, popularity = _history(rng, item_ids, args.backlog)
        counts = Counts(client, keys)
        names = list(history)
        for s in range(0, len(names), 2000):
            counts.apply(keys.offsets("bench", "setup"), [],
                         {LANG: {u: history[u] for u in names[s:s + 2000]}})
        nnz = sum(len(v) for v in history.values())
        print(f"setup: {args.backlog} users, {nnz} user-resource pairs "
              f"({nnz / args.backlog:.1f} per user), model {args.items} x {args.factors}, "
              f"written in {time.perf_counter() - t:.1f} s")

        published = read_published_items(client, keys, LANG)
        model = PublishedALS(published.item_ids, published.item_factors, 0.01, 50.0, "log",
                             published.version)
        sample = names[:5000]
        raws = read_views(client, keys, LANG, sample)
        t = time.perf_counter()
        for s in range(0, len(sample), args.batch_size):
            views = model.views_from_arrays(*views_arrays(raws[s:s + args.batch_size]))
            model.recommend(model.fold_in(views), views, 20)
        math_rate = len(sample) / (time.perf_counter() - t)

        updater = _start(["update", "--redis-url", stack.redis.url, "--metrics-port", "0",
                          "--batch-size", str(args.batch_size), "--poll-interval",
                          str(args.poll_interval)], work / "update.log")
        procs.append(updater)
        dirty = keys.dirty(LANG)
        total = client.zcard(dirty)
        while (left := client.zcard(dirty)) == total:
            if updater.poll() is not None:
                raise RuntimeError(f"recs update exited: see {work / 'update.log'}")
            time.sleep(0.005)
        t1, first_left = time.perf_counter(), left
        while client.zcard(dirty) > 0:
            time.sleep(0.02)
        seconds = time.perf_counter() - t1
        rate = first_left / seconds
        print(f"backlog: {first_left} users cleared in {seconds:.2f} s by one updater "
              f"(batch {args.batch_size}) = {rate:,.0f} users/s (target >= 5,000)")
        print(f"  baseline, fold-in + top-20 math alone in-process: {math_rate:,.0f} users/s; "
              f"updater / math = {rate / math_rate:.2f}")

        # -- 2. latency ------------------------------------------------------------------
        client.config_set("notify-keyspace-events", "Khz")
        topic = "bench-views"
        stack.broker.create_topics({topic: 4, f"{topic}.dlq": 1})
        consumer = _start(
            ["consume", "--redis-url", stack.redis.url, "--kafka-bootstrap-servers",
             stack.broker.bootstrap, "--topic", topic, "--dlq-topic", f"{topic}.dlq",
             "--group", "bench", "--metrics-port", "0", "--batch-timeout",
             str(args.batch_timeout), "--batch-size", str(args.consumer_batch_size),
             "--kafka-config", "session.timeout.ms=6000",
             "--kafka-config", "heartbeat.interval.ms=500", "--kafka-config",
             f"fetch.wait.max.ms={args.fetch_wait_ms}"], work / "consume.log")
        procs.append(consumer)
        producer = Producer({"bootstrap.servers": stack.broker.bootstrap, "linger.ms": 1,
                             "acks": "all"})
        import orjson

        # Warm-up: wait until the consumer has joined and writes (one probe event).
        probe = int(item_ids[0])
        deadline = time.monotonic() + 60
        while not client.exists(keys.views(LANG, "probe")):
            producer.produce(topic, key=b"probe", value=orjson.dumps(
                {"user_id": "probe", "resource_id": probe, "lang": LANG}))
            producer.flush(5)
            time.sleep(0.5)
            if time.monotonic() > deadline or consumer.poll() is not None:
                raise RuntimeError(f"the consumer never wrote: see {work / 'consume.log'}")
        time.sleep(1.0)

        ctx = mp.get_context("spawn")
        ready, stop, out = ctx.Event(), ctx.Event(), ctx.Queue()
        sub = ctx.Process(target=_subscriber, args=(stack.redis.port, keys.prefix, ready,
                                                    stop, out))
        sub.start()
        ready.wait(30)

        n_events = int(args.rate * args.seconds)
        existing = iter(rng.permutation(names).tolist())
        picks = rng.choice(item_ids, size=n_events, p=popularity)
        produced: dict[str, float] = {}
        fresh_users: set[str] = set()
        start = time.perf_counter()
        for i in range(n_events):
            target = start + i / args.rate
            while (now := time.perf_counter()) < target:
                time.sleep(min(0.001, target - now))
            if i % 2 == 0:
                user = f"fresh-{i}"
                fresh_users.add(user)
            else:
                user = next(existing)
            event = orjson.dumps({"user_id": user, "resource_id": int(picks[i]), "lang": LANG})
            produced[user] = time.time()
            producer.produce(topic, key=user.encode(), value=event)
            producer.poll(0)
        achieved = n_events / (time.perf_counter() - start)
        producer.flush(30)
        del producer  # its threads would keep calling the broker stopped below
        # Let the last events through (2 s at least, 15 s at most), then collect the times.
        settle = time.monotonic()
        while time.monotonic() - settle < 15 and (
                time.monotonic() - settle < 2 or client.zcard(dirty) > 0):
            time.sleep(0.05)
        stop.set()
        seen = out.get(timeout=30)
        sub.join(10)

        lat = {"fresh": [], "existing": []}
        base = {"fresh": [], "existing": []}
        missing = 0
        for user, t0 in produced.items():
            group = "fresh" if user in fresh_users else "existing"
            t_recs, t_views = seen.get(("recs", user)), seen.get(("views", user))
            if t_recs is None or t_recs < t0:
                missing += 1
                continue
            lat[group].append(t_recs - t0)
            if t_views is not None and t_views >= t0:
                base[group].append(t_views - t0)
        every = lat["fresh"] + lat["existing"]
        counted = base["fresh"] + base["existing"]
        print(f"latency: {n_events} events at {achieved:,.0f}/s for {args.seconds:.0f} s, "
              f"consumer --batch-timeout {args.batch_timeout} --batch-size "
              f"{args.consumer_batch_size}, updater --poll-interval "
              f"{args.poll_interval}, fetch.wait.max.ms {args.fetch_wait_ms}")
        print(f"  produce -> recs, all      : {_percentiles(every)}")
        print(f"  produce -> recs, fresh    : {_percentiles(lat['fresh'])}")
        print(f"  produce -> recs, existing : {_percentiles(lat['existing'])}")
        print(f"  baseline produce -> counts: {_percentiles(counted)}")
        if every and counted:
            p95, b95 = np.percentile(every, 95), np.percentile(counted, 95)
            print(f"  p95 recs / p95 counts = {p95 / b95:.2f}; the updater adds "
                  f"{(statistics.median(every) - statistics.median(counted)) * 1000:.1f} ms "
                  f"at the median; p95 {p95 * 1000:.1f} ms (target < 200 ms)")
        print(f"  users without a recs write after their event: {missing}")
        for proc in procs:
            code = _stop(proc)
            if code != 0:
                print(f"  warning: {proc.args[3]} exited with {code}")
        procs.clear()
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        stack.stop()
    shutil.rmtree(work, ignore_errors=True)  # kept (with the logs) when something failed


if __name__ == "__main__":
    sys.exit(main())
