"""The whole system on a Redis Cluster under seeded faults (tests/test_chaos_cluster.py).

The services of tests/chaos_run.py: two ``recs consume --clicks``, ``recs impressions``, two
``recs update``, one ``recs train --every``, and ``recs serve``, as real subprocesses against the
loopback cluster (3 primaries + 3 replicas, tests/redis_cluster.py) and the session's
broker, while the producer sends a steady rate of events. Every few seconds a seeded fault:
SIGKILL of a service (restarted), SIGKILL of a primary (the cluster promotes its replica;
the old primary comes back as a replica of it: the writes it had not replicated are lost,
which is the cluster's rollback), a reshard (500 slots and their keys moved between
primaries), the broker frozen or (Apache Kafka) SIGKILLed, ``recs hide`` of a popular
resource or ``recs unhide`` of a hidden one, and ``recs forget`` of a user (the producer
sends that user nothing afterwards). A prober asks ``recs serve`` for lists all along: every
answer is 200, or 503 while a primary is down; never a 500.

Then the end of tests/chaos_run.py (drain, a retrain on the final counts, the updaters'
queue empty, every service stopped cleanly) and the checks of tests/chaos_checks.py with the
cluster's key names, plus: a resource hidden at the end is in no list and has none; a
forgotten user has no key left; the impression and click counters are exactly what the
click rule gives the delivered impressions and views (tests/chaos_clicks.py)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import redis

from recs.localstack import Broker
from recs.localstack_process import free_port, wait_until
from store.cluster_keys import layout
from store.connection import connect
from store.keys import Keys
from tests.chaos_checks import Check, Expected, check_all, final_seq
from tests.chaos_clicks import check_clicks
from tests.chaos_run import (
    ChaosConfig,
    Faults,
    Feed,
    Outcome,
    Services,
    Workload,
    _timed,
    _wait,
    _watch,
    read_dead_letters,
    start_all,
)
from tests.conftest import KAFKA_TEST_CONFIG as KAFKA_CONFIG
from tests.redis_cluster import RedisCluster

CLUSTER_FAULTS = {"kill_service": 2, "kill_primary": 2, "reshard": 1, "freeze_broker": 1,
                  "hide": 1, "forget": 1}
"""The kinds of fault on a cluster and their weights (hide and forget are operations, drawn
like faults so that they land at seeded moments among them)."""


def cluster_fault_kinds(broker) -> dict[str, int]:
    if hasattr(broker, "kill") and hasattr(broker, "restart"):
        return {**CLUSTER_FAULTS, "kill_broker": 1}
    return dict(CLUSTER_FAULTS)


class ClusterServices(Services):
    """tests/chaos_run.py's services (both consumers with ``--clicks``, the impression
    consumer), plus ``recs serve`` on a fixed port (a restart binds it again)."""

    def __init__(self, env: dict[str, str], logs: Path, config: ChaosConfig, model_dir: Path,
                 port: int) -> None:
        super().__init__(env, logs, config, model_dir)
        self.args["serve"] = ["serve", "--host", "127.0.0.1", "--port", str(port)]


class Prober(threading.Thread):
    """Asks ``recs serve`` for a user's list and a similar list every 50 ms; counts the
    answers by status (0: no answer, the server being restarted)."""

    def __init__(self, base: str, workload: Workload) -> None:
        super().__init__(name="chaos-prober", daemon=True)
        self.base, self.workload = base, workload
        self.statuses: Counter = Counter()
        self._stop_event = threading.Event()

    def run(self) -> None:
        rng = random.Random(7)
        while not self._stop_event.wait(0.05):
            pool = self.workload.users["en"]
            user = pool[rng.randrange(len(pool))] if pool else "nobody"
            rid = self.workload.ids["en"][rng.randrange(5)]
            for path in (f"/v1/en/users/{user}/recommendations?n=5",
                         f"/v1/en/resources/{rid}/similar?n=5"):
                self.statuses[self._get(path)] += 1

    def _get(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


class Operations:
    """``recs hide`` / ``unhide`` / ``forget`` as real commands, and what they change in the
    expected state."""

    def __init__(self, env: dict[str, str], feed: Feed, workload: Workload, client,
                 keys: Keys, rng: random.Random) -> None:
        self.env, self.feed, self.workload = env, feed, workload
        self.client, self.keys, self.rng = client, keys, rng
        self.lines: list[str] = []

    def run(self, *argv: str) -> None:
        done = subprocess.run([sys.executable, "-m", "recs.cli", *argv], env=self.env,
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"recs {' '.join(argv)} exited {done.returncode}: "
                               f"{done.stderr[-1500:]}")

    def hide(self) -> str:
        hidden = self.feed.expected.hidden["en"]
        if hidden and self.rng.random() < 0.4:
            rid = self.rng.choice(sorted(hidden))
            self.run("unhide", str(rid), "--lang", "en")
            hidden.discard(rid)
            return f"recs unhide {rid}"
        rid = self.workload.ids["en"][self.rng.randrange(1, 8)]
        self.run("hide", str(rid), "--lang", "en", "--reason", "chaos")
        hidden.add(rid)
        return f"recs hide {rid}"

    def forget(self) -> str:
        """Retire a user with views, wait until every event sent for them is counted, then
        forget them."""
        expected = self.feed.expected
        lang = "en"
        candidates = sorted(u for (lg, u) in list(expected.views) if lg == lang
                            and u not in self.workload.retired)
        if not candidates:
            return "no user to forget yet"
        user = self.rng.choice(candidates)
        self.workload.retired.add(user)
        sent = self.feed.sent
        wait_until(lambda: self.feed.acked >= sent, 120, "deliveries up to the retirement")
        want = {str(r): str(n) for r, n in expected.views[(lang, user)].items()}
        views = self.keys.views(lang, user)
        wait_until(lambda: _hash(self.client, views) == want, 120,
                   f"{user}'s views counted before the forget")
        self.run("forget", user, "--lang", lang)
        expected.forget(lang, user)
        return f"recs forget {user} ({sum(map(int, want.values()))} views)"


def _hash(client, key: str) -> dict[str, str] | None:
    try:
        return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
    except redis.RedisError:
        return None


class ClusterFaults(Faults):
    """tests/chaos_run.py's faults where a cluster has them, and the primary SIGKILL."""

    def __init__(self, rng: random.Random, config: ChaosConfig, services: Services,
                 cluster: RedisCluster, broker: Broker, ops: Operations) -> None:
        super().__init__(rng, config, services, None, broker, cluster_fault_kinds(broker))
        self.cluster, self.ops = cluster, ops

    def snapshot(self) -> None:
        """No snapshot rollbacks on a cluster: a failover is its rollback."""

    def kill_primary(self) -> str:
        victim = self.rng.choice(sorted(self.cluster.primaries(), key=lambda n: n.port))
        victim.kill()
        started = time.monotonic()
        wait_until(lambda: len(self.cluster.primaries()) == 3 and _cluster_ok(self.cluster),
                   60, "a replica promoted in place of the killed primary", interval=0.2)
        promoted = time.monotonic() - started
        victim.start()
        try:
            wait_until(self.cluster.formed, 120, "the old primary back as a replica",
                       interval=0.2)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; the nodes: {self.cluster.describe()}") from None
        return (f"SIGKILL primary :{victim.port}, replica promoted in {promoted:.1f} s, "
                "the old primary back as its replica")

    def reshard(self) -> str:
        """Move 500 slots (and their keys) between two primaries while everything runs:
        scripts meet ASK, TRYAGAIN and MOVED."""
        source, target = self.rng.sample(sorted(self.cluster.primary_ids()), 2)
        started = time.monotonic()
        self.cluster.reshard(source, target, 500)
        return (f"reshard of 500 slots :{source} -> :{target} in "
                f"{time.monotonic() - started:.1f} s")

    def hide(self) -> str:
        return self.ops.hide()

    def forget(self) -> str:
        return self.ops.forget()


