"""Take-downs: clean and refill every list a hidden resource was in (the commands ``recs
hide``, ``unhide``, ``hidden`` and ``forget`` are ``trainer.commands.takedown``'s).

The hide itself is one atomic step (store/control.py); from then on every list writer drops
the resource inside its own write script, so it can only still be in lists written BEFORE
the hide. :func:`settle` finds those and rewrites them:

- Finding them: every published list is checked server-side, a bounded step of lists per
  script call (store/takedown_scan.py ``scan_lists``): with a few hides one ZSCORE per hide,
  the same cost as reading each list's last score, which is what a score bound would need;
  with many, each list's 20 members are looked up in the hidden hash, so ten thousand hides
  cost what twenty do. No keyspace SCAN. A reverse index (lists per resource) would make this
  free but cost every publish a write per list entry.
- Refilling them: the list is recomputed exactly from what is published, so it stays N
  long: a user's list from their published factors against the published item factors
  (viewed and hidden resources excluded), a similar list from the item factors (cosine).
  The write is refused if the model version or the user's factors changed meanwhile
  (whoever rewrote the list filtered it already); such a list is only cleaned.
- An unhide restores the resource's own similar list at once when the published model
  still has its factors (it was hidden after the last retrain); everything else comes back
  with the next retrain, or through the updater's fold-ins, which see it as a candidate
  again right away.

On a Redis Cluster the same steps run with the cluster's layout (store/takedown_scan.py,
store/settle.py): the user lists are found in every slot group (each with its own progress)
and refilled with their group's keys.

A queue entry (``takedown_work``) is removed only after its lists are settled, so a crash
in between is finished by the next ``recs hide``/``unhide`` or by ``recs control``, from
where it stopped: the scan's cursor and the lists found but not refilled are in Redis.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import redis

from store.control import read_hidden
from store.experiments import running as running_experiment
from store.keys import Keys
from store.published_model import (
    PublishedItems,
    model_version,
    read_model_kind,
    read_published_items,
)
from store.settle import read_work, write_refilled
from store.takedown_scan import begin_scan, finish_scan, found_lists, scan_lists
from store.user_reads import read_factors_and_views
from trainer.models.rank import normalise_rows, top_n

log = logging.getLogger("recs.takedown")

SPARE = 5
"""Candidates computed beyond N, for resources hidden while a refill is being written."""
USER_CHUNK = 2048
"""Users scored per matrix product (2048 x 4,000 float32 = 32 MiB)."""
MAX_SCANS = 4
"""Scans one settle runs at most (one resumed, then the ones for hides queued meanwhile)."""
FEW_HIDES = 16
"""Up to this many queued hides, lists are checked with one ZSCORE per hide; past it, each
list's members are looked up in the hidden hash (a cost that no longer grows with them)."""


@dataclass
class SettleReport:
    """What :func:`settle` did for one language."""

    lang: str
    hides: int = 0
    unhides: int = 0
    users_refilled: int = 0
    users_cleaned: int = 0
    """Lists only cleaned (rewritten by someone else meanwhile, or nothing published)."""
    similar_refilled: int = 0
    similar_cleaned: int = 0
    restored: int = 0
    """Similar lists of unhidden resources written again at once."""
    seconds: dict[str, float] = field(default_factory=dict)


def als_published(client: redis.Redis, keys: Keys, lang: str) -> PublishedItems | None:
    """The published item side when it is an ALS model (the only kind whose lists can be
    recomputed from factors alone); None for EASE and blend models or nothing usable, whose
    lists are then only cleaned (they fill up again at the user's next update or the next
    retrain)."""
    kind = read_model_kind(client, keys, lang)
    if kind is not None and kind != "als":
        return None
    try:
        return read_published_items(client, keys, lang)
    except ValueError:
        return None


def settle(client: redis.Redis, keys: Keys, lang: str) -> SettleReport:
    """Clean and refill the lists of every hide queued for ``lang``, restore what unhides
    can restore now, and take the settled entries off the queue. Resumes a settle that
    died (its progress is in Redis: store/takedown_scan.py), then settles what was queued after
    it began; every Redis call is a bounded step."""
    report = SettleReport(lang)
    for _ in range(MAX_SCANS):
        seq = begin_scan(client, keys, lang)
        if seq is None:
            break
        _settle_scan(client, keys, lang, seq, report)
    return report


