"""Old vs new commit on one benchmark, interleaved: no single run here is steady to 5 %.

    .venv/bin/python benchmarks/ab.py --old /tmp/old --rounds 5 ingest -- --events 100000

``--old`` and ``--new`` are checkouts (``git worktree add /tmp/old COMMIT``). Each round runs
``benchmarks/{ingest,update}.py`` once from each tree (own servers, own process, that tree's
code first on the path), alternating which goes first, and reads its figures from what it
prints. Printed: every round's figures, then per figure the median of each tree and new / old.
Figures that are ratios to a baseline measured in the same run (``*_ratio``) are the ones to
trust on a busy machine; ``uptime`` is printed before and after.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

NUMBER = r"([\d,]+(?:\.\d+)?)"
FIGURES = {
    "ingest": {
        "e2e_events_per_s": rf"end to end, median: .*recs consume {NUMBER} events/s",
        "e2e_ratio": rf"end to end, median: .*recs / baseline = {NUMBER}",
        "hot_events_per_s": rf"hot path only .*median: .*recs {NUMBER} events/s",
        "hot_ratio": rf"hot path only .*recs / baseline = {NUMBER}",
    },
    "update": {
        "backlog_users_per_s": rf"backlog: .* = {NUMBER} users/s",
        "backlog_ratio": rf"updater / math = {NUMBER}",
        "p50_ms": rf"produce -> recs, all\s*: p50\s+{NUMBER} ms",
        "p95_ms": rf"produce -> recs, all\s*: .*p95\s+{NUMBER} ms",
    },
}


def run(tree: str, bench: str, extra: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree), "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, f"benchmarks/{bench}.py", *extra], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=900).stdout
    figures = {}
    for name, pattern in FIGURES[bench].items():
        m = re.search(pattern, out)
        figures[name] = float(m.group(1).replace(",", "")) if m else float("nan")
    return figures


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", default=".")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("bench", choices=sorted(FIGURES))
    ap.add_argument("extra", nargs=argparse.REMAINDER, help="after --: the benchmark's flags")
    args = ap.parse_args()
    extra = [a for a in args.extra if a != "--"]
    print(f"start: {uptime()}", flush=True)
    results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for r in range(args.rounds):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        for which in order:
            figures = run(getattr(args, which), args.bench, extra)
            results[which].append(figures)
            print(f"round {r + 1} {which}: " + ", ".join(f"{k} {v:g}" for k, v in
                                                        figures.items()), flush=True)
    print(f"end: {uptime()}")
    for name in FIGURES[args.bench]:
        old = statistics.median(f[name] for f in results["old"])
        new = statistics.median(f[name] for f in results["new"])
        print(f"{name}: median old {old:g}, new {new:g}, new / old = {new / old:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
