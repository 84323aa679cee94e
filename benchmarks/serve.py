"""``recs serve``: latency and throughput over HTTP, against the same look-ups done directly
with redis-py.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/serve.py [--seconds 10 --rate 500]

Everything runs for real on loopback: a redis-server (recs.localstack, AOF on) holding
GoConqr-sized published lists (``--resources`` similar lists and ``--users`` recommendation
lists of 20, resource details for every resource), and ``recs serve`` as a subprocess (one
uvicorn worker, no token). The load comes from a SEPARATE process (so its CPU is not the
server's), with ``--threads`` keep-alive connections; each request asks for 10 items of a
random published list, half similar lists, half users' lists, with titles.

After one second of warm-up per path (not counted), two modes, each for ``--seconds``:
- fixed rate: ``--rate`` requests/s in total, open loop (each thread has its own schedule
  and a late request's latency counts from when it was due, so a stall is not hidden);
- saturation: every thread sends its next request as soon as the last one answers.

The baseline, in the same run, from the same load process: the same look-ups with
``store.client.RecsClient`` (``similar``/``recommend`` and then ``details``: the same two
Redis round trips the server makes), at the same fixed rate and at saturation. The ratios
say what the HTTP layer costs. The machine's load average is printed next to the figures.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LANG = "en"


def publish(client, resources: int, users: int, seed: int = 1) -> tuple[list[int], list[str]]:
    """Write similar lists, users' lists, a model hash and resource details; return the ids."""
    from store.keys import Keys
    from store.resources import replace_details

    keys, rng = Keys(), random.Random(seed)
    ids = rng.sample(range(1, 4_000_000_000), resources)
    people = [f"user-{i:07d}-{rng.getrandbits(32):08x}" for i in range(users)]
    pipe = client.pipeline(transaction=False)
    for n, rid in enumerate(ids):
        pipe.zadd(keys.similar(LANG, rid), {str(r): rng.random() for r in rng.sample(ids, 20)})
        if n % 500 == 499:
            pipe.execute()
    for n, user in enumerate(people):
        pipe.zadd(keys.recs(LANG, user), {str(r): rng.random() * 3 for r in rng.sample(ids, 20)})
        if n % 500 == 499:
            pipe.execute()
    pipe.hset(keys.model(LANG), mapping={"version": "bench", "trained_at": "2026-12-01T00:00:00Z",
                                         "factors": "40", "items": str(resources),
                                         "users": str(users)})
    pipe.execute()
    replace_details(client, keys, LANG, ((rid, {
        "title": f"Resource {rid}: flashcards on a subject", "folder": "Folder",
        "subject": "Subject", "tags": "a,b"}) for rid in ids))
    return ids, people


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def _worker(kind: str, target: str, ids, users, interval: float | None, seconds: float,
            seed: int, out: list) -> None:
    """One connection's loop; appends (latency seconds, ok) per request to ``out``."""
    rng = random.Random(seed)
    if kind == "http":
        host, port = target.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)

        def one(similar: bool, key) -> bool:
            path = (f"/v1/{LANG}/resources/{key}/similar?n=10" if similar
                    else f"/v1/{LANG}/users/{key}/recommendations?n=10")
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
    else:
        from store.client import RecsClient

        reader = RecsClient(target)

        def one(similar: bool, key) -> bool:
            rows = (reader.similar(LANG, key, 10) if similar
                    else reader.recommend(LANG, key, 10))
            reader.details(LANG, [r.resource_id for r in rows])
            return bool(rows)

    start = time.perf_counter()
    due = start + rng.random() * (interval or 0)
    while due - start < seconds:
        if interval is not None:
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        sent_at = due if interval is not None else time.perf_counter()
        similar = rng.random() < 0.5
        ok = one(similar, rng.choice(ids) if similar else rng.choice(users))
        out.append((time.perf_counter() - sent_at, ok))
        due = due + interval if interval is not None else time.perf_counter()


def load(kind: str, target: str, ids, users, rate: float | None, seconds: float,
         threads: int) -> dict:
    """Run in the load process: ``threads`` connections, fixed total ``rate`` or flat out."""
    results: list[list] = [[] for _ in range(threads)]
    interval = threads / rate if rate else None
    workers = [threading.Thread(target=_worker, args=(kind, target, ids, users, interval,
                                                      seconds, i, results[i]))
               for i in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    lat = [r[0] for rs in results for r in rs]
    return {"requests": len(lat), "per_second": len(lat) / elapsed,
            "errors": sum(1 for rs in results for r in rs if not r[1]),
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * _percentile(lat, 0.99)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resources", type=int, default=4000)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()

    from recs.localstack import RecsProcess, RedisServer, free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    redis_server = RedisServer(tmp / "redis").start()
    client = redis_server.client()
    ids, users = publish(client, args.resources, args.users)
    port = free_port()
    env = {**os.environ, "RECS_REDIS_URL": redis_server.url, "RECS_PORT": str(port),
           "RECS_LOG_LEVEL": "WARNING"}
    server = RecsProcess(["serve"], env, tmp / "serve.log").start()
    try:
        _wait_http(port, server)
        rows = _measure(args, f"127.0.0.1:{port}", redis_server.url, ids, users)
    finally:
        server.stop()
        client.close()
        redis_server.stop()
    _report(args, rows)
    return 0


def _wait_http(port: int, server) -> None:
    deadline = time.monotonic() + 30
    while True:
        server.check_alive("starting")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _measure(args, http_target: str, redis_url: str, ids, users) -> dict:
    rows = {}
    with mp.get_context("spawn").Pool(1) as pool:  # the separate load process
        for kind, target in (("http", http_target), ("direct", redis_url)):  # warm up
            pool.apply(load, (kind, target, ids, users, None, 1.0, args.threads))
        for mode, rate in (("fixed", args.rate), ("saturation", None)):
            for kind, target in (("http", http_target), ("direct", redis_url)):
                rows[(mode, kind)] = pool.apply(load, (kind, target, ids, users, rate,
                                                       args.seconds, args.threads))
    return rows


def _report(args, rows: dict) -> None:
    print(f"recs serve vs direct redis-py: {args.resources} similar lists, {args.users} users' "
          f"lists, n=10 with titles; {args.threads} connections, {args.seconds:.0f} s per "
          "row; load from a separate process")
    print(f"{'mode':<22}{'path':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for (mode, kind), r in rows.items():
        label = f"fixed {args.rate:.0f} req/s" if mode == "fixed" else "saturation"
        print(f"{label:<22}{kind:<9}{r['per_second']:>9.0f}{r['p50_ms']:>9.2f}"
              f"{r['p99_ms']:>9.2f}{r['errors']:>8}")
    fixed_h, fixed_d = rows[("fixed", "http")], rows[("fixed", "direct")]
    sat_h, sat_d = rows[("saturation", "http")], rows[("saturation", "direct")]
    print(f"ratios http/direct: p99 at {args.rate:.0f} req/s "
          f"{fixed_h['p99_ms'] / fixed_d['p99_ms']:.2f}x, p50 "
          f"{fixed_h['p50_ms'] / fixed_d['p50_ms']:.2f}x; saturation throughput "
          f"{sat_h['per_second'] / sat_d['per_second']:.2f}x")
    verdict = "met" if fixed_h["p99_ms"] < 5 else "MISSED"
    print(f"target p99 < 5 ms at {args.rate:.0f} req/s over HTTP: {verdict} "
          f"({fixed_h['p99_ms']:.2f} ms)")
    print("load average (1, 5, 15 min):", " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    sys.exit(main())