def _cluster_ok(cluster: RedisCluster) -> bool:
    for node in cluster.primaries():
        client = node.client(decode_responses=True)
        try:
            if client.cluster("info").get("cluster_state") != "ok":
                return False
        except redis.RedisError:
            return False
        finally:
            client.close()
    return True


def run_cluster_chaos(config: ChaosConfig, cluster: RedisCluster, broker: Broker,
                      workdir: Path, say: Callable[[str], None] = lambda line: None
                      ) -> tuple[Outcome, Counter]:
    """One chaos run on the cluster; the outcome and the prober's statuses."""
    topic = f"chaos-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}.dlq"
    broker.create_topics({topic: config.partitions, dlq: 1, f"{topic}-imp": config.partitions,
                          f"{topic}-imp.dlq": 1})
    port = free_port()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1",
           "RECS_REDIS_URL": cluster.url, "RECS_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
           "RECS_TOPIC": topic, "RECS_DLQ_TOPIC": dlq, "RECS_GROUP": f"g-{topic}",
           "RECS_KAFKA_CONFIG": ",".join(f"{k}={v}" for k, v in KAFKA_CONFIG.items()),
           "RECS_METRICS_PORT": "0", "RECS_BATCH_TIMEOUT": "0.1",
           "RECS_OFFSET_CHECK_INTERVAL": "1", "RECS_REDIS_RETRY_MAX": "1",
           "RECS_IMPRESSIONS_TOPIC": f"{topic}-imp", "RECS_IMPRESSIONS_DLQ_TOPIC":
           f"{topic}-imp.dlq", "RECS_IMPRESSIONS_GROUP": f"gi-{topic}"}
    client = connect(cluster.url)
    keys = layout(client)
    services = ClusterServices(env, workdir / "logs", config, workdir / "models", port)
    workload = Workload(config)
    feed = Feed(broker.bootstrap, topic, workload, config.rate,
                idempotent="kill_broker" in cluster_fault_kinds(broker),
                impressions_topic=f"{topic}-imp")
    ops = Operations(env, feed, workload, client, keys, random.Random(config.seed + 2))
    faults = ClusterFaults(random.Random(config.seed + 1), config, services, cluster, broker,
                           ops)
    prober = Prober(f"http://127.0.0.1:{port}", workload)
    phases: dict[str, float] = {}
    try:
        start_all(services, feed)
        prober.start()
        _faults(config, faults, services, say, phases)
        _settle(config, feed, services, client, keys, env, say, phases)
        prober.stop()
        dlq_values = read_dead_letters(broker.bootstrap, dlq)
        checks = check_all(client, feed.expected, dlq_values, workdir / "models",
                           config.settings, keys)
        checks.append(check_forgotten(client, keys, feed.expected))
        checks.append(check_clicks(client, feed.expected.impressions,
                                   feed.expected.view_events, feed.expected.langs(), keys))
    finally:
        broker.resume()
        feed.stop()
        prober.stop()
        services.kill_all()
        client.close()
    outcome = Outcome(checks, feed.sent, feed.seconds, feed.expected, faults.done,
                      services.restarts, phases)
    return outcome, prober.statuses


