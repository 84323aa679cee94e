"""``recs serve`` on a Redis Cluster against one Redis, same data, same run.

    .venv/bin/python benchmarks/serve_cluster.py [--rounds 4] [--seconds 8] [--threads 8]

Starts one redis-server and a loopback cluster (tests/redis_cluster.py: 3 primaries + 3
replicas), writes the same data into both with each layout's key names (2,000 users with a
personal list, 2,000 without one, who get trending, 500 similar lists, details), and runs
the real ``recs serve`` command on each. Then, in rounds alternating which goes first,
``--threads`` client threads with keep-alive connections ask for a user's recommendations
(3 in 4 requests: half personal, half the trending fallback) or a similar list for
``--seconds``. Printed per round and as medians: requests/s and the latency percentiles.
On a cluster a personal list is two reads (the user's group, then the item side) and the
trending fallback three; on one Redis each is one script call.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recs.localstack import RedisServer  # noqa: E402
from recs.localstack_process import free_port, wait_until  # noqa: E402
from store.cluster_keys import layout  # noqa: E402
from store.connection import connect  # noqa: E402
from store.read import encode_details  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402
from tests.test_cluster_update import LANG, hide, write_model  # noqa: E402

USERS, ITEMS = 2000, 2000


def write(url: str) -> None:
    client = connect(url)
    keys = layout(client)
    write_model(client, keys, "bench")
    client.sadd(keys.langs, LANG)
    rng = random.Random(1)
    pipe = client.pipeline(transaction=False)
    for u in range(USERS):
        pipe.zadd(keys.recs(LANG, f"p{u}"), {str(rng.randrange(1, ITEMS)): rng.random()
                                              for _ in range(20)})
        pipe.hset(keys.views(LANG, f"t{u}"), mapping={str(rng.randrange(1, 100)): 1
                                                      for _ in range(3)})
    for r in range(1, 500):
        pipe.zadd(keys.similar(LANG, r), {str(rng.randrange(1, ITEMS)): rng.random()
                                          for _ in range(20)})
    pipe.zadd(keys.trending(LANG), {str(r): 1000.0 - r for r in range(1, 101)})
    pipe.hset(keys.resources(LANG), mapping={
        str(r): encode_details({"title": f"Resource {r}"}) for r in range(ITEMS)})
    pipe.execute()
    hide(client, keys, 7)
    client.close()


def serve(url: str, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "recs.cli", "serve", "--redis-url", url,
                             "--host", "127.0.0.1", "--port", str(port),
                             "--log-level", "WARNING"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False

    wait_until(up, 30, f"recs serve on {url}", interval=0.2)
    return proc, port


def hammer(port: int, seconds: float, threads: int
           ) -> tuple[float, list[float], dict[int, int]]:
    latencies: list[float] = []
    errors: dict[int, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        while time.monotonic() < stop:
            pick = rng.random()
            if pick < 0.375:
                path = f"/v1/{LANG}/users/p{rng.randrange(USERS)}/recommendations"
            elif pick < 0.75:
                path = f"/v1/{LANG}/users/t{rng.randrange(USERS)}/recommendations"
            else:
                path = f"/v1/{LANG}/resources/{rng.randrange(1, 500)}/similar"
            t0 = time.perf_counter()
            conn.request("GET", path)
            resp = conn.getresponse()
            resp.read()
            mine.append(time.perf_counter() - t0)
            if resp.status != 200:
                with lock:
                    errors[resp.status] = errors.get(resp.status, 0) + 1
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return len(latencies) / (time.monotonic() - started), sorted(latencies), errors


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serve-cluster-"))
    single = RedisServer(work / "redis").start()
    cluster = RedisCluster(work / "cluster").start()
    procs = []
    try:
        ports = {}
        for name, url in (("one", single.url), ("cluster", cluster.url)):
            write(url)
            proc, ports[name] = serve(url, work / f"serve-{name}.log")
            procs.append(proc)
        results: dict[str, list[tuple[float, float, float, float]]] = {"one": [], "cluster": []}
        for i in range(args.rounds):
            order = ["one", "cluster"] if i % 2 == 0 else ["cluster", "one"]
            for name in order:
                rate, lat, errors = hammer(ports[name], args.seconds, args.threads)
                p = [lat[int(q * (len(lat) - 1))] * 1000 for q in (0.5, 0.9, 0.99)]
                results[name].append((rate, *p))
                print(f"round {i} {name:8s} {rate:7.0f} req/s  p50 {p[0]:.2f} ms  "
                      f"p90 {p[1]:.2f} ms  p99 {p[2]:.2f} ms  non-200 {errors or 'none'}",
                      flush=True)
        med = {n: [statistics.median(r[j] for r in rs) for j in range(4)]
               for n, rs in results.items()}
        for name, (rate, p50, p90, p99) in med.items():
            print(f"median {name:8s} {rate:7.0f} req/s  p50 {p50:.2f} ms  p90 {p90:.2f} ms  "
                  f"p99 {p99:.2f} ms")
        print(f"cluster / one: throughput {med['cluster'][0] / med['one'][0]:.2f}, "
              f"p50 latency {med['cluster'][1] / med['one'][1]:.2f}")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        cluster.stop()
        single.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