def _settle_scan(client: redis.Redis, keys: Keys, lang: str, seq: int,
                 report: SettleReport) -> None:
    """One scan: the queue entries up to position ``seq``, added into ``report``."""
    t0 = time.perf_counter()
    covered = {r: q for r, q in read_work(client, keys, lang).items() if q.seq <= seq}
    hides = sorted(r for r, q in covered.items() if q.action == "hide")
    report.hides += len(hides)
    report.unhides += len(covered) - len(hides)
    if hides:  # a few: ZSCORE each per list; many: each list's members in the hidden hash
        for kind in ("users", "items"):
            scan_lists(client, keys, lang, kind, hides if len(hides) <= FEW_HIDES else None,
                       seq=seq)
    report.seconds["find"] = report.seconds.get("find", 0) + round(time.perf_counter() - t0, 3)
    t1 = time.perf_counter()
    published = als_published(client, keys, lang)
    hidden = set(read_hidden(client, keys, lang))
    n = int(published.meta.get("top_n", 20)) if published else 20
    users = _refill_found(client, keys, lang, "users", lambda part: _refill_by_arm(
        client, keys, lang, published, part, hidden, n))
    items = _refill_found(client, keys, lang, "items", lambda part: _refill_similar(
        client, keys, lang, published, [int(i) for i in part], hidden, n))
    report.users_refilled += users[0]
    report.users_cleaned += users[1]
    report.similar_refilled += items[0]
    report.similar_cleaned += items[1]
    unhidden = [r for r, q in covered.items() if q.action == "unhide" and r not in hidden]
    for s in range(0, len(unhidden), USER_CHUNK):
        report.restored += _refill_similar(client, keys, lang, published,
                                           unhidden[s:s + USER_CHUNK], hidden, n, create=True)[0]
    finish_scan(client, keys, lang, covered)
    report.seconds["refill"] = report.seconds.get("refill", 0) + round(
        time.perf_counter() - t1, 3)
    log.info("take-downs settled", extra={"fields": {**report.__dict__}})


def _refill_found(client, keys: Keys, lang: str, kind: str, refill) -> tuple[int, int]:
    """Refill the lists the scan found, a chunk at a time; each write takes its lists off
    the found set, so a settle resumed later starts with what is left."""
    done = cleaned = 0
    seen: set[str] = set()
    while part := found_lists(client, keys, lang, kind, USER_CHUNK):
        if seen.issuperset(part):  # written, yet still there: never loop on it
            log.warning("lists found for a take-down would not leave the queue",
                        extra={"fields": {"lang": lang, "kind": kind, "lists": len(part)}})
            break
        seen.update(part)
        a, b = refill(part)
        done, cleaned = done + a, cleaned + b
    return done, cleaned


class _Rows:
    """Row numbers of resource ids in a model's ``item_ids`` (sorted once)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.order = np.argsort(ids, kind="stable")
        self.sorted = ids[self.order]

    def of(self, wanted) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the ids found, mask of ``wanted`` found)."""
        wanted = np.asarray(list(wanted) if not isinstance(wanted, np.ndarray) else wanted,
                            dtype=np.int64)
        if not len(self.sorted):
            return np.zeros(0, np.int64), np.zeros(len(wanted), bool)
        pos = np.minimum(np.searchsorted(self.sorted, wanted), len(self.sorted) - 1)
        hit = self.sorted[pos] == wanted
        return self.order[pos[hit]], hit


def refill_lists(client: redis.Redis, keys: Keys, lang: str, users: Collection[str] = (),
                 items: Collection[str] = ()) -> tuple[int, int]:
    """Recompute these users' and resources' lists from what is published now (after a
    publish whose scripts dropped resources hidden while it ran); returns (users, similar
    lists) refilled."""
    if not users and not items:
        return 0, 0
    published = als_published(client, keys, lang)
    hidden = set(read_hidden(client, keys, lang))
    n = int(published.meta.get("top_n", 20)) if published else 20
    u = _refill_users(client, keys, lang, published, sorted(users), hidden, n)[0]
    i = _refill_similar(client, keys, lang, published, sorted(int(x) for x in items), hidden,
                        n)[0]
    log.info("lists cut by take-downs during the publish refilled",
             extra={"fields": {"lang": lang, "users": u, "similar": i}})
    return u, i


