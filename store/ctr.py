"""Reading the impression and click counters (docs/CONTRACT.md "Counters"; written by
store/impressions.py and store/attribution.py). Stable API: the experiment readout reads
through these two functions only.

Impressions and clicks are exact; ``users`` and ``items`` are HyperLogLog estimates
(PFCOUNT, 0.81 % standard error; exact in practice for a few hundred members or fewer).
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
    pipe = client.pipeline(transaction=False)
    for cell in cells:
        pipe.hgetall(keys.ctr(lang, cell))
        pipe.pfcount(keys.ctr_users(lang, cell))
        pipe.pfcount(keys.ctr_items(lang, cell))
    replies = pipe.execute()
    rows = []
    for k, cell in enumerate(cells):
        counts = {text(f): int(v) for f, v in replies[3 * k].items()}
        day, list_, model, arm, experiment = cell.split("|")
        positions = {int(f[1:]): v for f, v in counts.items() if f.startswith("p")}
        rows.append(CtrRow(day, list_, model, arm, experiment, counts.get("impressions", 0),
                           counts.get("clicks", 0), dict(sorted(positions.items())),
                           int(replies[3 * k + 1]), int(replies[3 * k + 2])))
    return rows


def read_user_counts(client: redis.Redis, keys: Keys, lang: str, experiment: str,
                     arm: str) -> tuple[np.ndarray, np.ndarray]:
    """``(impressions, clicks)`` per user of one experiment arm, aligned by user (int64; every
    user with at least one impression; order unspecified). For a bootstrap over users."""
    imps: dict[str, int] = {}
    clicks: dict[str, int] = {}
    for f, v in client.hscan_iter(keys.experiment_users(lang, experiment, arm), count=1000):
        f = text(f)
        (imps if f.startswith("i:") else clicks)[f[2:]] = int(v)
    users = list(imps)
    return (np.fromiter((imps[u] for u in users), np.int64, len(users)),
            np.fromiter((clicks.get(u, 0) for u in users), np.int64, len(users)))
