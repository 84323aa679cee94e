"""Soak: the chaos test (tests/test_chaos.py) for as long as you like, at 500 events/s.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/soak.py --minutes 10 [--seed 1]

Two ``recs consume``, two ``recs update`` and ``recs train --every 20`` run on an embedded
redis-server (AOF on) and Apache Kafka broker (``--kafka tansu`` for Tansu,
``RECS_KAFKA_BOOTSTRAP_SERVERS`` for another broker) while a producer sends ``--rate``
events per second (three languages, new and existing users, 3% invalid). For
``--minutes`` (less the last ``--quiet`` seconds) a seeded random fault every few seconds:
SIGKILL of one service (restarted), SIGKILL of redis-server (AOF restart), Redis restored
from an older snapshot, the broker frozen, and on Apache Kafka the broker SIGKILLed and
restarted from its data. Then the stream drains, a retrain on the final counts goes live,
the updaters empty their queue, every service stops (SIGTERM, exit 0), and the checks of
tests/chaos_checks.py run: exact counts, every invalid event dead-lettered, every list
whole and solved against the live model, an empty queue and no lock. Prints each fault,
each check and the figures; exits 1 if a check fails (the run's folder, with every
service's log, is then kept).

Figures, as ratios against the same run: the producer's achieved rate over ``--rate``; the
time from the producer's stop to final counts, to a live final model, to an empty queue.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from recs.localstack import Broker, RedisServer  # noqa: E402
from recs.localstack_kafka import KafkaCluster  # noqa: E402
from tests.chaos_run import ChaosConfig, run_chaos, summary  # noqa: E402


def _pair(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0, help="length of the run with events")
    p.add_argument("--rate", type=float, default=500.0, help="events per second")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--fault-every", type=_pair, default=(3.0, 8.0), metavar="LOW,HIGH",
                   help="seconds between faults, drawn uniformly (default 3,8)")
    p.add_argument("--freeze", type=_pair, default=(1.0, 8.0), metavar="LOW,HIGH",
                   help="seconds the broker stays frozen (default 1,8; above the 6 s "
                        "session timeout the group rebalances)")
    p.add_argument("--quiet", type=float, default=15.0,
                   help="seconds of events without faults at the end of --minutes")
    p.add_argument("--train-every", type=float, default=20.0)
    p.add_argument("--keep", action="store_true", help="keep the run's folder even if it passes")
    p.add_argument("--kafka", choices=("apache", "tansu"), default="apache",
                   help="the broker: Apache Kafka (jars from tests/kafka/pom.xml; its faults "
                        "include SIGKILLs of the broker, restarted from its data) or Tansu")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    config = ChaosConfig(seed=args.seed, rate=args.rate,
                         fault_seconds=max(5.0, args.minutes * 60 - args.quiet),
                         fault_every=args.fault_every, freeze_seconds=args.freeze,
                         quiet_seconds=args.quiet, train_every=args.train_every)
    workdir = Path(tempfile.mkdtemp(prefix="recs-soak-"))
    redis_server = RedisServer(workdir / "redis").start()
    external = os.environ.get("RECS_KAFKA_BOOTSTRAP_SERVERS")
    if args.kafka == "apache" and not external:
        broker = KafkaCluster(workdir / "kafka").start()
    else:
        broker = Broker(workdir / "broker", external=external).start()
    started = time.monotonic()
    print(f"soak: {args.minutes} min at {args.rate:g} events/s on {broker.kind}, "
          f"seed {args.seed}, load average {_load()}, folder {workdir}", flush=True)
    ok = False
    try:
        outcome = run_chaos(config, redis_server, broker, workdir,
                            say=lambda line: print(line, flush=True))
        ok = outcome.ok
        elapsed = outcome.produce_seconds
        print("\n".join(summary(outcome)))
        print(f"producer: {outcome.sent / elapsed:.1f} events/s over {elapsed:.0f} s = "
              f"{outcome.sent / elapsed / args.rate:.3f}x the target rate")
        print(f"after the producer stopped: counts final in {outcome.phases['drain']} s, a "
              f"retrain on them live {outcome.phases['final_retrain']} s later, the updaters' "
              f"queue empty {outcome.phases['updater_drain']} s later")
    finally:
        broker.stop()
        redis_server.stop()
        print(f"{'PASSED' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s; "
              f"load average {_load()}", flush=True)
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs and data kept in {workdir}")
    return 0 if ok else 1


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
