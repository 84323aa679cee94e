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

Then (issue 23), each row with Redis's longest command while it ran (SLOWLOG, commands
over 0.1 ms):
- many connections: ``--connections`` (150 and 1,000) keep-alive connections at once from
  an asyncio client, each sending its next request as soon as the last one answers; the
  ratio is to the saturation row's throughput over HTTP. Every answer must be a 200 (a
  full Redis pool waits, it is not an outage);
- title search over a catalogue of ``--catalogue`` resources (2M): the load time of
  ``recs resources load``'s write path (details and title index), the index's size, and
  searches of one and two words at saturation on ``--threads`` connections, against the
  similar-list look-up in the same run; and what the old search path cost: one HGETALL of
  the catalogue, timed by Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import multiprocessing as mp
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

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


async def _connection(host: str, port: int, paths: list[str], seed: int, deadline: float,
                      out: list) -> None:
    """One keep-alive connection sending its next request as soon as the last answers."""
    rng = random.Random(seed)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            writer.write(f"GET {rng.choice(paths)} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length[1]) if length else 0)
            out.append((time.perf_counter() - sent, head[9:12] == b"200"))
            if b"connection: close" in head.lower():
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


def many(target: str, paths: list[str], connections: int, seconds: float) -> dict:
    """Run in the load process: ``connections`` at once (asyncio), flat out for ``seconds``."""
    host, port = target.rsplit(":", 1)
    out: list = []

    async def run() -> None:
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*[_connection(host, int(port), paths, i, deadline, out)
                               for i in range(connections)])

    started = time.perf_counter()
    asyncio.run(run())
    return _summary(out, time.perf_counter() - started)


def _summary(results: list, elapsed: float) -> dict:
    lat = [r[0] for r in results]
    return {"requests": len(lat), "per_second": len(lat) / elapsed,
            "errors": sum(1 for r in results if not r[1]),
            "p50_ms": 1000 * statistics.median(lat), "p99_ms": 1000 * _percentile(lat, 0.99)}


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
    return _summary([r for rs in results for r in rs], time.perf_counter() - started)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resources", type=int, default=4000)
    ap.add_argument("--users", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--connections", default="150,1000",
                    help="comma-separated connection counts for the many-connection rows")
    ap.add_argument("--catalogue", type=int, default=2_000_000,
                    help="resources in the title-search catalogue (0: no title rows)")
    args = ap.parse_args()

    from recs.localstack import RedisServer
    from recs.localstack_process import RecsProcess, free_port

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
        more = _many_and_titles(args, f"127.0.0.1:{port}", client, ids, users)
    finally:
        server.stop()
        client.close()
        redis_server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    _report(args, rows)
    _report_more(args, rows, more)
    return 0


def _many_and_titles(args, target: str, client, ids, users) -> dict:
    """The issue 23 rows: many connections at once, then the title search over a large
    catalogue; each with Redis's longest command while it ran."""
    import slowlog

    from store.aclient import LIST_WITH_DETAILS_LUA

    scripts = {"LIST_WITH_DETAILS": LIST_WITH_DETAILS_LUA}
    rng = random.Random(3)
    paths = [f"/v1/{LANG}/resources/{rng.choice(ids)}/similar?n=10" if rng.random() < 0.5
             else f"/v1/{LANG}/users/{rng.choice(users)}/recommendations?n=10"
             for _ in range(2000)]
    out: dict = {"many": {}}
    with mp.get_context("spawn").Pool(1) as pool:
        for n in [int(c) for c in args.connections.split(",") if c.strip()]:
            slowlog.start(client)
            row = pool.apply(many, (target, paths, n, args.seconds))
            out["many"][n] = {**row, "longest": slowlog.longest(client, scripts)}
        if args.catalogue:
            out["titles"] = _titles(args, target, client, ids, pool, scripts)
    return out


WORDS = 30_000
"""Distinct words the synthetic catalogue's titles are made of (Zipf-like use)."""


