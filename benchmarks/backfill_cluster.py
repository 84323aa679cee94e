"""``recs backfill`` on a Redis Cluster vs one Redis, same run, same file: a generated views
CSV (``--rows`` distinct (user, resource) pairs, ~10 per user) loaded through
``consumers.backfill.backfill`` into a plain redis-server and into tests/redis_cluster.py's
loopback cluster (3 primaries + 3 replicas); both on this machine.

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/backfill_cluster.py

Prints one JSON line per store: seconds of the load (reading the CSV included, the same on
both), chunks, and on the cluster the script calls sent (item side + every slot group per
chunk).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from consumers import backfill_streams
from consumers.backfill import backfill
from recs.localstack import RedisServer
from store.cluster_keys import layout
from store.connection import connect
from tests.redis_cluster import RedisCluster


def write_views(path: Path, rows: int, seed: int = 5) -> Path:
    """``rows`` distinct (user, resource) pairs: users of ~10 resources out of 5,000."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, rows // 10, rows)
    items = rng.integers(1, 5001, rows)
    pairs = np.unique(np.stack([users, items], axis=1), axis=0)
    counts = rng.integers(1, 20, len(pairs))
    with open(path, "w") as fh:
        fh.write("user_id,resource_id,view_count\n")
        fh.writelines(f"user-{u},{i},{c}\n" for (u, i), c in zip(pairs, counts, strict=True))
    return path


def measure(url: str, path: Path) -> dict:
    client = connect(url)
    calls = []
    real = backfill_streams.ChunkStreams.write

    def counted(self, k, users):
        parked = real(self, k, users)
        calls.append(self.calls)
        return parked

    backfill_streams.ChunkStreams.write = counted
    try:
        t0 = time.perf_counter()
        result = backfill(client, layout(client), path, "en")
        seconds = time.perf_counter() - t0
    finally:
        backfill_streams.ChunkStreams.write = real
        client.close()
    return {"seconds": round(seconds, 2), "pairs": result.pairs, "chunks": result.chunks,
            "script_calls": calls[-1] if calls else result.chunks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backfill-cluster-"))
    path = write_views(work / "views.csv", args.rows)
    single, cluster = RedisServer(work / "one").start(), RedisCluster(work / "cluster").start()
    try:
        for name, url in (("one", single.url), ("cluster", cluster.url)):
            print(json.dumps({"store": name, **measure(url, path)}), flush=True)
    finally:
        cluster.stop()
        single.stop()


if __name__ == "__main__":
    main()
