"""The invariants a settled system must hold after any mix of crashes, restarts, Redis
rollbacks and broker outages; shared by tests/test_chaos.py and benchmarks/soak.py.

Run on a quiescent Redis (every service stopped after the final drain, see
tests/chaos_run.py), each check returns its problems (none: it holds):

- counts: every ``views(lang, user)`` and ``item_views(lang)`` equals exactly what the
  producer had acknowledged, per user and per resource; ``langs`` and ``users(lang)`` name
  exactly those;
- dead letters: every invalid event is on the dead-letter topic (at least once: a replay may
  copy one twice, so distinct values are compared), with an ``error`` header, and nothing
  valid is;
- model: each language's live model (model hash + item factors) is the model file the
  trainer saved last, trained on the final counts (its seq is the language's seq; its users,
  resources and viewed pairs are what the platform's filters keep of the final counts);
- similar lists: every resource of the live model has one, and only those; each is whole
  (N, or every other resource when fewer), refers only to resources of the live model, and
  is the top N by cosine of the published item factors, with those scores;
- user lists: a user has factors if and only if they viewed a resource the live model knows;
  the factors are the trainer's for that user (trained on these very counts) or the fold-in
  of the user's counts against the published item factors (trainer/models/als.py, recomputed
  here); the list is whole (N, or all the unviewed resources the model has), holds no
  resource the user viewed, and is the top N of those factors with those scores;
- queue: nothing left in the updater's ``dirty``/``claims``, no trainer lock held;
- take-downs and forgets (tests/chaos_cluster.py): a resource hidden at the end is in no
  list and has no similar list; a forgotten user (sent no event after the forget) has no
  views, factors or list, and their views are out of the item totals.

Every check takes the store's key names (``keys``: ``Keys`` on one Redis, ``ClusterKeys``
on a cluster, where the per-user queues are read from every slot group).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import redis

from store.keys import Keys
from store.published_model import PublishedItems, read_published_items
from trainer.config import FilterConfig
from trainer.data.matrix import apply_filters, build_matrix
from trainer.models.als import ALSModel, PublishedALS
from trainer.models.file import load_model

KEYS = Keys()
SHOWN = 8
"""Problems listed per check (all are counted)."""


@dataclass(frozen=True)
class Settings:
    """The trainer's and updater's settings in the chaos run (small, so a retrain of the
    tiny synthetic data takes a moment); the checks need the list length and filters."""

    top_n: int = 10
    factors: int = 8
    iterations: int = 6
    min_item_views: int = 10
    min_user_views: int = 3
    lease_seconds: float = 5.0
    lock_ttl: float = 6.0

    @property
    def filters(self) -> FilterConfig:
        return FilterConfig(min_item_views=self.min_item_views, max_item_views=0,
                            min_user_views=self.min_user_views)


@dataclass
class Expected:
    """What the producer's deliveries say Redis must hold."""

    views: defaultdict = field(default_factory=lambda: defaultdict(Counter))
    """(lang, user) -> Counter(resource_id -> views)."""
    invalid: set[bytes] = field(default_factory=set)
    """Values of the invalid events sent."""
    valid_events: int = 0
    view_events: list[dict] = field(default_factory=list)
    """Every valid view delivered: lang, user_id, resource_id, ts (for the clicks)."""
    impressions: list[dict] = field(default_factory=list)
    """Every impression delivered (tests/chaos_clicks.py)."""
    hidden: defaultdict = field(default_factory=lambda: defaultdict(set))
    """lang -> resources hidden at the end (in no list)."""
    forgotten: set = field(default_factory=set)
    """(lang, user) forgotten, and sent nothing since."""

    def forget(self, lang: str, user: str) -> None:
        """``user``'s views are gone from what Redis must hold (the producer sends the user
        nothing any more)."""
        self.views.pop((lang, user), None)
        self.forgotten.add((lang, user))

    def add(self, valid: tuple | None, value: bytes) -> None:
        if valid is None:
            self.invalid.add(value)
            return
        lang, user, rid, count = valid
        self.views[(lang, user)][rid] += count
        self.valid_events += 1
        self.view_events.append({"lang": lang, "user_id": user, "resource_id": rid,
                                 "ts": orjson.loads(value)["ts"]})

    def langs(self) -> set[str]:
        return {lang for lang, _ in self.views}

    def users(self, lang: str) -> dict[str, Counter]:
        return {u: c for (lg, u), c in self.views.items() if lg == lang}

    def items(self, lang: str) -> Counter:
        out: Counter = Counter()
        for counts in self.users(lang).values():
            out.update(counts)
        return out

    def total_views(self) -> Counter:
        return Counter({lang: sum(self.items(lang).values()) for lang in self.langs()})


