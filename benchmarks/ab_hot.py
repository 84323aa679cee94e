"""Old vs new checkout: ``recs consume``'s hot path alone (the batch and its write over messages
already in memory, no broker), interleaved, on one redis-server started here.

    .venv/bin/python benchmarks/ab_hot.py --old /tmp/old [--new .] [--rounds 14] [--events 100000]

Each round runs one subprocess per checkout (that tree's code first on the path), alternating
which goes first. Each builds the same synthetic messages (heavy-tailed users and resources,
three languages, 30 % with a count), then times the batch code (``Batch.add`` +
``BatchWriter.write``) per batch of 5,000 (validation, aggregation, the guarded counts
script) and reads the script's server time from Redis ``INFO commandstats``. Printed: each
round, then the medians and new / old.
This separates the CPU cost of a change from the broker's fetch rate, which dominates
``benchmarks/ingest.py`` on a small machine.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class _Msg:
    __slots__ = ("_v", "_p", "_o")

    def __init__(self, v: bytes, p: int, o: int) -> None:
        self._v, self._p, self._o = v, p, o

    def error(self):
        return None

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes:
        return self._v

    def key(self):
        return None

    def headers(self):
        return None

    def topic(self) -> str:
        return "bench"


def one(url: str, n: int) -> None:
    """Child: this tree's hot path; prints 'events/s script_server_seconds'."""
    import orjson

    rnd = random.Random(11)
    msgs, offsets = [], [0, 0, 0, 0]
    for _ in range(n):
        p = rnd.randrange(4)
        event = {"user_id": f"user-{min(int(rnd.paretovariate(0.3)), 60000):06d}",
                 "resource_id": min(int(rnd.paretovariate(0.2)), 8000),
                 "lang": rnd.choice(["en"] * 6 + ["es"] * 3 + ["pt"]), "ts": 1764201600000}
        if rnd.random() < 0.3:
            event["count"] = rnd.randint(1, 5)
        msgs.append(_Msg(orjson.dumps(event), p, offsets[p]))
        offsets[p] += 1
    client, step = _hot_path(url)
    client.flushall()
    client.config_resetstat()
    start = time.perf_counter()
    for i in range(0, n, 5000):
        step(msgs[i:i + 5000])
    wall = time.perf_counter() - start
    stats = client.info("commandstats")
    print(f"{n / wall:.0f} {stats.get('cmdstat_evalsha', {}).get('usec', 0) / 1e6:.4f}")


def _hot_path(url: str):
    """(Redis client, one batch's step) of this tree: the batch and writer seam
    (consumers/batch.py, consumers/writer.py) where it exists, else the consumer's privates
    (checkouts before the split). No broker: librdkafka clients connect lazily and these
    are never polled."""
    from consumers.consume import ConsumerConfig, StreamConsumer

    cfg = ConsumerConfig(bootstrap_servers="127.0.0.1:1", topic="bench", redis_url=url,
                         group=f"g{time.time()}", batch_size=5000, metrics_port=0)
    consumer = StreamConsumer(cfg)
    try:
        from consumers.batch import PartitionState
    except ImportError:  # before the split
        from consumers.consume import _Partition
        consumer._commit = lambda asynchronous: None
        consumer._owned = {p: _Partition(None) for p in range(4)}

        def old_step(msgs: list) -> None:
            consumer._add(msgs)
            consumer._flush()
        return consumer.redis, old_step
    batch, writer = consumer.batch, consumer.writer
    batch.owned = {p: PartitionState(None) for p in range(4)}

    def step(msgs: list) -> None:
        batch.add(msgs)
        guards, _ = writer.write(batch, time.sleep)
        batch.written(guards)
    return consumer.redis, step


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", help="the other checkout")
    ap.add_argument("--new", default=".")
    ap.add_argument("--rounds", type=int, default=14)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: the Redis URL
    args = ap.parse_args()
    if args.one:
        one(args.one, args.events)
        return 0
    sys.path.insert(0, str(Path(args.new).resolve()))
    from recs.localstack import RedisServer

    trees = {"old": str(Path(args.old).resolve()), "new": str(Path(args.new).resolve())}
    server = RedisServer(Path(tempfile.mkdtemp()) / "redis").start()
    results: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
    print(f"start: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    try:
        for r in range(args.rounds):
            for which in (("old", "new") if r % 2 == 0 else ("new", "old")):
                out = subprocess.run(
                    [sys.executable, str(Path(__file__).resolve()), "--one", server.url,
                     "--events", str(args.events)], cwd=trees[which], capture_output=True,
                    text=True, check=True,
                    env={**os.environ, "PYTHONPATH": trees[which]}).stdout.split()
                results[which].append((float(out[0]), float(out[1])))
                print(f"round {r + 1} {which}: {out[0]} events/s, script {out[1]} s", flush=True)
    finally:
        server.stop()
    print(f"end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    med = {w: (statistics.median(x for x, _ in v), statistics.median(y for _, y in v))
           for w, v in results.items()}
    print(f"median events/s: old {med['old'][0]:,.0f}, new {med['new'][0]:,.0f}, "
          f"new / old = {med['new'][0] / med['old'][0]:.3f}")
    print(f"median script server time: old {med['old'][1]:.3f} s, new {med['new'][1]:.3f} s, "
          f"new / old = {med['new'][1] / med['old'][1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
