"""The chaos run's impressions (tests/chaos_run.py): a seeded stream of impression events
beside the views, and the check that the impression and click counters are exactly what
docs/CONTRACT.md's click rule gives the delivered impressions and views (tests/clicks_model.py),
after every fault. Each user gets at most ``CAP`` impressions, so the windows' caps never
decide a click; views carry their workload serial as ``ts``, which keeps every view within
the click window of every earlier impression."""

from __future__ import annotations

import random

import orjson
import redis

from store.keys import Keys
from tests.chaos_checks import Check
from tests.clicks_model import expected as expected_counts
from tests.clicks_model import redis_counts

CAP = 50
"""Impressions per (language, user) at most: the default --impression-cap."""
SHARE = 0.15
"""Impressions sent per view event."""


class Impressions:
    """Seeded impressions of the workload's users (own generator: the views stay as they were)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed + 7)
        self.count: dict[tuple[str, str], int] = {}

    def maybe(self, serial: int, users: dict[str, list[str]],
              ids: dict[str, list[int]]) -> tuple[bytes, bytes] | None:
        """An impression at ``serial`` (its ts) for an existing user, or None."""
        rng = self.rng
        if rng.random() >= SHARE:
            return None
        lang = rng.choice([lang for lang, pool in users.items() if pool] or [None])
        if lang is None:
            return None
        pool = users[lang]
        user = pool[int(len(pool) * rng.random() ** 2)]
        if self.count.get((lang, user), 0) >= CAP:
            return None
        self.count[(lang, user)] = self.count.get((lang, user), 0) + 1
        kind = rng.choice(("recs", "recs", "trending"))
        event = {"impression_id": f"c{serial}", "user_id": user, "lang": lang, "list": kind,
                 "model": "m1" if kind == "recs" else "", "items": rng.sample(ids[lang][:30],
                                                                            rng.randrange(1, 9)),
                 "ts": serial}
        return user.encode(), orjson.dumps(event)


def check_clicks(client: redis.Redis, impressions: list[dict], views: list[dict],
                 langs, keys: Keys | None = None) -> Check:
    """Impressions, clicks and clicks per position of every cell, exactly (``keys``: the
    layout's, ``Keys()`` on one Redis)."""
    want = expected_counts(impressions, views)
    got = redis_counts(client, keys or Keys(), langs=tuple(sorted(langs)))
    check = Check("impression and click counters exact",
                  f"{len(impressions)} impressions, "
                  f"{sum(c for _, c, _ in want.values())} clicks, {len(want)} cells")
    for cell in sorted(set(want) | set(got)):
        if want.get(cell) != got.get(cell):
            check.fail(f"{cell}: expected {want.get(cell)}, Redis holds {got.get(cell)}")
    return check