@dataclass
class Check:
    name: str
    detail: str = ""
    problems: list[str] = field(default_factory=list)
    count: int = 0
    """All problems found (only the first SHOWN are kept)."""

    def fail(self, problem: str) -> None:
        self.count += 1
        if len(self.problems) < SHOWN:
            self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return self.count == 0

    def line(self) -> str:
        head = f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"
        if self.ok:
            return head
        more = f"\n    ... {self.count - len(self.problems)} more" if self.count > SHOWN else ""
        return head + "".join(f"\n    {p}" for p in self.problems) + more


# -- counts, dead letters, queue --------------------------------------------------------------


def _hashes(client: redis.Redis, keys: list) -> list[dict[bytes, bytes]]:
    out: list = []
    for s in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[s:s + 1000]:
            pipe.hgetall(key)
        out += pipe.execute()
    return out


def _ints(h: dict[bytes, bytes]) -> dict[int, int]:
    return {int(k): int(v) for k, v in h.items()}


def _after(key: bytes, marker: bytes) -> bytes:
    """The id after ``marker`` (``:views:``...) in a key name of either layout."""
    return key[key.index(marker) + len(marker):]


def redis_counts(client: redis.Redis, lang: str, keys: Keys = KEYS
                 ) -> dict[str, dict[int, int]]:
    """Every user's views hash of ``lang``, found by SCAN (not through ``users(lang)``)."""
    names = list(set(client.scan_iter(match=keys.views_pattern(lang), count=1000)))
    return {_after(k, b":views:").decode(): _ints(h)
            for k, h in zip(names, _hashes(client, names), strict=True)}


def _members(client: redis.Redis, keys: Keys, lang: str) -> set[str]:
    """``users(lang)`` of every slot group."""
    pipe = client.pipeline(transaction=False)
    for group in keys.slot_groups():
        pipe.smembers(group.users(lang))
    return {m.decode() for got in pipe.execute() for m in got}


def check_counts(client: redis.Redis, expected: Expected, keys: Keys = KEYS) -> Check:
    check = Check("counts exact per user and per resource")
    langs = {m.decode() for m in client.smembers(keys.langs)}
    if langs != expected.langs():
        check.fail(f"langs holds {sorted(langs)}, sent {sorted(expected.langs())}")
    users = pairs = 0
    for lang in sorted(expected.langs()):
        want = {u: dict(c) for u, c in expected.users(lang).items()}
        got = redis_counts(client, lang, keys)
        users, pairs = users + len(want), pairs + sum(map(len, want.values()))
        for user in sorted(set(want) | set(got)):
            if want.get(user) != got.get(user):
                check.fail(f"{lang} {user}: Redis {got.get(user)}, sent {want.get(user)}")
        item_views = _ints(client.hgetall(keys.item_views(lang)))
        if item_views != dict(expected.items(lang)):
            diff = {r: (item_views.get(r), n) for r, n in expected.items(lang).items()
                    if item_views.get(r) != n}
            check.fail(f"{lang} item_views differ (resource: (Redis, sent)): "
                       f"{dict(list(diff.items())[:5])}")
        members = _members(client, keys, lang)
        if members != set(want):
            check.fail(f"{lang} users set: {len(members - set(want))} extra, "
                       f"{len(set(want) - members)} missing")
    check.detail = (f"{sum(expected.total_views().values())} views, {users} users x "
                    f"languages, {pairs} (user, resource) pairs")
    return check


