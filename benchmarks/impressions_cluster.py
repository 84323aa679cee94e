"""``recs impressions``' writer on a Redis Cluster vs one Redis, same run, same events: the
impression consumer's batches (2000 events, 2 partitions) written by the single-Redis
writer's store (``store.impressions.Impressions.write``, one call per batch) into a plain
redis-server and by ``consumers.impression_streams.ImpressionStreamWriter`` (the item side
per language, then every touched slot group, pipelined per primary) into
tests/redis_cluster.py's loopback cluster (3 primaries + 3 replicas); both on this machine.
No Kafka: parsing and the writes only.

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/impressions_cluster.py

Prints one JSON line per store: impressions per second, batches, and on the cluster the
script calls sent.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from consumers.batch import OrderedBatch, PartitionState
from consumers.dead_letters import DeadLetters
from consumers.impression_events import parse_impression
from consumers.impression_streams import ImpressionStreamBatch, ImpressionStreamWriter
from consumers.metrics import ConsumerMetrics
from recs.localstack import RedisServer
from store.cluster_keys import layout
from store.connection import connect
from store.impressions import Impressions
from tests.clicks_model import workload
from tests.redis_cluster import RedisCluster
from tests.test_cluster_ingest import Msg

BATCH = 2000


def _batches(events: list[dict]) -> list[list[Msg]]:
    msgs = [Msg(i % 2, i // 2, e) for i, e in enumerate(events)]
    return [msgs[s:s + BATCH] for s in range(0, len(msgs), BATCH)]


def measure_one(url: str, batches: list) -> dict:
    client = connect(url)
    keys = layout(client)
    store, owned = Impressions(client, keys), {0: PartitionState(None), 1: PartitionState(None)}
    t0 = time.perf_counter()
    for msgs in batches:
        batch = OrderedBatch(parse_impression)
        batch.owned = owned
        batch.add(msgs)
        guards = batch.guards()
        assert not store.write(keys.offsets("bench", "t"), guards, batch.payload()).refused
        batch.written(guards)
    seconds = time.perf_counter() - t0
    client.close()
    return {"seconds": round(seconds, 2), "batches": len(batches), "script_calls": len(batches)}


def measure_cluster(url: str, batches: list) -> dict:
    client = connect(url)
    keys = layout(client)
    metrics = ConsumerMetrics()
    writer = ImpressionStreamWriter(Impressions(client, keys), keys, "bench", "t",
                                    DeadLetters(None, "t.dlq", metrics, 0.01, 0.1), metrics,
                                    0.01, 0.1)
    owned = {0: PartitionState(None), 1: PartitionState(None)}
    t0 = time.perf_counter()
    for msgs in batches:
        batch = ImpressionStreamBatch()
        batch.owned = owned
        batch.add(msgs)
        guards, applied = writer.write(batch, time.sleep)
        assert not applied.refused
        batch.written(guards)
        writer.advance(batch.owned)
    seconds = time.perf_counter() - t0
    client.close()
    return {"seconds": round(seconds, 2), "batches": len(batches),
            "script_calls": writer.calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=40_000)
    parser.add_argument("--users", type=int, default=5_000)
    args = parser.parse_args()
    imps, _views = workload(seed=3, users=args.users, impressions=args.impressions)
    batches = _batches(imps)
    work = Path(tempfile.mkdtemp(prefix="impressions-cluster-"))
    single, cluster = RedisServer(work / "one").start(), RedisCluster(work / "cluster").start()
    try:
        for name, url, measure in (("one", single.url, measure_one),
                                   ("cluster", cluster.url, measure_cluster)):
            out = measure(url, batches)
            rate = round(len(imps) / out["seconds"]) if out["seconds"] else None
            print(json.dumps({"store": name, "impressions": len(imps),
                              "impressions_per_s": rate, **out}), flush=True)
    finally:
        cluster.stop()
        single.stop()


if __name__ == "__main__":
    main()
