"""Reading the impression and click counters (docs/CONTRACT.md "Counters"; written by
store/impressions.py and store/attribution.py). Stable API: the experiment readout reads
through these two functions only.

Impressions and clicks are exact; ``users`` and ``items`` are HyperLogLog estimates
(PFCOUNT, 0.81 % standard error; exact in practice for a few hundred members or fewer).
On a Redis Cluster a cell's counters and users are summed over the language's slot groups
(each holds its users' share, store/cluster_impressions.py).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import redis

from store.keys import Keys
from store.read import text


@dataclass(frozen=True)
class CtrRow:
    """The counters of one cell: (language, day, list, model, arm, experiment)."""

    day: str
    """UTC date of the impressions, ``YYYY-MM-DD`` (their clicks count here too)."""
    list: str
    model: str
    arm: str
    experiment: str
    """"" when the impressions belong to no experiment."""
    impressions: int
    clicks: int
    positions: dict[int, int] = field(default_factory=dict)
    """1-based position -> clicks there."""
    users: int = 0
    """Distinct users shown a list (estimate)."""
    items: int = 0
    """Distinct resources shown (estimate; for coverage)."""

    @property
    def ctr(self) -> float:
        """Clicks per impression (0 without impressions)."""
        return self.clicks / self.impressions if self.impressions else 0.0


def read_ctr(client: redis.Redis, keys: Keys, lang: str,
             days: Collection[str] | None = None) -> list[CtrRow]:
    """Every cell of ``lang`` (only those of ``days`` when given), sorted by day, list,
    model, arm, experiment."""
    cells = sorted(text(c) for c in client.smembers(keys.ctr_cells(lang)))
    if days is not None:
        wanted = set(days)
        cells = [c for c in cells if c.split("|", 1)[0] in wanted]
    replies = _cluster_reads(client, keys, lang, cells) if keys.cluster \
        else _reads(client, keys, lang, cells)
    rows = []
    for k, cell in enumerate(cells):
        counts = replies[3 * k]
        day, list_, model, arm, experiment = cell.split("|")
        positions = {int(f[1:]): v for f, v in counts.items() if f.startswith("p")}
        rows.append(CtrRow(day, list_, model, arm, experiment, counts.get("impressions", 0),
                           counts.get("clicks", 0), dict(sorted(positions.items())),
                           int(replies[3 * k + 1]), int(replies[3 * k + 2])))
    return rows


def _reads(client, keys: Keys, lang: str, cells: list[str]) -> list:
    pipe = client.pipeline(transaction=False)
    for cell in cells:
        pipe.hgetall(keys.ctr(lang, cell))
        pipe.pfcount(keys.ctr_users(lang, cell))
        pipe.pfcount(keys.ctr_items(lang, cell))
    replies = pipe.execute()
    for k in range(len(cells)):
        replies[3 * k] = {text(f): int(v) for f, v in replies[3 * k].items()}
    return replies


def _cluster_reads(client, keys, lang: str, cells: list[str]) -> list:
    """:func:`_reads`' replies on a Redis Cluster: every slot group's share of a cell's
    counters summed (store/cluster_impressions.py), the distinct resources on the item side."""
    groups = keys.slot_groups()
    reads = []
    for cell in cells:
        for g in groups:
            reads += (("HGETALL", g.group_ctr(lang, cell)),
                      ("PFCOUNT", g.group_ctr_users(lang, cell)))
        reads.append(("PFCOUNT", keys.ctr_items(lang, cell)))
    replies, out, at = _per_node(client, reads), [], 0
    for _cell in cells:
        counts: dict[str, int] = {}
        users = 0
        for _g in groups:
            for f, v in replies[at].items():
                counts[text(f)] = counts.get(text(f), 0) + int(v)
            users += int(replies[at + 1])
            at += 2
        out += (counts, users, replies[at])
        at += 1
    return out


def _per_node(client, reads: list[tuple[str, str]]) -> list:
    """Each ``(command, key)``'s reply, one pipeline per primary (redis-py's cluster pipeline
    refuses PFCOUNT)."""
    by_node: dict[str, list] = {}
    for i, (_command, key) in enumerate(reads):
        node = client.get_node_from_key(key)
        by_node.setdefault(node.name, [node]).append(i)
    replies: list = [None] * len(reads)
    for node, *indices in by_node.values():
        pipe = client.get_redis_connection(node).pipeline(transaction=False)
        for i in indices:
            pipe.execute_command(*reads[i])
        for i, reply in zip(indices, pipe.execute(), strict=True):
            replies[i] = reply
    return replies


def read_user_counts(client: redis.Redis, keys: Keys, lang: str, experiment: str,
                     arm: str) -> tuple[np.ndarray, np.ndarray]:
    """``(impressions, clicks)`` per user of one experiment arm, aligned by user (int64; every
    user with at least one impression; order unspecified). For a bootstrap over users."""
    imps: dict[str, int] = {}
    clicks: dict[str, int] = {}
    for name in (g.group_experiment_users(lang, experiment, arm) for g in keys.slot_groups()):
        for f, v in client.hscan_iter(name, count=1000):
            f = text(f)
            (imps if f.startswith("i:") else clicks)[f[2:]] = int(v)
    users = list(imps)
    return (np.fromiter((imps[u] for u in users), np.int64, len(users)),
            np.fromiter((clicks.get(u, 0) for u in users), np.int64, len(users)))