def check_dead_letters(dead: list[tuple[bytes, bytes | None]], invalid: set[bytes]) -> Check:
    check = Check("dead-letter topic holds every invalid event")
    values = [v for v, _ in dead]
    distinct = set(values)
    for value in sorted(invalid - distinct)[:SHOWN * 2]:
        check.fail(f"invalid event missing from the DLQ: {value[:80]!r}")
    for value in sorted(distinct - invalid)[:SHOWN * 2]:
        check.fail(f"dead letter that was never sent as invalid: {value[:80]!r}")
    unnamed = sum(1 for _, error in dead if not error)
    if unnamed:
        check.fail(f"{unnamed} dead letters without an error header")
    check.detail = (f"{len(invalid)} invalid sent, {len(values)} dead letters "
                    f"({len(values) - len(distinct)} duplicates from replays)")
    return check


def check_queue(client: redis.Redis, langs: set[str], keys: Keys = KEYS) -> Check:
    check = Check("updater queue empty, no lock held")
    for lang in sorted(langs):
        for group in keys.slot_groups():
            for what, key in (("dirty", group.dirty(lang)), ("claims", group.claims(lang))):
                left = client.zrange(key, 0, 4, withscores=True)
                if left:
                    check.fail(f"{lang} {what} holds {client.zcard(key)} users, e.g. {left}")
        holder = client.get(keys.train_lock(lang))
        if holder is not None:
            check.fail(f"{lang} trainer lock still held by {holder!r} "
                       f"(ttl {client.pttl(keys.train_lock(lang))} ms)")
    check.detail = f"{len(langs)} languages"
    return check


# -- the live model ---------------------------------------------------------------------------


@dataclass
class Live:
    """A language's live model: what Redis publishes and the trainer's file of it."""

    lang: str
    published: PublishedItems
    model: ALSModel
    foldin: PublishedALS


def final_seq(client: redis.Redis, keys: Keys, lang: str) -> str:
    """The language's ``seq`` now: on a cluster the sum of every slot group's (what the
    trainer records as the model's ``seq``)."""
    pipe = client.pipeline(transaction=False)
    for group in keys.slot_groups():
        pipe.get(group.seq(lang))
    return str(sum(int(v or 0) for v in pipe.execute()))


def live_model(client: redis.Redis, lang: str, model_dir: Path, expected: Expected,
               settings: Settings, check: Check, keys: Keys = KEYS) -> Live | None:
    """The live model of ``lang``, checked against the trainer's file and the final counts
    (None, with the problem recorded, when there is no usable one)."""
    published = read_published_items(client, keys, lang)
    files = sorted(Path(model_dir).glob(f"*_{lang}.dump"))
    if published is None or len(files) != 1:
        check.fail(f"{lang}: published model {published is not None}, model files {files}")
        return None
    model = load_model(files[0])
    if not (np.array_equal(model.items.ids, published.item_ids)
            and np.array_equal(model.item_factors, published.item_factors)):
        check.fail(f"{lang}: the live item factors are not those of the last model file")
        return None
    seq = final_seq(client, keys, lang)
    if str(published.meta.get("seq")) != seq:
        check.fail(f"{lang}: live model trained at seq {published.meta.get('seq')}, final "
                   f"seq {seq}")
    _check_training_matrix(lang, model, expected, settings, check)
    meta = published.meta
    foldin = PublishedALS(published.item_ids, published.item_factors, float(meta["regularization"]),
                    float(meta["alpha"]), meta["scaling"], published.version,
                    published.item_totals)
    return Live(lang, published, model, foldin)


def _check_training_matrix(lang: str, model: ALSModel, expected: Expected, settings: Settings,
                           check: Check) -> None:
    """The model's users, resources and viewed pairs are the filtered final counts."""
    rows = [(u, r, n) for u, c in expected.users(lang).items() for r, n in c.items()]
    df = pd.DataFrame(rows, columns=["user_id", "resource_id", "views"]).astype(
        {"user_id": str, "resource_id": "int64", "views": "int64"})
    df = df[~df["resource_id"].isin(list(expected.hidden.get(lang, ())))]  # left out first
    df, _ = apply_filters(df, settings.filters)
    matrix = build_matrix(df)
    seen, want = model.seen.tocsr(), matrix.views.tocsr()
    same = (np.array_equal(model.users.ids, matrix.users.ids)
            and np.array_equal(model.items.ids, matrix.items.ids)
            and np.array_equal(seen.indptr, want.indptr)
            and np.array_equal(seen.indices, want.indices))
    if not same:
        check.fail(f"{lang}: live model has {seen.shape} and {seen.nnz} pairs; the final "
                   f"counts filtered give {want.shape} and {want.nnz}")


