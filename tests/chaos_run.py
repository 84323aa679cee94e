"""The whole system under seeded faults: for tests/test_chaos.py and benchmarks/soak.py.

Two ``recs consume``, two ``recs update`` and one ``recs train --every`` run as real
subprocesses against a real redis-server (AOF on) and the session's broker, while a producer
thread sends a steady rate of events: several languages, new and existing users, a share of
invalid events. Every few seconds a seeded random fault (:class:`Faults`): SIGKILL of one
service (restarted), SIGKILL of redis-server (AOF restart), Redis restored from an older
snapshot, the broker frozen (SIGSTOP) and thawed, or (Apache Kafka, whose log is on disk)
the broker SIGKILLed and started again from its data. A service that exits on its own is a
failure (its log tail is raised).

Then the end, in an order that makes every invariant of tests/chaos_checks.py a statement
about a settled system: the faults stop; the producer runs a little longer, stops and
flushes; the offsets in Redis reach the end of every partition (counts final); a retrain
trained on those final counts (model ``seq`` = the language's final ``seq``) is live for
every language, which also replaces anything a snapshot rollback brought back (older lists,
an older model); the trainer is stopped (SIGTERM, exit 0) so no run holds a lock; the
updaters drain their queue; every service is stopped (SIGTERM, exit 0); the dead-letter
topic is read to a marker. Only then are the checks run, on a quiescent Redis.

What the producer had delivered (acks=all, delivery reports) is the reference: the counts
must equal exactly that, per user and per resource.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import redis
from confluent_kafka import Consumer, Producer, TopicPartition

from recs.localstack import Broker, RedisServer
from recs.localstack_process import RecsProcess, wait_until
from store.keys import Keys
from tests.chaos_checks import Check, Expected, Settings, check_all
from tests.chaos_clicks import Impressions as ChaosImpressions
from tests.chaos_clicks import check_clicks
from tests.conftest import KAFKA_TEST_CONFIG as KAFKA_CONFIG

KEYS = Keys()
LANGS = {"en": 0.6, "es": 0.3, "pt": 0.1}
"""Languages and their share of the traffic."""
FAULTS = {"kill_service": 2, "kill_redis": 1, "restore_redis": 1, "freeze_broker": 1}
"""The kinds of fault and their weights (five services share the first)."""


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run. The defaults are the test's (about a minute); the soak scales them."""

    seed: int = 1
    """Seeds the events and the faults (their timing still depends on the machine)."""
    rate: float = 200.0
    """Events per second sent by the producer (valid and invalid)."""
    fault_seconds: float = 28.0
    """Length of the phase with faults."""
    fault_every: tuple[float, float] = (1.5, 3.0)
    """Seconds between two faults, drawn uniformly."""
    freeze_seconds: tuple[float, float] = (1.0, 3.0)
    """How long the broker stays frozen."""
    quiet_seconds: float = 3.0
    """Events keep coming this long after the last fault, before the producer stops."""
    train_every: float = 10.0
    """``recs train --every``: also bounds the wait for the final retrain."""
    invalid_share: float = 0.03
    """Share of the events that are invalid (five kinds)."""
    new_user_share: float = 0.15
    """Share of the valid events from a user never seen before."""
    resources: int = 150
    """Resources per language (Zipf popularity: the tail falls under min_item_views)."""
    partitions: int = 4
    """Partitions of the views topic (two consumers share them)."""
    settings: Settings = field(default_factory=Settings)
    """Trainer and updater settings the checks need too (top-n, filters)."""


# -- the events ------------------------------------------------------------------------------


