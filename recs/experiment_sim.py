"""Simulated learners in an A/B experiment, for ``benchmarks/experiment.py`` and ``make demo``.

Each simulated learner has a click propensity ``u`` (Beta(2, 18): mean 0.1, some learners
click much more than others, which is why the readout's intervals are by user). A round
picks learners at random; for each it reads the learner's list the way an app does
(``RecsClient.for_user_tagged``: the list, its model version and arm in one MULTI), publishes
an impression event of its first ``list_size`` items, then clicks each shown item at position
k with probability ``u / k`` (``u * (1 + lift) / k`` on the ``planted`` arm's lists): a
click is a view event carrying the impression id. Both go through Kafka to the real ``recs
impressions`` and ``recs consume``; :func:`wait_counted` waits until Redis holds exactly what
was sent, so the report (store/experiment_report.py) reads every impression and click.

:func:`per_user_counts` draws the same learners' per-user counts without the pipeline (the
A/A check over many seeds).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import redis

from consumers.produce import produce_events
from recs.localstack_process import wait_until
from store.client import RecsClient
from store.ctr import read_ctr
from store.keys import Keys

BETA = (2.0, 18.0)
"""Beta parameters of a learner's click propensity (mean 0.1)."""


@dataclass
class Sent:
    """What the simulation published so far (what Redis must end up counting)."""

    impressions: int = 0
    clicks: int = 0
    by_arm: dict[str, list[int]] = field(default_factory=dict)
    """arm -> [impressions, clicks]."""


@dataclass
class Simulation:
    client: redis.Redis
    bootstrap: str
    lang: str
    users: list[str]
    views_topic: str = "resource-views"
    impressions_topic: str = "resource-impressions"
    planted: str = ""
    """The arm whose lists are clicked more ("" for none: an A/A run)."""
    lift: float = 0.0
    list_size: int = 10
    seed: int = 0
    sent: Sent = field(default_factory=Sent)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.reader = RecsClient(self.client)
        self.propensity = dict(zip(self.users, self.rng.beta(*BETA, len(self.users)),
                                   strict=True))
        self.weights = 1.0 / np.arange(1, self.list_size + 1)

    def round(self, impressions: int) -> None:
        """``impressions`` impressions of users' lists, and their clicks, through Kafka."""
        imps, views = [], []
        now = int(time.time() * 1000)
        for user in self.rng.choice(self.users, size=impressions):
            rows, source, tag = self.reader.for_user_tagged(self.lang, str(user),
                                                            self.list_size)
            if source != "personal" or not rows:
                continue
            items = [r.resource_id for r in rows]
            imp_id = uuid.uuid4().hex[:20]
            imps.append({"impression_id": imp_id, "user_id": str(user), "lang": self.lang,
                         "list": "recs", "model": tag.model_version, "arm": tag.arm,
                         "experiment": tag.experiment, "items": items, "ts": now})
            p = self.propensity[user] * self.weights[:len(items)]
            if self.planted and tag.arm == self.planted:
                p = p * (1.0 + self.lift)
            clicked = np.flatnonzero(self.rng.random(len(items)) < np.minimum(p, 1.0))
            views += [{"user_id": str(user), "resource_id": items[k], "lang": self.lang,
                       "count": 1, "ts": now + 1000 + int(k), "impression_id": imp_id}
                      for k in clicked]
            counts = self.sent.by_arm.setdefault(tag.arm, [0, 0])
            counts[0] += 1
            counts[1] += len(clicked)
        produce_events(self.bootstrap, self.impressions_topic, imps)
        produce_events(self.bootstrap, self.views_topic, views)
        self.sent.impressions += len(imps)
        self.sent.clicks += len(views)


def counted(client: redis.Redis, keys: Keys, lang: str, experiment: str) -> tuple[int, int]:
    """(impressions, clicks) Redis holds for ``experiment``'s users' lists."""
    rows = [r for r in read_ctr(client, keys, lang) if r.experiment == experiment
            and r.list == "recs"]
    return sum(r.impressions for r in rows), sum(r.clicks for r in rows)


def wait_counted(client: redis.Redis, keys: Keys, lang: str, experiment: str, sent: Sent,
                 timeout: float, alive=lambda: None) -> float:
    """Wait until Redis counts exactly what was sent; returns the seconds it took. More
    than was sent would be a double count: raised at once."""
    t = time.monotonic()

    def done() -> bool:
        alive()
        have = counted(client, keys, lang, experiment)
        if have[0] > sent.impressions or have[1] > sent.clicks:
            raise RuntimeError(f"counted {have} > sent {(sent.impressions, sent.clicks)}")
        return have == (sent.impressions, sent.clicks)

    wait_until(done, timeout, f"{sent.impressions} impressions and {sent.clicks} clicks "
               "counted", interval=0.2)
    return time.monotonic() - t


def per_user_counts(rng: np.random.Generator, users: int, impressions: int,
                    list_size: int = 10, lift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """One arm's per-user (impressions, clicks) drawn as :class:`Simulation` draws them
    (learners picked uniformly, propensity Beta(2, 18), click prob u (1 + lift) / k)."""
    u = rng.beta(*BETA, users)
    n = np.bincount(rng.integers(0, users, impressions), minlength=users)
    p = np.minimum(np.outer(u * (1 + lift), 1.0 / np.arange(1, list_size + 1)), 1.0)
    clicks = rng.binomial(n[:, None], p).sum(axis=1)
    return n, clicks