# -- lists ------------------------------------------------------------------------------------


def _lists(client: redis.Redis, keys: list) -> list[list[tuple[bytes, float]]]:
    out: list = []
    for s in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[s:s + 1000]:
            pipe.zrevrange(key, 0, -1, withscores=True)
        out += pipe.execute()
    return out


def _scan_ids(client: redis.Redis, pattern: str, marker: bytes) -> list[bytes]:
    return sorted({_after(k, marker) for k in client.scan_iter(match=pattern, count=1000)})


def _top_n_problem(entries: list[tuple[bytes, float]], scores: np.ndarray,
                   allowed: np.ndarray, ids: np.ndarray, n: int) -> str | None:
    """Why ``entries`` (a stored list, best first) is not the top ``n`` of ``scores`` over the
    rows ``allowed``, with those scores; None if it is."""
    rows_of = {int(r): i for i, r in enumerate(ids)}
    members = [int(m) for m, _ in entries]
    want = min(n, int(allowed.sum()))
    if len(members) != want:
        return f"{len(members)} entries, expected {want}"
    rows = [rows_of.get(m, -1) for m in members]
    if min(rows, default=0) < 0:
        return f"refers to resources the live model does not know: {members}"
    if not allowed[rows].all() or len(set(rows)) != len(rows):
        return f"holds a resource it must not (viewed, itself, or twice): {members}"
    tol = 1e-4 * (1.0 + float(np.abs(scores).max(initial=0.0)))
    stored = np.array([s for _, s in entries])
    if np.abs(stored - scores[rows]).max(initial=0.0) > tol:
        return f"scores {stored[:4]} are not the model's {scores[rows][:4]}"
    rest = allowed.copy()
    rest[rows] = False
    if rows and rest.any() and scores[rest].max() > scores[rows].min() + tol:
        return f"not the top {n}: a left-out resource scores {scores[rest].max():.5f}"
    return None


def check_similar(client: redis.Redis, live: Live, top_n: int, check: Check,
                  keys: Keys = KEYS, hidden: frozenset = frozenset()) -> int:
    """Similar lists of ``live.lang`` (see the module docstring); returns lists checked."""
    lang, ids = live.lang, live.published.item_ids.astype(np.int64)
    found = [int(i) for i in _scan_ids(client, keys.similar(lang, "*"), b":similar:")]
    shown = set(ids.tolist()) - set(hidden)
    if set(found) != shown:
        extra, missing = set(found) - shown, shown - set(found)
        check.fail(f"{lang}: similar lists for {len(extra)} resources the live model does not "
                   f"know {sorted(extra)[:5]}, none for {len(missing)} it knows "
                   f"{sorted(missing)[:5]}")
    y = live.published.item_factors.astype(np.float64)
    unit = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
    found = [r for r in found if r in shown]
    rows_of = {int(r): i for i, r in enumerate(ids)}
    for rid, entries in zip(found, _lists(client, [keys.similar(lang, r) for r in found]),
                            strict=True):
        row = rows_of[rid]
        allowed = ~np.isin(ids, list(hidden))
        allowed[row] = False
        problem = _top_n_problem(entries, unit @ unit[row], allowed, ids, top_n)
        if problem:
            check.fail(f"{lang} similar:{rid}: {problem}")
    return len(found)


