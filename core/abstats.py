"""Click-through rates of experiment arms with intervals that treat the USER as the unit.

One user's clicks are not independent (a user who likes the list clicks on many of its
impressions), so a two-proportion test over impressions would be overconfident. Both
estimators here resample or linearise over users:

- :func:`ratio` (the report's): CTR = sum(clicks) / sum(impressions) over the arm's users,
  with the delta-method variance of a ratio of means,
  ``var = sum((c_i - R n_i)^2) / (m (m - 1) nbar^2)`` (m users, nbar their mean
  impressions); the 95 % interval is R +- 1.96 sqrt(var).
- :func:`difference`: arm B minus arm A (independent users: variances add), its interval,
  the z statistic and two-sided p-value.
- :func:`bootstrap_difference`: the same difference by a seeded bootstrap over users
  (percentile interval), for cross-checking the delta method on small samples.

Pure functions of per-user count arrays: no Redis, no state.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054
"""The two-sided 95 % normal quantile."""


@dataclass(frozen=True)
class Rate:
    users: int
    impressions: int
    clicks: int
    ctr: float
    low: float
    high: float
    se: float

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Difference:
    diff: float
    """CTR of B minus CTR of A."""
    low: float
    high: float
    se: float
    z: float
    p: float
    relative: float | None
    """diff / CTR of A (None when A's CTR is 0)."""

    @property
    def significant(self) -> bool:
        """The 95 % interval excludes 0."""
        return self.low > 0 or self.high < 0

    def as_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant}


def _arrays(impressions, clicks) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(impressions, dtype=np.float64)
    c = np.asarray(clicks, dtype=np.float64)
    if n.shape != c.shape:
        raise ValueError(f"{n.size} users' impressions but {c.size} users' clicks")
    keep = n > 0  # a user with no impression is in neither sum
    return n[keep], c[keep]


def ratio(impressions, clicks) -> Rate:
    """The arm's CTR and its delta-method 95 % interval (see the module docstring)."""
    n, c = _arrays(impressions, clicks)
    m, total_n, total_c = n.size, float(n.sum()), float(c.sum())
    if m == 0:
        return Rate(0, 0, 0, 0.0, 0.0, 0.0, 0.0)
    r = total_c / total_n
    se = math.sqrt(variance(n, c, r)) if m > 1 else 0.0
    return Rate(m, int(total_n), int(total_c), r, max(r - Z95 * se, 0.0), r + Z95 * se, se)


def variance(n: np.ndarray, c: np.ndarray, r: float) -> float:
    """Delta-method variance of sum(c)/sum(n) over m >= 2 users."""
    m = n.size
    nbar = n.mean()
    d = c - r * n
    return float((d @ d) / (m * (m - 1) * nbar * nbar))


def difference(a: Rate, b: Rate) -> Difference:
    """B's CTR minus A's, with its 95 % interval and test (independent arms)."""
    diff = b.ctr - a.ctr
    se = math.sqrt(a.se ** 2 + b.se ** 2)
    z = diff / se if se > 0 else 0.0
    p = math.erfc(abs(z) / math.sqrt(2)) if se > 0 else 1.0
    rel = diff / a.ctr if a.ctr > 0 else None
    return Difference(diff, diff - Z95 * se, diff + Z95 * se, se, z, p, rel)


def bootstrap_difference(a_impressions, a_clicks, b_impressions, b_clicks, *,
                         rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(difference, 2.5 % and 97.5 % percentiles) of B's CTR minus A's, resampling users of
    each arm with replacement (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    an, ac = _arrays(a_impressions, a_clicks)
    bn, bc = _arrays(b_impressions, b_clicks)
    if not an.size or not bn.size:
        return 0.0, 0.0, 0.0
    ia = rng.integers(0, an.size, size=(rounds, an.size))
    ib = rng.integers(0, bn.size, size=(rounds, bn.size))
    draws = bc[ib].sum(1) / bn[ib].sum(1) - ac[ia].sum(1) / an[ia].sum(1)
    point = bc.sum() / bn.sum() - ac.sum() / an.sum()
    low, high = np.percentile(draws, [2.5, 97.5])
    return float(point), float(low), float(high)
