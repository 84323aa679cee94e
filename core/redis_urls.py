"""Redis URLs beyond redis-py's own: ``redis+sentinel://`` (the primary a set of Sentinels
manages) and ``redis+cluster://`` (parsed here; a command left off ``CLUSTER_COMMANDS``
refuses it: docs/CLUSTER.md). The forms (docs/CONTRACT.md, "Redis behind Sentinel"):

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service_name[?db=N&sentinel_auth=yes]
    redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]

Invariants: parsing never touches the network; a ``ValueError`` raised here never quotes
the URL's password (callers print the message as it is); the credentials are those of the
Redis servers, sent to the Sentinels too only with ``sentinel_auth=yes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

SENTINEL_SCHEME = "redis+sentinel://"
CLUSTER_SCHEME = "redis+cluster://"
SENTINEL_PORT = 26379
CLUSTER_PORT = 6379
CLUSTER_COMMANDS = frozenset({
    "update", "serve", "similar", "recommend", "hide", "unhide", "hidden", "forget", "control",
    "train", "resources", "trending", "history", "tune", "consume", "repair", "backfill",
    "experiment", "impressions", "evaluate", "generate"})
"""The commands that run on a Redis Cluster (docs/CLUSTER.md; ``evaluate`` and ``generate``
take the shared options but never reach Redis); the others refuse a ``redis+cluster://``
URL with :func:`cluster_unsupported`'s line (exit 2)."""


def cluster_unsupported(command: str) -> str:
    """Why ``recs {command}`` refuses ``redis+cluster://`` (one line)."""
    ready = ", ".join(sorted(CLUSTER_COMMANDS)) or "none yet"
    return (f"recs {command} does not run on a Redis Cluster (redis+cluster://) yet; the "
            f"commands that do: {ready} (docs/CLUSTER.md). Use one Redis or Redis behind "
            "Sentinel (redis+sentinel://...) for this one")
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]{1,253}")


@dataclass(frozen=True)
class SentinelTarget:
    """A Sentinel-managed primary, as ``redis+sentinel://`` names it."""

    sentinels: tuple[tuple[str, int], ...]
    """The Sentinels asked for the primary's address, in order (any one that answers)."""
    service: str
    """The name the Sentinels monitor the primary under (``sentinel monitor NAME ...``)."""
    db: int = 0
    """The database number on the primary."""
    username: str | None = None
    """The ACL user on the Redis servers (None: ``default``)."""
    password: str | None = None
    """The Redis servers' password (never printed)."""
    sentinel_auth: bool = False
    """Whether the Sentinels are sent the same credentials (they have ``requirepass``)."""

    def __repr__(self) -> str:  # a password must not reach a log through a repr
        return (f"SentinelTarget(sentinels={self.sentinels!r}, service={self.service!r}, "
                f"db={self.db})")


@dataclass(frozen=True)
class ClusterTarget:
    """A Redis Cluster, as ``redis+cluster://`` names it (any reachable node bootstraps)."""

    nodes: tuple[tuple[str, int], ...]
    """Seed nodes; the client learns the rest (and the slot map) from any of them."""
    username: str | None = None
    """The ACL user on every node (None: ``default``)."""
    password: str | None = None
    """Every node's password (never printed)."""

    def __repr__(self) -> str:
        return f"ClusterTarget(nodes={self.nodes!r})"


def special(url: str) -> SentinelTarget | ClusterTarget | None:
    """The target a ``redis+sentinel://`` or ``redis+cluster://`` URL names; None for any
    other URL (redis-py parses those). ``ValueError`` (password-free) when it is malformed."""
    lowered = url.lower()
    if lowered.startswith(SENTINEL_SCHEME):
        return _sentinel(url[len(SENTINEL_SCHEME):])
    if lowered.startswith(CLUSTER_SCHEME):
        return _cluster(url[len(CLUSTER_SCHEME):])
    return None


def _sentinel(rest: str) -> SentinelTarget:
    authority, path, query = _split(rest)
    username, password, hosts = _authority(authority, SENTINEL_PORT)
    service = path.strip("/")
    if not _SERVICE.fullmatch(service):
        raise ValueError("expected /service_name after the Sentinels (the name they monitor "
                         "the primary under: letters, digits, '.', '_', '-')")
    options = _query(query, {"db", "sentinel_auth"})
    db = options.get("db", "0")
    if not db.isdigit() or int(db) > 2**31:
        raise ValueError(f"db must be a database number (0, 1, ...), not {db!r}")
    auth = options.get("sentinel_auth", "no").lower()
    if auth not in ("yes", "no", "true", "false", "1", "0"):
        raise ValueError(f"sentinel_auth must be yes or no, not {auth!r}")
    return SentinelTarget(hosts, service, int(db), username, password,
                          auth in ("yes", "true", "1"))


def _cluster(rest: str) -> ClusterTarget:
    authority, path, query = _split(rest)
    username, password, hosts = _authority(authority, CLUSTER_PORT)
    if path.strip("/") not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0: no path after the nodes")
    _query(query, set())
    return ClusterTarget(hosts, username, password)


def _split(rest: str) -> tuple[str, str, str]:
    """(authority, path, query): the authority ends at the first '/' after its last '@'."""
    if "#" in rest:
        raise ValueError("a fragment ('#...') has no meaning in a Redis URL")
    rest, _, query = rest.partition("?")
    at = rest.rfind("@")
    slash = rest.find("/", at + 1)
    if slash < 0:
        return rest, "", query
    return rest[:slash], rest[slash:], query


def _authority(authority: str, default_port: int):
    userinfo, at, hostlist = authority.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = tuple(_host_port(h.strip(), default_port) for h in hostlist.split(","))
    return username, password, hosts


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    if not text:
        raise ValueError("expected host:port[,host:port...] (an empty host)")
    if text.startswith("["):
        host, _, tail = text.partition("]")
        host, port = host + "]", tail[1:] if tail.startswith(":") else None
        if tail and not tail.startswith(":"):
            raise ValueError(f"{text!r} is not host:port")
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            host, port = text, None
    if not _HOST.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name or address")
    if port is None:
        return host.strip("[]"), default_port
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{port!r} is not a port (1..65535)")
    return host.strip("[]"), int(port)


def _query(query: str, allowed: set[str]) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError("the query must be name=value pairs joined by '&'") from None
    unknown = sorted({k for k, _ in pairs} - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"unknown setting(s) {', '.join(unknown)} (known: {known})")
    return dict(pairs)
