"""How the publisher scores the published lists (``trainer.scoring``): exact or approximate
nearest neighbours, and the approximate index's settings. Checked where built, one clear line
(``InputError``), like every class of ``trainer.config``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import InputError

SCORING_METHODS: tuple[str, ...] = ("exact", "ann", "auto")


@dataclass(frozen=True)
class ScoringConfig:
    """How the publisher scores similar lists and user lists (``trainer.scoring``)."""

    similar_method: str = "auto"
    """``exact``, ``ann`` (approximate nearest neighbours over item factors) or ``auto``
    (``ann`` from ``ann_min_items`` resources on, exact below)."""
    recs_method: str = "auto"
    """The same choice for users' lists."""
    ann_min_items: int = 100_000
    """``auto`` scores similar lists with the approximate index from this many resources on.
    Below it exact search is fast enough (measured: benchmarks/scale.py) and has no recall
    loss to explain."""
    recs_ann_min_items: int = 50_000
    """The same for users' lists. Higher: on trained factors recall@20 >= 0.95 needs a
    quarter of the catalogue scanned per user. End to end (``benchmarks/scale.py``) that was
    no faster than exact at 5,647 resources and 1.6x faster at 16,660 and at 55,359 (827k
    users: 147 s -> 90 s, recall@20 0.983); below 50,000 the saving is seconds, not worth
    lists that are not exact."""
    faiss_min_items: int = 8192
    """Exact scoring goes through faiss from this many resources on; below it numpy's
    matrix product and ``argpartition`` (``trainer.models.rank``) are as fast (measured:
    equal at 4,000 resources, faiss 2-5x faster at 66,000), and the index costs a build."""
    threads: int = 1
    """faiss' OpenMP threads while scoring. 1 because the publisher scores in a background
    thread while the main one waits on Redis; more threads only contend on a small machine."""

    def __post_init__(self) -> None:
        for name in ("similar_method", "recs_method"):
            if getattr(self, name) not in SCORING_METHODS:
                raise InputError(f"--{name.replace('_', '-')} must be one of "
                                 f"{', '.join(SCORING_METHODS)}")
        if min(self.ann_min_items, self.recs_ann_min_items, self.threads) < 1:
            raise InputError("--ann-min-items, --recs-ann-min-items and scoring threads must "
                             "be at least 1")

    def resolve(self, method: str, items: int, threshold: int | None = None) -> str:
        """``exact`` or ``ann`` for a catalogue of ``items`` resources; ``auto`` switches at
        ``threshold`` (default ``ann_min_items``)."""
        if method == "auto":
            return "ann" if items >= (threshold or self.ann_min_items) else "exact"
        return method

    @classmethod
    def from_args(cls, args) -> ScoringConfig:
        return cls(similar_method=args.similar_method, recs_method=args.recs_method,
                   ann_min_items=args.ann_min_items, recs_ann_min_items=args.recs_ann_min_items,
                   threads=args.scoring_threads)


@dataclass(frozen=True)
class AnnConfig:
    """IVF-Flat settings (``trainer.scoring.ann``); the defaults are sized from the catalogue."""

    cells_per_sqrt: float = 4.0
    """nlist = cells_per_sqrt * sqrt(resources): about sqrt(resources) / 4 resources a cell."""
    probe_share: float = 1 / 32
    """Similar lists: nprobe = this share of nlist (at least ``min_probe``), the share of
    the catalogue scanned per query. Resource-resource neighbours cluster well: recall@20
    0.9997 at 11% scanned on trained factors (benchmarks/scale.py)."""
    recs_probe_share: float = 1 / 4
    """Users' lists (inner products): the same share, larger because a user's best
    resources spread over many cells; on trained factors recall@20 was 0.90 at 11% and
    0.97 at 28% scanned."""
    min_probe: int = 16
    """Fewest cells scanned per query."""
    train_sample: int = 64
    """k-means trains on at most this many resources per cell (faiss wants 39 or more):
    k-means on every one of 1M resources would cost minutes for no better cells."""
    seed: int = 42
    """k-means seed, so a rerun builds the same cells."""

    def nlist(self, items: int) -> int:
        # faiss wants at least 39 training points a cell.
        return max(1, min(items // 39, int(self.cells_per_sqrt * math.sqrt(items))))

    def nprobe(self, nlist: int, share: float) -> int:
        return max(1, min(nlist, max(self.min_probe, int(nlist * share))))