def check_users(client: redis.Redis, live: Live, expected: Expected, top_n: int,
                check: Check, keys: Keys = KEYS) -> tuple[int, int]:
    """Factors and recommendation lists of ``live.lang`` (see the module docstring);
    returns (users checked, of which folded in by the updater)."""
    lang, fi = live.lang, live.foldin
    counts = expected.users(lang)
    known = {u: c for u, c in counts.items() if (fi.rows_of(np.fromiter(c, np.int64)) >= 0).any()}
    with_factors = {u.decode() for u in _scan_ids(client, _pattern(keys, "factors", lang),
                                                  b":factors:")}
    with_list = {u.decode() for u in _scan_ids(client, _pattern(keys, "recs", lang), b":recs:")}
    hidden = np.isin(fi.item_ids, list(expected.hidden.get(lang, ())))
    for what, users in (("factors", with_factors), ("a list", with_list)):
        if users - set(known):
            check.fail(f"{lang}: {len(users - set(known))} users have {what} without a view "
                       f"the live model knows, e.g. {sorted(users - set(known))[:3]}")
    if set(known) - with_factors:
        check.fail(f"{lang}: {len(set(known) - with_factors)} users with views the live model "
                   f"knows have no factors, e.g. {sorted(set(known) - with_factors)[:3]}")
    users = sorted(set(known) & with_factors)
    views = fi.views_matrix([counts[u] for u in users])
    folded = fi.fold_in(views)
    raw = _strings(client, [keys.factors(lang, u) for u in users])
    lists = _lists(client, [keys.recs(lang, u) for u in users])
    by_updater = 0
    for i, user in enumerate(users):
        factors = np.frombuffer(raw[i], dtype="<f4") if raw[i] else np.zeros(0, np.float32)
        source = _factor_source(factors, folded[i], live.model, user)
        if source is None:
            check.fail(f"{lang} {user}: factors are neither the trainer's nor the fold-in of "
                       f"the user's counts against the live model")
            continue
        by_updater += source == "fold-in"
        allowed = ~hidden
        allowed[views[i].indices] = False
        problem = _top_n_problem(lists[i], fi.item_factors.astype(np.float64) @ factors,
                                 allowed, fi.item_ids, top_n)
        if problem:
            check.fail(f"{lang} recs:{user} ({source}): {problem}")
    return len(users), by_updater


def _pattern(keys: Keys, kind: str, lang: str) -> str:
    """A SCAN pattern for the per-user keys ``kind`` (factors, recs) in either layout
    (``recs:{en:*}:recs:*`` on a cluster)."""
    return keys.views_pattern(lang).replace(":views:", f":{kind}:")


def _strings(client: redis.Redis, names: list) -> list:
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.get(name)
    return pipe.execute() if names else []


def _factor_source(factors: np.ndarray, folded: np.ndarray, model: ALSModel,
                   user: str) -> str | None:
    """'trained' or 'fold-in' (whichever the stored factors are), or None."""
    if factors.shape != folded.shape:
        return None
    row = model.users.number(user, missing="negative")
    if row >= 0 and np.array_equal(factors, model.user_factors[row]):
        return "trained"
    if np.allclose(factors, folded, rtol=1e-4, atol=1e-5):
        return "fold-in"
    return None


# -- all of them ------------------------------------------------------------------------------


def check_all(client: redis.Redis, expected: Expected, dead: list[tuple[bytes, bytes | None]],
              model_dir: Path, settings: Settings, keys: Keys = KEYS) -> list[Check]:
    """Every check, in the order of the module docstring."""
    model = Check("live model = last model file, trained on the final counts")
    similar = Check("similar lists whole, top N by cosine of the live model")
    users = Check("user factors and lists solved against the live model")
    n_similar = n_users = n_folded = 0
    for lang in sorted(expected.langs()):
        live = live_model(client, lang, model_dir, expected, settings, model, keys)
        if live is None:
            continue
        n_similar += check_similar(client, live, settings.top_n, similar, keys,
                                   frozenset(expected.hidden.get(lang, ())))
        checked, folded = check_users(client, live, expected, settings.top_n, users, keys)
        n_users, n_folded = n_users + checked, n_folded + folded
    model.detail = f"{len(expected.langs())} languages"
    similar.detail = f"{n_similar} lists"
    users.detail = (f"{n_users} users ({n_users - n_folded} trained, {n_folded} folded in "
                    "by the updater)")
    return [check_counts(client, expected, keys), check_dead_letters(dead, expected.invalid),
            model, similar, users, check_queue(client, expected.langs(), keys)]