def _vocabulary(rng: random.Random) -> list[str]:
    syllables = ["ba", "ce", "di", "fo", "gu", "ha", "ji", "ko", "lu", "ma", "ne", "pi", "qua",
                 "ro", "si", "tu", "ve", "wa", "xi", "yo", "ze", "str", "ph", "th", "ion"]
    words = set()
    while len(words) < WORDS:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def _titles(args, target: str, client, ids, pool, scripts) -> dict:
    """Load a catalogue of ``--catalogue`` resources (the first ``ids`` among them), then
    search it over HTTP; baselines: similar-list look-ups, and one HGETALL of it."""
    import slowlog

    from store.keys import Keys
    from store.resources import replace_details

    rng = random.Random(5)
    vocab = _vocabulary(rng)
    cumulative = list(itertools.accumulate(1 / (r + 1) for r in range(len(vocab))))
    rest = iter(range(4_000_000_001, 4_000_000_001 + args.catalogue))
    every = list(ids) + [next(rest) for _ in range(args.catalogue - len(ids))]
    titles = {rid: " ".join(rng.choices(vocab, cum_weights=cumulative, k=rng.randint(3, 7)))
              + f" {n % 997}" for n, rid in enumerate(every)}
    t = time.perf_counter()
    held = replace_details(client, Keys(), LANG, ((rid, {"title": title, "folder": "F",
                                                         "subject": "S", "tags": "a,b"})
                                                  for rid, title in titles.items()))
    loaded = time.perf_counter() - t
    sizes = {k: client.memory_usage(key, samples=0) for k, key in (
        ("details", Keys().resources(LANG)), ("index", Keys().titles(LANG)))}
    slowlog.start(client)
    client.hgetall(Keys().resources(LANG))
    hgetall = slowlog.longest(client)
    picks = rng.sample(list(titles.values()), 2000)
    one = [f"/v1/{LANG}/resources?q={quote(w.split()[0][:rng.randint(3, 6)])}" for w in picks]
    two = [f"/v1/{LANG}/resources?q={quote(' '.join(w.split()[1:3]))}" for w in picks]
    similar = [f"/v1/{LANG}/resources/{rng.choice(ids)}/similar?n=10" for _ in range(2000)]
    rows = {}
    for name, paths in (("similar (baseline)", similar), ("title, one word prefix", one),
                        ("title, two words", two)):
        slowlog.start(client)
        rows[name] = {**pool.apply(many, (target, paths, args.threads, args.seconds)),
                      "longest": slowlog.longest(client, scripts)}
    return {"resources": held, "load_seconds": loaded, "sizes": sizes, "hgetall": hgetall,
            "rows": rows}


def _report_more(args, rows: dict, more: dict) -> None:
    sat = rows[("saturation", "http")]
    print(f"\nmany connections at once (asyncio client, each flat out, {args.seconds:.0f} s); "
          "ratio: throughput / the saturation row's over HTTP")
    print(f"{'connections':<13}{'req/s':>9}{'ratio':>7}{'p50 ms':>9}{'p99 ms':>9}{'non-200':>9}"
          "  longest Redis command")
    for n, r in more["many"].items():
        print(f"{n:<13}{r['per_second']:>9.0f}{r['per_second'] / sat['per_second']:>7.2f}"
              f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{r['errors']:>9}  {r['longest']}")
    titles = more.get("titles")
    if not titles:
        return
    mib = {k: v / 2**20 for k, v in titles["sizes"].items()}
    print(f"\ntitle search over {titles['resources']:,} resources: loaded (details + index) in "
          f"{titles['load_seconds']:.1f} s; details {mib['details']:.0f} MiB, index "
          f"{mib['index']:.0f} MiB; the old path, one HGETALL of the catalogue: "
          f"{titles['hgetall']}")
    base = titles["rows"]["similar (baseline)"]
    print(f"{'look-up':<26}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 ratio':>10}"
          f"{'non-200':>9}  longest Redis command")
    for name, r in titles["rows"].items():
        print(f"{name:<26}{r['per_second']:>9.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
              f"{r['p99_ms'] / base['p99_ms']:>10.2f}{r['errors']:>9}  {r['longest']}")


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