class Workload:
    """Seeded events: (key, value bytes, (lang, user, resource, count) or None if invalid).
    Users are new (a share of events) or existing ones (earlier users more active)."""

    def __init__(self, config: ChaosConfig) -> None:
        self.rng = random.Random(config.seed)
        self.config = config
        self.users: dict[str, list[str]] = {lang: [] for lang in LANGS}
        ids = list(range(1, config.resources + 1))
        weights = [1.0 / (rank ** 1.1) for rank in ids]
        self.cum = list(itertools.accumulate(weights))
        self.ids = {lang: self.rng.sample(ids, len(ids)) for lang in LANGS}
        self.serial = 0
        self.retired: set[str] = set()
        """Users sent nothing more (forgotten, tests/chaos_cluster.py): one drawn gets a new
        user's event instead."""

    def next(self) -> tuple[bytes, bytes, tuple | None]:
        rng, self.serial = self.rng, self.serial + 1
        if rng.random() < self.config.invalid_share:
            return self._invalid()
        lang = rng.choices(list(LANGS), weights=list(LANGS.values()))[0]
        pool = self.users[lang]
        user = pool[int(len(pool) * rng.random() ** 2)] if pool else None
        if user is None or user in self.retired or rng.random() < self.config.new_user_share:
            pool.append(f"{lang}-{len(pool)}-{rng.getrandbits(32):08x}")
            user = pool[-1]
        rid = rng.choices(self.ids[lang], cum_weights=self.cum)[0]
        event: dict = {"user_id": user, "resource_id": rid, "lang": lang, "ts": self.serial}
        roll = rng.random()
        if roll < 0.1:
            event["resource_id"] = str(rid)  # a decimal string is the same resource
        elif roll < 0.35:
            event["count"] = rng.randrange(1, 6)
        return user.encode(), orjson.dumps(event), (lang, user, rid, event.get("count", 1))

    def _invalid(self) -> tuple[bytes, bytes, None]:
        """An invalid event of one of several kinds, unique bytes (``n``) so the DLQ check
        can tell every one apart."""
        n = self.serial
        ok = {"user_id": f"bad-{n}", "resource_id": 5, "lang": "en", "n": n}
        kind = self.rng.randrange(5)
        if kind == 0:
            value = b"not json %d" % n
        else:
            change = ({"count": 0}, {"lang": "EN"}, {"resource_id": 0}, {"user_id": None})[kind - 1]
            value = orjson.dumps({k: v for k, v in {**ok, **change}.items() if v is not None})
        return b"bad-%d" % n, value, None


class Feed(threading.Thread):
    """The producer: ``rate`` events per second until :meth:`finish`; what the broker
    acknowledged becomes the expected state."""

    def __init__(self, bootstrap: str, topic: str, workload: Workload, rate: float,
                 idempotent: bool = False, impressions_topic: str = "") -> None:
        super().__init__(name="chaos-feed", daemon=True)
        self.bootstrap, self.topic, self.workload, self.rate = bootstrap, topic, workload, rate
        self.impressions_topic = impressions_topic
        self.impressions = ChaosImpressions(workload.config.seed)
        self.impression_ends: dict[int, int] = {}
        self.idempotent = idempotent
        self.expected = Expected()
        self.ends: dict[int, int] = {}
        self.acked = 0
        """Delivery reports received (delivered or failed)."""
        self.sent = 0
        self.seconds = 0.0
        """How long it produced."""
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def _delivered(self, valid, err, msg) -> None:
        self.acked += 1
        if err is not None:
            self.failures.append(str(err))
            return
        p = msg.partition()
        self.ends[p] = max(self.ends.get(p, 0), msg.offset() + 1)
        self.expected.add(valid, msg.value())

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # surfaces in finish(), not as a silent short count
            self.failures.append(f"the producer crashed: {exc!r}")

    def _run(self) -> None:
        # Idempotent: a send retried across a broker crash is written once, so what the
        # broker acknowledged is exactly what was sent (Tansu, never killed, needs none).
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                             "acks": "all", **({"enable.idempotence": True}
                                               if self.idempotent else {})})
        started = time.monotonic()
        while not self._stop_event.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while self.sent < due:
                key, value, valid = self.workload.next()
                self._produce(producer, key, value, valid)
                self.sent += 1
                shown = self.impressions.maybe(self.workload.serial, self.workload.users,
                                               self.workload.ids)
                if shown is not None and self.impressions_topic:
                    self._produce_impression(producer, *shown)
            producer.poll(0.01)
        self.seconds = time.monotonic() - started
        left = producer.flush(180)
        if left:
            self.failures.append(f"{left} events undelivered after 180 s")

    def _produce(self, producer: Producer, key: bytes, value: bytes, valid) -> None:
        def report(err, msg):
            self._delivered(valid, err, msg)
        while True:
            try:
                producer.produce(self.topic, value=value, key=key, on_delivery=report)
                return
            except BufferError:  # local queue full (a long freeze): wait for deliveries
                producer.poll(0.05)

    def _produce_impression(self, producer: Producer, key: bytes, value: bytes) -> None:
        def report(err, msg):
            if err is not None:
                self.failures.append(str(err))
                return
            p = msg.partition()
            self.impression_ends[p] = max(self.impression_ends.get(p, 0), msg.offset() + 1)
            self.expected.impressions.append(orjson.loads(msg.value()))
        while True:
            try:
                producer.produce(self.impressions_topic, value=value, key=key,
                                 on_delivery=report)
                return
            except BufferError:
                producer.poll(0.05)

    def stop(self) -> None:
        self._stop_event.set()

    def finish(self, timeout: float = 200) -> None:
        self.stop()
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError("the producer did not finish flushing")
        if self.failures:
            raise RuntimeError(f"{len(self.failures)} deliveries failed: {self.failures[:3]}")