def _faults(config: ChaosConfig, faults: ClusterFaults, services: Services,
            say: Callable[[str], None], phases: dict[str, float]) -> None:
    started = time.monotonic()
    end = started + config.fault_seconds
    while time.monotonic() < end or faults.first_left > 0:
        _watch(services, faults.rng.uniform(*config.fault_every))
        say(f"t={time.monotonic() - started:6.1f}s  fault: {faults.inject()}")
    _timed(phases, "faults", started)
    _watch(services, config.quiet_seconds)


def _settle(config: ChaosConfig, feed: Feed, services: Services, client, keys: Keys,
            env: dict[str, str], say: Callable[[str], None], phases: dict[str, float]) -> None:
    """tests/chaos_run.py's ending with the cluster's progress: every stream's offsets at
    the end of its partition (the restart point is their minimum)."""
    t = time.monotonic()
    feed.finish()
    ends = {p: o for p, o in feed.ends.items()}
    _wait(services, lambda: restart_points(client, keys, env) == ends, 180,
          f"every stream's progress reaches the end of its partition {ends}")
    _timed(phases, "drain", t)
    say(f"drained: {feed.sent} events sent, counts final after {phases['drain']} s")
    t = time.monotonic()
    _wait(services, lambda: _final_models(client, keys), 3 * config.train_every + 120,
          "a retrain on the final counts is live for every language")
    services.stop("train")
    _timed(phases, "final_retrain", t)
    t = time.monotonic()
    _wait(services, lambda: _queue_empty(client, keys), 120, "the updaters' queue is empty")
    _timed(phases, "updater_drain", t)
    t = time.monotonic()
    for name in ("consume-0", "consume-1", "update-0", "update-1", "serve"):
        services.stop(name)
    _timed(phases, "stop", t)


def restart_points(client, keys: Keys, env: dict[str, str]) -> dict[int, int]:
    """Per partition, the minimum held offset over every stream (item side and every slot
    group of every language): where a consumer would start."""
    group, topic = env["RECS_GROUP"], env["RECS_TOPIC"]
    pipe = client.pipeline(transaction=False)
    for lang in sorted(m.decode() for m in client.smembers(keys.langs)):
        pipe.hgetall(keys.item_offsets(lang, group, topic))
        for g in keys.slot_groups():
            pipe.hgetall(g.group_offsets(lang, group, topic))
    out: dict[int, int] = {}
    for held in pipe.execute():
        for p, o in held.items():
            out[int(p)] = min(out.get(int(p), int(o)), int(o))
    return out


def _final_models(client, keys: Keys) -> bool:
    langs = [m.decode() for m in client.smembers(keys.langs)]
    return bool(langs) and all(
        (client.hget(keys.model(lang), "seq") or b"").decode() == final_seq(client, keys, lang)
        for lang in langs)


def _queue_empty(client, keys: Keys) -> bool:
    pipe = client.pipeline(transaction=False)
    for lang in sorted(m.decode() for m in client.smembers(keys.langs)):
        for g in keys.slot_groups():
            pipe.zcard(g.dirty(lang))
            pipe.zcard(g.claims(lang))
    return not any(pipe.execute())


def check_forgotten(client, keys: Keys, expected: Expected) -> Check:
    check = Check("forgotten users have no key left")
    for lang, user in sorted(expected.forgotten):
        for name in (keys.views(lang, user), keys.factors(lang, user), keys.recs(lang, user)):
            if client.exists(name):
                check.fail(f"{name} exists after the forget")
        group = keys.for_user(user)
        if client.sismember(group.users(lang), user) or \
                client.sismember(group.published_users(lang), user):
            check.fail(f"{lang} {user} still in users/published_users")
    check.detail = f"{len(expected.forgotten)} users forgotten"
    return check
