"""A workload of impressions and views with clicks, and the counts docs/CONTRACT.md's click
rule gives it, computed directly (no windows, no order): what the consumers must reach,
whatever order they read the two topics in. The workload stays within the window caps, so
eviction never changes the answer."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

T0 = 1764201600000
MIN = 60_000
WINDOW_MS = 30 * MIN


def workload(seed: int, users: int = 40, impressions: int = 400, items: int = 60,
             langs=("en", "es")) -> tuple[list[dict], list[dict]]:
    """``(impressions, views)`` as event dicts, within the window caps (50 impressions,
    200 resources with 4 view times each, per language and user)."""
    rnd = random.Random(seed)
    imps, views = [], []
    for k in range(impressions):
        user, lang = f"user-{rnd.randrange(users)}", rnd.choice(langs)
        ts = T0 + rnd.randrange(3 * 24 * 60) * MIN // 3  # one day spread over three
        shown = rnd.sample(range(1, items + 1), rnd.randrange(1, 11))
        kind = rnd.choice(("recs", "similar", "trending"))
        event = {"impression_id": f"imp-{seed}-{k}", "user_id": user, "lang": lang,
                 "list": kind, "model": "" if kind == "trending" else f"m{k % 2}",
                 "arm": rnd.choice(("a", "b")), "experiment": "e1", "items": shown, "ts": ts}
        if kind == "similar":
            event["resource_id"] = rnd.randrange(1, items + 1)
        imps.append(event)
        for _ in range(rnd.randrange(0, 4)):  # views after it: in the window or not
            view = {"user_id": user, "lang": lang, "resource_id": rnd.choice(shown),
                    "ts": ts + rnd.randrange(-5 * MIN, 45 * MIN)}
            if rnd.random() < 0.2:
                view["impression_id"] = event["impression_id"]
            views.append(view)
    for _ in range(impressions // 2):  # views of anything, by anyone
        views.append({"user_id": f"user-{rnd.randrange(users)}", "lang": rnd.choice(langs),
                      "resource_id": rnd.randrange(1, items + 1),
                      "ts": T0 + rnd.randrange(3 * 24 * 60) * MIN // 3})
    # At most 4 views per (language, user, resource): the view window keeps 4 times each.
    per = Counter()
    kept = []
    for v in views:
        per[(v["lang"], v["user_id"], v["resource_id"])] += 1
        if per[(v["lang"], v["user_id"], v["resource_id"])] <= 4:
            kept.append(v)
    return imps, kept


def cell(imp: dict) -> tuple[str, str]:
    day = datetime.fromtimestamp(imp["ts"] / 1000, UTC).strftime("%Y-%m-%d")
    return imp["lang"], "|".join((day, imp["list"], imp.get("model", ""),
                                  imp.get("arm", "default"), imp.get("experiment") or ""))


def expected(imps: list[dict], views: list[dict], window_ms: int = WINDOW_MS) -> dict:
    """``{(lang, cell): (impressions, clicks, Counter(position))}`` by the contract's rule."""
    by_user: dict = {}
    for v in views:
        by_user.setdefault((v["lang"], v["user_id"], int(v["resource_id"])), []).append(v)
    out: dict = {}
    seen = set()
    for imp in imps:
        if (imp["lang"], imp["user_id"], imp["impression_id"]) in seen:
            continue
        seen.add((imp["lang"], imp["user_id"], imp["impression_id"]))
        n, clicks, positions = out.get(cell(imp), (0, 0, Counter()))
        for pos, rid in enumerate(imp["items"], 1):
            if any(_clicks(v, imp, window_ms)
                   for v in by_user.get((imp["lang"], imp["user_id"], rid), ())):
                clicks += 1
                positions[pos] += 1
        out[cell(imp)] = (n + 1, clicks, positions)
    return out


def _clicks(view: dict, imp: dict, window_ms: int) -> bool:
    x, dt = view.get("impression_id"), view["ts"] - imp["ts"]
    if x is None:
        return 0 <= dt <= window_ms
    return x == imp["impression_id"] and abs(dt) <= window_ms


def redis_counts(client, keys, langs=("en", "es")) -> dict:
    """The same shape, read from Redis (store/ctr.py)."""
    from store.ctr import read_ctr

    out = {}
    for lang in langs:
        for row in read_ctr(client, keys, lang):
            c = "|".join((row.day, row.list, row.model, row.arm, row.experiment))
            out[(lang, c)] = (row.impressions, row.clicks, Counter(row.positions))
    return out
