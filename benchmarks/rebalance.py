"""How long a rebalance stalls ingest, per group protocol, on Apache Kafka.

    .venv/bin/python benchmarks/rebalance.py [--rate 2000] [--steady 6] [--rounds 1]

For each protocol (the classic one with eager ``range`` assignment, the classic one with
``cooperative-sticky``, and KIP-848's ``group.protocol=consumer``): a fresh topic of 6
partitions on one Apache Kafka node (recs.localstack.KafkaCluster) and a redis-server; a
producer sends ``--rate`` events per second throughout; ``recs consume`` members go
2 -> 3 (one joins) -> 1 (two leave on SIGTERM), ``--steady`` seconds between changes. A
sampler reads the offsets Redis holds (what the consumers have applied) every 10 ms.

Figures per change, from the samples in the window from the change until the group has
settled plus ``--steady`` seconds: the longest time a partition's applied offset did not
move (the worst partition's stall) and the longest time no partition moved at all (the
whole group's stall). The baseline, in the same run: the same figures over the steady
window before the first change (batching alone: a batch is written every ~0.05-0.1 s).
The counts are checked exact at the end of each protocol's run.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recs.localstack import RedisServer  # noqa: E402
from recs.localstack_kafka import KafkaCluster  # noqa: E402
from recs.localstack_process import RecsProcess, wait_until  # noqa: E402
from store.keys import Keys  # noqa: E402
from tests.conftest import recs_env  # noqa: E402
from tests.test_consume import Stream, assigned, make_events  # noqa: E402

PARTITIONS = 6
CLASSIC = {"session.timeout.ms": "6000", "heartbeat.interval.ms": "500"}
PROTOCOLS = {
    "classic, range (eager)": {**CLASSIC, "partition.assignment.strategy": "range"},
    "classic, cooperative-sticky": {**CLASSIC,
                                    "partition.assignment.strategy": "cooperative-sticky"},
    "consumer (KIP-848)": {"group.protocol": "consumer"},
}
KEYS = Keys()


class Sampler(threading.Thread):
    """(time, {partition: applied offset}) every 10 ms from Redis."""

    def __init__(self, redis_server: RedisServer, env: dict) -> None:
        super().__init__(daemon=True)
        self.client = redis_server.client(decode_responses=True)
        self.key = KEYS.offsets(env["RECS_GROUP"], env["RECS_TOPIC"])
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            held = {int(p): int(o) for p, o in self.client.hgetall(self.key).items()}
            self.samples.append((time.monotonic(), held))


class Load(threading.Thread):
    """``rate`` events per second, sent in chunks of 1/20 s, until stopped."""

    def __init__(self, stream: Stream, rate: float) -> None:
        super().__init__(daemon=True)
        self.stream, self.rate = stream, rate
        self.done = threading.Event()

    def run(self) -> None:
        chunk, n, start = max(1, int(self.rate / 20)), 0, time.monotonic()
        while not self.done.is_set():
            self.stream.send(make_events(chunk, seed=n, users=500, items=200))
            n += 1
            self.done.wait(max(0.0, start + n * chunk / self.rate - time.monotonic()))


def stalls(samples, t0: float, t1: float) -> tuple[float, float]:
    """(worst partition's longest time without progress, longest time with none at all)
    over the samples in [t0, t1]."""
    window = [(t, held) for t, held in samples if t0 <= t <= t1]
    if len(window) < 2:
        return float("nan"), float("nan")
    worst, group = 0.0, 0.0
    last_any = window[0][0]
    last = dict.fromkeys(range(PARTITIONS), window[0][0])
    prev = window[0][1]
    for t, held in window[1:]:
        moved = [p for p in range(PARTITIONS) if held.get(p) != prev.get(p)]
        for p in moved:
            worst = max(worst, t - last[p])
            last[p] = t
        if moved:
            group = max(group, t - last_any)
            last_any = t
        prev = held
    worst = max([worst] + [t1 - last[p] for p in last])
    return worst, max(group, t1 - last_any)


def one_protocol(name: str, config: dict, args, work: Path) -> None:
    kafka = KafkaCluster(work / "kafka").start()
    redis_server = RedisServer(work / "redis").start()
    members: list[RecsProcess] = []
    try:
        topic = f"views-{uuid.uuid4().hex[:8]}"
        kafka.create_topics({topic: PARTITIONS, f"{topic}.dlq": 1})
        env = {**recs_env(redis_server.url, kafka.bootstrap, topic, f"{topic}.dlq", config),
               "RECS_BATCH_TIMEOUT": "0.05"}
        stream = Stream(env, redis_server)
        sampler, load = Sampler(redis_server, env), Load(stream, args.rate)

        def start() -> RecsProcess:
            proc = RecsProcess(["consume"], env, work / f"consume-{len(members)}.log").start()
            members.append(proc)
            return proc

        def settled(*procs) -> float:
            wait_until(lambda: sorted(p for m in procs for p in assigned(m))
                       == list(range(PARTITIONS)) and all(assigned(m) for m in procs),
                       120, "the group settled")
            return time.monotonic()

        a, b = start(), start()
        settled(a, b)
        sampler.start()
        load.start()
        time.sleep(args.steady)  # the steady window before the first change (the baseline)
        t_join = time.monotonic()
        c = start()
        s_join = settled(a, b, c)
        time.sleep(args.steady)
        t_leave = time.monotonic()
        for proc in (a, b):
            proc.send(signal.SIGTERM)
        s_leave = settled(c)
        time.sleep(args.steady)
        load.done.set()
        load.join(60)
        stream.wait_converged(timeout=120)
        sampler.done.set()
        sampler.join(5)
        base = stalls(sampler.samples, t_join - args.steady, t_join)
        join = stalls(sampler.samples, t_join, s_join + args.steady)
        leave = stalls(sampler.samples, t_leave, s_leave + args.steady)
        print(f"{name:28s} baseline {base[0] * 1000:6.0f} / {base[1] * 1000:5.0f} ms | "
              f"2->3: settled in {s_join - t_join:5.2f} s, stall {join[0] * 1000:6.0f} / "
              f"{join[1] * 1000:5.0f} ms | 3->1: settled in {s_leave - t_leave:5.2f} s, "
              f"stall {leave[0] * 1000:6.0f} / {leave[1] * 1000:5.0f} ms | counts exact",
              flush=True)
    finally:
        for proc in members:
            proc.stop(30)
        redis_server.stop()
        kafka.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=2000.0, help="events per second")
    ap.add_argument("--steady", type=float, default=6.0,
                    help="seconds of steady load before and after each change")
    ap.add_argument("--rounds", type=int, default=1, help="runs of every protocol")
    args = ap.parse_args()
    print(f"{args.rate:,.0f} events/s over {PARTITIONS} partitions; figures: worst "
          "partition's stall / whole group's stall")
    for r in range(args.rounds):
        for name, config in PROTOCOLS.items():
            with tempfile.TemporaryDirectory(prefix=f"recs-rebalance-{r}-") as work:
                one_protocol(name, config, args, Path(work))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
