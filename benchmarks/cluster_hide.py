"""A take-down on a Redis Cluster vs one Redis, same run: hide one resource held by many
published user lists (N users, laid out as tests/test_cluster_control.py's ``publish``),
then time the control step (item side + every slot group's ``group_hidden``) and the settle
(scan of every group's ``published_users``, refill per group) on each; then a forget of one
user and one of 100 users in one call (on a cluster the group step is WAITed for on each
node's replica before the counts are taken back).

    PYTHONPATH=. OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/cluster_hide.py --users 20000

Prints one JSON line per store: seconds of the control step, of the settle (find, refill)
and in all, the lists refilled, and seconds of the two forgets. The cluster is
tests/redis_cluster.py's (3 primaries + 3 replicas on loopback), the single node a plain
redis-server; both on this machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from recs.localstack import RedisServer
from store.cluster_keys import layout
from store.connection import connect
from store.control import Control
from store.control_op import ControlOp
from tests.redis_cluster import RedisCluster
from tests.test_cluster_control import LANG, _most_listed, publish, user_lists
from trainer.pipeline.takedown import settle

FORGETS = 100
"""Users forgotten in one call after the hide (their groups' step WAITed for on a cluster)."""


def measure(client, users: int) -> dict:
    keys = layout(client)
    publish(client, users)
    rid = _most_listed(user_lists(client, users))
    t0 = time.perf_counter()
    Control(client, keys).run([ControlOp("hide", str(rid), LANG, "bench")])
    t1 = time.perf_counter()
    report = settle(client, keys, LANG)
    t2 = time.perf_counter()
    Control(client, keys).run([ControlOp("forget", "user-1", LANG)])
    t3 = time.perf_counter()
    Control(client, keys).run([ControlOp("forget", f"user-{u}", LANG)
                               for u in range(2, 2 + FORGETS)])
    t4 = time.perf_counter()
    return {"control_s": round(t1 - t0, 4), "settle_s": round(t2 - t1, 3),
            "forget_one_s": round(t3 - t2, 4), f"forget_{FORGETS}_s": round(t4 - t3, 4),
            "find_s": report.seconds.get("find"), "refill_s": report.seconds.get("refill"),
            "total_s": round(t2 - t0, 3), "user_lists_refilled": report.users_refilled,
            "similar_refilled": report.similar_refilled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cluster-hide-"))
    single, cluster = RedisServer(work / "one").start(), RedisCluster(work / "cluster").start()
    try:
        for name, url in (("one", single.url), ("cluster", cluster.url)):
            client = connect(url)
            print(json.dumps({"store": name, "users": args.users, **measure(client, args.users)}),
                  flush=True)
            client.close()
    finally:
        cluster.stop()
        single.stop()


if __name__ == "__main__":
    main()