# -- the services ----------------------------------------------------------------------------


class Services:
    """The five ``recs`` processes, each restartable under its name (logs append)."""

    def __init__(self, env: dict[str, str], logs: Path, config: ChaosConfig,
                 model_dir: Path) -> None:
        s = config.settings
        update = ["update", "--lease-seconds", str(s.lease_seconds), "--top-n", str(s.top_n),
                  "--batch-size", "200"]
        # ALS: the checks recompute every list from its factors (tests/chaos_checks.py).
        train = ["train", "--model", "als", "--every", str(config.train_every), "--model-dir",
                 str(model_dir), "--top-n", str(s.top_n), "--factors", str(s.factors),
                 "--iterations", str(s.iterations), "--min-item-views", str(s.min_item_views),
                 "--max-item-views", "0", "--min-user-views", str(s.min_user_views),
                 "--lock-ttl", str(s.lock_ttl), "--threads", "1", "--seed", "1"]
        consume = ["consume", "--clicks"]
        self.args = {"consume-0": consume, "consume-1": consume, "update-0": update,
                     "update-1": update, "train": train, "impressions": ["impressions"]}
        self.env, self.logs = env, logs
        self.procs: dict[str, RecsProcess] = {}
        self.restarts: Counter = Counter()
        self.stopped: list[RecsProcess] = []
        """Stopped for good at the end (no longer watched)."""

    def start(self, name: str) -> None:
        proc = RecsProcess(self.args[name], self.env, self.logs / f"{name}.log")
        self.procs[name] = proc.start()

    def kill(self, name: str) -> None:
        self.procs[name].check_alive(f"running as {name} until this fault")
        self.procs[name].kill()
        self.restarts[name] += 1

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            proc.check_alive(f"running as {name} in the chaos run")

    def stop(self, name: str, timeout: float = 60) -> None:
        """SIGTERM; the service must exit 0 (a clean stop) within ``timeout``."""
        proc = self.procs.pop(name)
        proc.check_alive(f"running as {name} before its stop")
        self.stopped.append(proc)
        code = proc.stop(timeout)
        if code != 0:
            tail = proc.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {code} on SIGTERM:\n{tail}")

    def kill_all(self) -> None:
        for proc in [*self.procs.values(), *self.stopped]:
            proc.kill()


# -- the faults ------------------------------------------------------------------------------


