"""Synthetic GoConqr-like extracts with a known answer, for tests, the demo and benchmarks.

``generate(n_users, n_resources, langs, seed, ...) -> SyntheticData``: per language, its own
users (UUID strings drawn from the seeded Generator) and resources (large random uint32 ids,
not 1..N), each resource belonging to one of ~16 subjects ("Organic chemistry", "Spanish
vocabulary", ...). Every user studies 1-3 subjects; most of a user's resources come from those
subjects, picked by a power-law (Zipf-like) popularity, a few from anywhere. View counts are
heavy-tailed: mostly 1-3, some tens or hundreds. Titles and the ``subject`` column name the
subject, so a similar list is checkable by eye and by test: the neighbours of a resource should
share its subject.

Sizes are per language. With the defaults (5,000 users, 800 resources) the platform's filters
(150 views per resource) keep a few hundred resources per language.

``recs generate --out DIR`` (``trainer.commands.generate``) writes, per language,
``views_{lang}.csv`` (``--gzip``: ``.csv.gz``), ``resources_{lang}.csv`` and
``users_{lang}.csv`` (user_id,subjects: the planted answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SUBJECTS = (
    "Spanish vocabulary", "Organic chemistry", "World War II", "Cell biology", "Algebra",
    "Macroeconomics", "English literature", "French grammar", "Human anatomy",
    "Classical mechanics", "Computer science", "Physical geography", "Psychology", "Statistics",
    "Art history", "Music theory", "Roman history", "Genetics", "German verbs", "Accounting",
)
TOPICS = ("key terms", "basics", "revision", "exam prep", "practice questions", "summary",
          "advanced", "past papers", "definitions", "core concepts")
KINDS = ("Flashcards", "Mind Map", "Quiz", "Notes", "Slides", "Flowchart")


@dataclass
class SyntheticData:
    """Generated extracts for several languages, plus the planted subjects."""

    views: pd.DataFrame
    """user_id (str), resource_id (int64), views (int64), lang (str); unique per
    (lang, user, resource)."""
    resources: pd.DataFrame
    """id (int64), title, folder, subject, tags, lang."""
    user_subjects: pd.DataFrame
    """user_id, lang, subjects (the user's 1-3 subjects joined by '|')."""

    def views_for(self, lang: str) -> pd.DataFrame:
        """One language's views in ``load_views``' shape (user_id, resource_id, views)."""
        v = self.views[self.views["lang"] == lang]
        return v[["user_id", "resource_id", "views"]].reset_index(drop=True)

    def resources_for(self, lang: str) -> pd.DataFrame:
        """One language's resources in ``load_resources``' shape (indexed by id)."""
        r = self.resources[self.resources["lang"] == lang]
        return r.drop(columns="lang").set_index("id")

    def subject_of(self, lang: str) -> pd.Series:
        """resource id -> subject, for checking similar lists."""
        return self.resources_for(lang)["subject"]

    def write(self, out: str | Path = "data/synthetic", gzip: bool = False
              ) -> dict[str, dict[str, Path]]:
        """Write the per-language CSVs; returns {lang: {"views"|"resources"|"users": path}}."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, dict[str, Path]] = {}
        for lang in sorted(self.views["lang"].unique()):
            views = self.views_for(lang).rename(columns={"views": "view_count"})
            vpath = folder / f"views_{lang}.csv{'.gz' if gzip else ''}"
            views.to_csv(vpath, index=False)
            rpath = folder / f"resources_{lang}.csv"
            self.resources_for(lang).reset_index().to_csv(rpath, index=False)
            upath = folder / f"users_{lang}.csv"
            subj = self.user_subjects[self.user_subjects["lang"] == lang]
            subj[["user_id", "subjects"]].to_csv(upath, index=False)
            paths[lang] = {"views": vpath, "resources": rpath, "users": upath}
        return paths


def _uuids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    out = []
    for row in raw:
        h = row.tobytes().hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return np.asarray(out)


def _one_language(rng: np.random.Generator, lang: str, n_users: int, n_resources: int,
                  n_subjects: int, mean_items: float, zipf_exponent: float,
                  off_subject: float, count_exponent: float, max_count: int,
                  taken_ids: set[int]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    # The draws happen in a fixed order (each helper below in turn): a seed gives the same
    # data as long as that order stays.
    subjects = [SUBJECTS[i] if i < len(SUBJECTS) else f"Subject {i + 1}"
                for i in range(n_subjects)]
    ids = _draw_ids(rng, n_resources, taken_ids)
    item_subject, weight = _catalogue(rng, n_resources, n_subjects, zipf_exponent)
    n_subj, user_subj = _user_subjects(rng, n_users, n_subjects)
    # Distinct resources per user: heavy-tailed (lognormal), at least 1.
    sigma = 0.9
    mu = np.log(mean_items) - sigma**2 / 2
    n_items = np.maximum(1, np.rint(rng.lognormal(mu, sigma, size=n_users))).astype(np.int64)
    n_items = np.minimum(n_items, n_resources // 2)
    draws_user = np.repeat(np.arange(n_users), n_items)
    items = _pick_items(rng, n_subj[draws_user], user_subj[draws_user], item_subject, weight,
                        off_subject)

    counts = np.minimum(rng.zipf(count_exponent, size=len(draws_user)),
                        max_count).astype(np.int64)
    users = _uuids(rng, n_users)
    views = pd.DataFrame({"u": draws_user, "i": items, "views": counts})
    views = views.drop_duplicates(["u", "i"], keep="first")
    views = pd.DataFrame({
        "user_id": pd.array(users[views["u"].to_numpy()], dtype=str),
        "resource_id": ids[views["i"].to_numpy()],
        "views": views["views"].to_numpy(),
        "lang": lang,
    })
    resources = _resources_table(rng, lang, ids, np.asarray(subjects, dtype=object)[item_subject])
    user_subjects = pd.DataFrame({
        "user_id": users,
        "lang": lang,
        "subjects": ["|".join(subjects[s] for s in row if s >= 0) for row in user_subj],
    })
    return views, resources, user_subjects


def _draw_ids(rng: np.random.Generator, n_resources: int, taken_ids: set[int]) -> np.ndarray:
    """Resource ids: large, random, distinct across languages (``taken_ids`` grows)."""
    ids = np.empty(0, dtype=np.int64)
    while len(ids) < n_resources:
        draw = rng.integers(100_000, 4_294_967_295, size=2 * n_resources, dtype=np.int64)
        draw = np.unique(np.concatenate([ids, draw[~np.isin(draw, list(taken_ids))]]))
        ids = rng.permutation(draw)[:n_resources] if len(draw) >= n_resources else draw
    taken_ids.update(ids.tolist())
    return ids


def _catalogue(rng: np.random.Generator, n_resources: int, n_subjects: int,
               zipf_exponent: float) -> tuple[np.ndarray, np.ndarray]:
    """(subject number, popularity weight) per resource."""
    # Every subject gets at least one resource; the rest are spread at random.
    item_subject = rng.permutation(np.concatenate([
        np.arange(n_subjects), rng.integers(0, n_subjects, size=n_resources - n_subjects)]))
    # Power-law popularity: a random rank per resource, weight rank^-s, both within the
    # resource's subject (for on-subject picks) and overall (for off-subject ones).
    weight = (1.0 + rng.permutation(n_resources)) ** -zipf_exponent
    return item_subject, weight


def _user_subjects(rng: np.random.Generator, n_users: int, n_subjects: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(how many subjects, users x 3 subject numbers with -1 padding) per user."""
    # Subjects themselves are unevenly popular too (mildly).
    subject_weight = (1.0 + rng.permutation(n_subjects)) ** -0.5
    subject_weight /= subject_weight.sum()
    n_subj = rng.choice([1, 2, 3], size=n_users, p=[0.5, 0.35, 0.15])
    user_subj = np.full((n_users, 3), -1, dtype=np.int64)
    for k in (1, 2, 3):
        who = np.flatnonzero(n_subj == k)
        # Gumbel top-k: k distinct subjects per user, drawn by subject_weight, vectorised.
        keys = np.log(subject_weight) + rng.gumbel(size=(len(who), n_subjects))
        user_subj[who, :k] = np.argsort(-keys, axis=1)[:, :k]
    return n_subj, user_subj


def _pick_items(rng: np.random.Generator, n_subj: np.ndarray, user_subj: np.ndarray,
                item_subject: np.ndarray, weight: np.ndarray, off_subject: float
                ) -> np.ndarray:
    """One resource number per draw (row): mostly from one of the drawing user's subjects
    (``n_subj``, ``user_subj`` per draw) by popularity, ``off_subject`` of them from anywhere."""
    n_resources, n_subjects = len(item_subject), int(item_subject.max()) + 1
    total = len(n_subj)
    # Per-subject inverse-CDF tables, concatenated, for vectorised weighted picks.
    order = np.lexsort((np.arange(n_resources), item_subject))
    sorted_subject = item_subject[order]
    starts = np.searchsorted(sorted_subject, np.arange(n_subjects))
    ends = np.searchsorted(sorted_subject, np.arange(n_subjects), side="right")
    cum = np.empty(n_resources)
    for s in range(n_subjects):
        w = weight[order[starts[s]:ends[s]]]
        cum[starts[s]:ends[s]] = np.cumsum(w) / w.sum() if len(w) else w

    pick_slot = (rng.random(total) * n_subj).astype(np.int64)
    pick_subject = user_subj[np.arange(total), pick_slot]
    u = rng.random(total)
    lo, hi = starts[pick_subject], ends[pick_subject]
    # searchsorted per draw within its subject's slice: offset the targets by subject index.
    pos = np.searchsorted(cum + np.repeat(np.arange(n_subjects), ends - starts),
                          u + pick_subject, side="left")
    pos = np.clip(pos, lo, np.maximum(hi - 1, lo))
    items = order[pos]
    # Some views land anywhere, by overall popularity (browsing, shared links).
    stray = rng.random(total) < off_subject
    global_p = weight / weight.sum()
    items[stray] = rng.choice(n_resources, size=int(stray.sum()), p=global_p)
    return items


def _resources_table(rng: np.random.Generator, lang: str, ids: np.ndarray,
                     subject_names: np.ndarray) -> pd.DataFrame:
    """The resources file: titles and tags that name each resource's subject."""
    kind = rng.integers(0, len(KINDS), size=len(ids))
    topic = rng.integers(0, len(TOPICS), size=len(ids))
    return pd.DataFrame({
        "id": ids,
        "title": [f"{s}: {TOPICS[t]} {KINDS[k]} #{j + 1}" for j, (s, t, k)
                  in enumerate(zip(subject_names, topic, kind, strict=True))],
        "folder": [f"{s} ({lang})" for s in subject_names],
        "subject": subject_names,
        "tags": [f"{s.lower().replace(' ', '-')},{KINDS[k].lower().replace(' ', '-')}"
                 for s, k in zip(subject_names, kind, strict=True)],
        "lang": lang,
    })


def generate(n_users: int = 5000, n_resources: int = 800, langs=("en", "es"), seed: int = 7,
             n_subjects: int = 16, mean_items: float = 14.0, zipf_exponent: float = 0.8,
             off_subject: float = 0.1, count_exponent: float = 2.0,
             max_count: int = 2000) -> SyntheticData:
    """Synthetic extracts; sizes are per language (see the module docstring).

    mean_items: mean distinct resources per user (lognormal, heavy-tailed);
    zipf_exponent: popularity weight rank^-s; off_subject: share of views outside the user's
    subjects; count_exponent: view counts ~ Zipf(a) capped at max_count (a=2: ~60% are 1).
    """
    if isinstance(langs, str):
        langs = [lang.strip() for lang in langs.split(",") if lang.strip()]
    if n_users < 1 or n_resources < 2 or not langs:
        raise ValueError("need at least 1 user, 2 resources and 1 language")
    n_subjects = max(1, min(n_subjects, n_resources))
    rng = np.random.default_rng(seed)
    taken: set[int] = set()
    parts = [_one_language(rng, lang, n_users, n_resources, n_subjects, mean_items,
                           zipf_exponent, off_subject, count_exponent, max_count, taken)
             for lang in langs]
    views, resources, users = (pd.concat([p[i] for p in parts], ignore_index=True)
                               for i in range(3))
    return SyntheticData(views=views, resources=resources, user_subjects=users)