def _refill_by_arm(client, keys: Keys, lang: str, pub: PublishedItems | None,
                   users: list[str], hidden: set[int], n: int) -> tuple[int, int]:
    """:func:`_refill_users`, each user from the model of their experiment arm (the arm's
    keys; the language's model for the default arm and for arms not published yet)."""
    experiment = running_experiment(client, keys, lang)
    if experiment is None:
        return _refill_users(client, keys, lang, pub, users, hidden, n)
    rows = experiment.rows_by_model(
        users, lambda arm: model_version(client, keys.arm(arm), lang) is not None)
    done = cleaned = 0
    for arm, numbers in rows.items():
        if not numbers:
            continue
        part = [users[i] for i in numbers]
        arm_keys = keys.arm(arm) if arm else keys
        arm_pub = als_published(client, arm_keys, lang) if arm else pub
        a, b = _refill_users(client, arm_keys, lang, arm_pub, part, hidden, n)
        done, cleaned = done + a, cleaned + b
    return done, cleaned


def _top(scores: np.ndarray, ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    idx, val = top_n(scores, n)
    good = np.isfinite(val)
    return np.where(good, ids[idx], 0), np.where(good, val, 0.0).astype(np.float32)


def _refill_users(client, keys: Keys, lang: str, pub: PublishedItems | None, users: list[str],
                  hidden: set[int], n: int) -> tuple[int, int]:
    """Recompute the users' lists from their published factors (see module docstring)."""
    if not users:
        return 0, 0
    if pub is None:  # nothing to score against: clean only
        return write_refilled(client, keys, lang, version="", users=True, ids=users,
                              members=np.zeros((len(users), 0)), scores=np.zeros((len(users), 0)),
                              top_n=n, factors=[b""] * len(users))
    ids = pub.item_ids.astype(np.int64)
    fb = pub.item_factors.shape[1] * 4
    index = _Rows(ids)
    hidden_cols = index.of(hidden)[0]
    done = cleaned = 0
    for s in range(0, len(users), USER_CHUNK):
        part = users[s:s + USER_CHUNK]
        stored, viewed = read_factors_and_views(client, keys, lang, part)
        raw = [f if f is not None and len(f) == fb else bytes(fb) for f in stored]
        factors = np.frombuffer(b"".join(raw), dtype="<f4").reshape(len(part), -1)
        scores = factors @ pub.item_factors.T
        scores[:, hidden_cols] = -np.inf
        owner = np.repeat(np.arange(len(part)), [len(v) for v in viewed])
        flat = np.fromiter((int(k) for v in viewed for k in v), dtype=np.int64,
                           count=len(owner))
        cols, hit = index.of(flat)
        scores[owner[hit], cols] = -np.inf
        members, vals = _top(scores, ids, n + SPARE)
        # A user whose factors were missing sends zeros: the script's factor check fails
        # and their list is only cleaned.
        a, b = write_refilled(client, keys, lang, version=pub.version, users=True, ids=part,
                              members=members, scores=vals, top_n=n, factors=raw)
        done, cleaned = done + a, cleaned + b
    return done, cleaned


def _refill_similar(client, keys: Keys, lang: str, pub: PublishedItems | None, items: list[int],
                    hidden: set[int], n: int, create: bool = False) -> tuple[int, int]:
    """Recompute similar lists from the published item factors; ``create`` writes lists of
    resources that have none (an unhide). Resources the model lacks are only cleaned."""
    if not items:
        return 0, 0
    ids = pub.item_ids.astype(np.int64) if pub is not None else np.zeros(0, np.int64)
    index = _Rows(ids)
    rows, hit = index.of(items)
    unknown = [i for i, h in zip(items, hit, strict=True) if not h]
    cleaned = 0
    if unknown and not create:
        cleaned = write_refilled(client, keys, lang, version="", users=False, ids=unknown,
                                 members=np.zeros((len(unknown), 0)),
                                 scores=np.zeros((len(unknown), 0)), top_n=n)[1]
    if not len(rows):
        return 0, cleaned
    unit = normalise_rows(pub.item_factors)
    scores = unit[rows] @ unit.T
    scores[np.arange(len(rows)), rows] = -np.inf
    scores[:, index.of(hidden)[0]] = -np.inf
    members, vals = _top(scores, ids, n + SPARE)
    done, more = write_refilled(client, keys, lang, version=pub.version, users=False,
                                ids=[int(i) for i in ids[rows]], members=members, scores=vals,
                                top_n=n, create=create)
    return done, cleaned + more