class Faults:
    """Seeded faults, one at a time; each returns a line saying what it did."""

    def __init__(self, rng: random.Random, config: ChaosConfig, services: Services,
                 redis_server: RedisServer, broker: Broker,
                 kinds: dict[str, int] | None = None) -> None:
        self.rng, self.config = rng, config
        self.services, self.redis, self.broker = services, redis_server, broker
        self.snapshots: list[Path] = []
        self._numbers = itertools.count()
        self.done: Counter = Counter()
        # First a round of every kind, with every service killed once, in a seeded order;
        # then seeded weighted picks. Services are killed in seeded rounds too.
        names = sorted(services.args)
        kinds = fault_kinds(broker) if kinds is None else kinds
        first = [k for k in kinds if k != "kill_service"] + ["kill_service"] * len(names)
        rng.shuffle(first)
        self.first_left = len(first)
        """Faults of the first round not yet injected."""
        pick = lambda: rng.choices(list(kinds), weights=list(kinds.values()))[0]  # noqa: E731
        self._schedule = itertools.chain(first, iter(pick, None))
        self._victims = itertools.chain.from_iterable(
            iter(lambda: rng.sample(names, len(names)), None))

    def snapshot(self) -> None:
        """Keep an RDB of now, so a later fault can roll Redis back to it."""
        self.snapshots.append(self.redis.snapshot(f"chaos-{next(self._numbers)}.rdb"))
        if len(self.snapshots) > 4:
            self.snapshots.pop(0).unlink()

    def inject(self) -> str:
        kind = next(self._schedule)
        self.done[kind] += 1
        self.first_left = max(0, self.first_left - 1)
        return getattr(self, kind)()

    def kill_service(self) -> str:
        name = next(self._victims)
        self.services.kill(name)
        pause = self.rng.uniform(0.1, 1.5)
        time.sleep(pause)
        self.services.start(name)
        return f"SIGKILL {name}, restarted after {pause:.1f} s"

    def kill_redis(self) -> str:
        self.redis.kill()
        pause = self.rng.uniform(0.1, 1.5)
        time.sleep(pause)
        self.redis.start()
        return f"SIGKILL redis-server, AOF restart after {pause:.1f} s"

    def restore_redis(self) -> str:
        snapshot = self.rng.choice(self.snapshots)
        age = time.time() - snapshot.stat().st_mtime
        self.redis.restore(snapshot)
        return f"redis-server restored from a snapshot {age:.1f} s old"

    def freeze_broker(self) -> str:
        pause = self.rng.uniform(*self.config.freeze_seconds)
        self.broker.pause()
        try:
            time.sleep(pause)
        finally:
            self.broker.resume()
        return f"broker frozen (SIGSTOP) for {pause:.1f} s"

    def kill_broker(self) -> str:
        """SIGKILL every node of a broker that keeps its log on disk, then start it again
        from its data (Apache Kafka only: Tansu's log is in memory)."""
        self.broker.kill()
        started = time.monotonic()
        self.broker.restart()
        return f"broker SIGKILLed, restarted from its data in {time.monotonic() - started:.1f} s"


