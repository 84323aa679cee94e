"""The compose file's ``sentinel`` and ``cluster`` profiles, checked by tests/test_compose.py
(``compose_problems``): what tests/test_sentinel.py and tests/redis_cluster.py run on
loopback, as containers with health checks, AOF and passwords."""

from __future__ import annotations

import re

from tests.test_compose import (
    ALWAYS_RESTART,
    _argv,
    _depends_on,
    _flag_value,
    _has_healthcheck,
)


def _in_profile(services: dict, profile: str) -> dict[str, dict]:
    return {n: s for n, s in services.items() if profile in (s.get("profiles") or [])}


def _text(service: dict) -> str:
    return " ".join(_argv(service.get("entrypoint")) + _argv(service.get("command")))


def profile_problems(services: dict) -> list[str]:
    """The ``sentinel`` and ``cluster`` profiles: what tests/test_sentinel.py and
    tests/redis_cluster.py run on loopback, as containers with health checks."""
    return (_sentinel_problems(_in_profile(services, "sentinel"))
            + _cluster_problems(_in_profile(services, "cluster")))


def _redis_server_problems(name: str, service: dict) -> list[str]:
    argv = _argv(service.get("command"))
    problems = [] if _has_healthcheck(service) else [f"{name}: no health check"]
    if _flag_value(argv, "--appendonly") != "yes":
        problems.append(f"{name}: redis-server needs --appendonly yes")
    if not _flag_value(argv, "--requirepass") or not _flag_value(argv, "--masterauth"):
        problems.append(f"{name}: needs --requirepass and --masterauth (a replica, or a "
                        "primary demoted to one, authenticates to its primary)")
    return problems


def _sentinel_problems(profile: dict[str, dict]) -> list[str]:
    if not profile:
        return ["no sentinel profile"]
    servers = {n: s for n, s in profile.items() if _argv(s.get("command"))[:1] == ["redis-server"]}
    sentinels = {n: s for n, s in profile.items() if "redis-sentinel" in _text(s)}
    primaries = [n for n, s in servers.items() if "--replicaof" not in _argv(s.get("command"))]
    problems = [p for n, s in servers.items() for p in _redis_server_problems(n, s)]
    if len(primaries) != 1 or len(servers) < 2:
        return problems + [f"sentinel profile: needs one primary and a replica, found "
                           f"{sorted(servers)}"]
    primary = primaries[0]
    for name in set(servers) - {primary}:
        argv = _argv(servers[name].get("command"))
        if argv[argv.index("--replicaof") + 1:argv.index("--replicaof") + 3] != [primary, "6379"]:
            problems.append(f"{name}: must be --replicaof {primary} 6379")
    if len(sentinels) != 3:
        problems.append(f"sentinel profile: needs 3 sentinels, found {sorted(sentinels)}")
    password = _flag_value(_argv(servers[primary].get("command")), "--requirepass")
    for name, service in sentinels.items():
        text = _text(service)
        if not re.search(rf"sentinel monitor (\S+) {re.escape(primary)} 6379 2\b", text):
            problems.append(f"{name}: must monitor {primary} 6379 with quorum 2")
        if f"auth-pass recs {password}" not in text:
            problems.append(f"{name}: no auth-pass with the primary's password")
        if not _has_healthcheck(service):
            problems.append(f"{name}: no health check")
        if _depends_on(service).get(primary) != "service_healthy":
            problems.append(f"{name}: must depend on {primary} being service_healthy")
    return problems


def _cluster_problems(profile: dict[str, dict]) -> list[str]:
    if not profile:
        return ["no cluster profile"]
    nodes = {n: s for n, s in profile.items()
             if _flag_value(_argv(s.get("command")), "--cluster-enabled") == "yes"}
    problems = [p for n, s in nodes.items() for p in _redis_server_problems(n, s)]
    if len(nodes) != 6:
        problems.append(f"cluster profile: needs 6 cluster nodes, found {sorted(nodes)}")
    creators = {n: s for n, s in profile.items() if "--cluster create" in _text(s)}
    if len(creators) != 1:
        return problems + ["cluster profile: needs one service running redis-cli --cluster create"]
    name, init = next(iter(creators.items()))
    text = _text(init)
    if "--cluster-replicas 1" not in text or "--cluster-yes" not in text:
        problems.append(f"{name}: needs --cluster-replicas 1 --cluster-yes")
    if init.get("restart") in ALWAYS_RESTART:
        problems.append(f"{name}: a one-shot must not restart always")
    for node in nodes:
        if _depends_on(init).get(node) != "service_healthy":
            problems.append(f"{name}: must depend on {node} being service_healthy")
        if not re.search(rf"{re.escape(node)}\b", text):
            problems.append(f"{name}: does not name {node}")
    return problems