def fault_kinds(broker) -> dict[str, int]:
    """FAULTS, plus broker SIGKILLs where the broker survives them (KafkaCluster)."""
    if hasattr(broker, "kill") and hasattr(broker, "restart"):
        return {**FAULTS, "kill_broker": 1}
    return dict(FAULTS)


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a chaos run did and what the checks found."""

    checks: list[Check]
    sent: int
    produce_seconds: float
    expected: Expected
    faults: Counter
    restarts: Counter
    phases: dict[str, float]
    """Seconds per phase (faults, drain, final retrain, updater drain, stop)."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def run_chaos(config: ChaosConfig, redis_server: RedisServer, broker: Broker, workdir: Path,
              say: Callable[[str], None] = lambda line: None) -> Outcome:
    """One chaos run on the given servers (the caller starts and stops them)."""
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    broker.create_topics({topic: config.partitions, dlq: 1, f"{topic}-imp": 2,
                          f"{topic}-imp.dlq": 1})
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "RECS_REDIS_URL": redis_server.url, "RECS_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
           "RECS_TOPIC": topic, "RECS_DLQ_TOPIC": dlq, "RECS_GROUP": f"g-{topic}",
           "RECS_KAFKA_CONFIG": ",".join(f"{k}={v}" for k, v in KAFKA_CONFIG.items()),
           "RECS_METRICS_PORT": "0", "RECS_BATCH_TIMEOUT": "0.1",
           "RECS_OFFSET_CHECK_INTERVAL": "1", "RECS_REDIS_RETRY_MAX": "1",
           "RECS_IMPRESSIONS_TOPIC": f"{topic}-imp", "RECS_IMPRESSIONS_DLQ_TOPIC":
           f"{topic}-imp.dlq", "RECS_IMPRESSIONS_GROUP": f"gi-{topic}"}
    services = Services(env, workdir / "logs", config, workdir / "models")
    feed = Feed(broker.bootstrap, topic, Workload(config), config.rate,
                idempotent="kill_broker" in fault_kinds(broker),
                impressions_topic=f"{topic}-imp")
    faults = Faults(random.Random(config.seed + 1), config, services, redis_server, broker)
    phases: dict[str, float] = {}
    try:
        start_all(services, feed)
        _fault_phase(config, faults, services, say, phases)
        _settle(config, feed, services, redis_server, env, say, phases)
        dlq_values = read_dead_letters(broker.bootstrap, dlq)
        client = redis_server.client()
        try:
            checks = check_all(client, feed.expected, dlq_values, workdir / "models",
                               config.settings)
            checks.append(check_clicks(client, feed.expected.impressions,
                                       feed.expected.view_events, feed.expected.langs()))
        finally:
            client.close()
    finally:
        broker.resume()
        feed.stop()
        services.kill_all()
    return Outcome(checks, feed.sent, feed.seconds, feed.expected, faults.done,
                   services.restarts, phases)


def start_all(services: Services, feed: Feed) -> None:
    """Every service, then the producer; returns once both consumers have partitions."""
    for name in services.args:
        services.start(name)
    feed.start()
    for name in ("consume-0", "consume-1"):
        services.procs[name].wait_for_log("partitions assigned", timeout=90)


def _timed(phases: dict[str, float], name: str, started: float) -> None:
    phases[name] = round(time.monotonic() - started, 1)


def _fault_phase(config: ChaosConfig, faults: Faults, services: Services,
                 say: Callable[[str], None], phases: dict[str, float]) -> None:
    """Faults every few seconds for ``fault_seconds``, and at least until the first round
    (every kind, every service killed once) is done, however slow the machine; services
    checked alive meanwhile."""
    started = time.monotonic()
    end = started + config.fault_seconds
    faults.snapshot()
    while time.monotonic() < end or faults.first_left > 0:
        _watch(services, faults.rng.uniform(*config.fault_every))
        say(f"t={time.monotonic() - started:6.1f}s  fault: {faults.inject()}")
        faults.snapshot()  # taken after the fault: a rollback goes back at least one interval
    _timed(phases, "faults", started)
    _watch(services, config.quiet_seconds)


def _watch(services: Services, seconds: float) -> None:
    """Wait ``seconds``, raising at once if a service exits on its own."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        services.check_alive()
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def _settle(config: ChaosConfig, feed: Feed, services: Services, redis_server: RedisServer,
            env: dict[str, str], say: Callable[[str], None], phases: dict[str, float]) -> None:
    """Stop the producer, then wait for: final counts, a retrain on them, an empty updater
    queue; then stop every service cleanly (see the module docstring for why this order)."""
    t = time.monotonic()
    feed.finish()
    client = redis_server.client(decode_responses=True)
    try:
        offsets_key = KEYS.offsets(env["RECS_GROUP"], env["RECS_TOPIC"])
        ends = {str(p): str(o) for p, o in feed.ends.items()}
        _wait(services, lambda: client.hgetall(offsets_key) == ends, 180,
              f"offsets in Redis reach the end of every partition {ends}")
        imp_key = KEYS.offsets(env["RECS_IMPRESSIONS_GROUP"], env["RECS_IMPRESSIONS_TOPIC"])
        imp_ends = {str(p): str(o) for p, o in feed.impression_ends.items()}
        _wait(services, lambda: client.hgetall(imp_key) == imp_ends, 180,
              f"impression offsets in Redis reach the end of every partition {imp_ends}")
        _timed(phases, "drain", t)
        say(f"drained: {feed.sent} events sent, counts final after {phases['drain']} s")
        t = time.monotonic()
        _wait(services, lambda: _final_models(client), 3 * config.train_every + 120,
              "a retrain on the final counts is live for every language")
        services.stop("train")
        _timed(phases, "final_retrain", t)
        t = time.monotonic()
        _wait(services, lambda: _queue_empty(client), 120, "the updaters' queue is empty")
        _timed(phases, "updater_drain", t)
        t = time.monotonic()
        for name in ("consume-0", "consume-1", "update-0", "update-1", "impressions"):
            services.stop(name)
        _timed(phases, "stop", t)
    finally:
        client.close()


def _wait(services: Services, predicate: Callable[[], bool], timeout: float, what: str) -> None:
    def ready() -> bool:
        services.check_alive()
        try:
            return predicate()
        except (OSError, redis.RedisError):
            return False
    wait_until(ready, timeout, what, interval=0.2)


def _final_models(client) -> bool:
    """Every language's live model was trained on its final counts (its seq is the
    language's seq now, and no batch applies any more)."""
    langs = client.smembers(KEYS.langs)
    return bool(langs) and all(
        client.hget(KEYS.model(lang), "seq") == (client.get(KEYS.seq(lang)) or "0")
        for lang in langs)


def _queue_empty(client) -> bool:
    return all(client.zcard(KEYS.dirty(lang)) == 0 and client.zcard(KEYS.claims(lang)) == 0
               for lang in client.smembers(KEYS.langs))


def read_dead_letters(bootstrap: str, dlq: str, timeout: float = 60) -> list[tuple]:
    """Every (value, error header) on the dead-letter topic. The consumers write dead
    letters before the offsets that cover them, and every offset is final, so a marker sent
    now lands after all of them."""
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(dlq, key=b"end", value=b"chaos-end-marker")
    if producer.flush(30):
        raise RuntimeError("could not write the dead-letter marker")
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{dlq}",
                       "enable.auto.commit": False, **KAFKA_CONFIG})
    reader.assign([TopicPartition(dlq, 0, 0)])
    got: list = []

    def to_marker() -> bool:
        got.extend(m for m in reader.consume(500, 0.2) if m.error() is None)
        return bool(got) and got[-1].value() == b"chaos-end-marker"
    try:
        wait_until(to_marker, timeout, "the dead-letter topic read up to the marker")
    finally:
        with contextlib.suppress(Exception):
            reader.close()
    return [(m.value(), dict(m.headers() or []).get("error")) for m in got[:-1]]


def summary(outcome: Outcome) -> list[str]:
    """Lines for people: what was sent, which faults, each check's result."""
    e = outcome.expected
    lines = [
        f"events sent {outcome.sent}: {e.valid_events} valid ({sum(e.total_views().values())} "
        f"views, {len(e.views)} users x languages), {len(e.invalid)} invalid",
        "faults: " + ", ".join(f"{k} x{v}" for k, v in sorted(outcome.faults.items())),
        "services killed: " + (", ".join(f"{k} x{v}" for k, v in sorted(outcome.restarts.items()))
                               or "none"),
        "phases (s): " + ", ".join(f"{k} {v}" for k, v in outcome.phases.items()),
    ]
    lines += [c.line() for c in outcome.checks]
    return lines

