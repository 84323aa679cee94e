"""What EASE, the blend and auto cost next to ALS, on a GoConqr-scale synthetic extract.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/models.py [--users 60000 ...]

The parent writes the extract once, then runs each model kind in a fresh child process
(alternating kinds, ``--repeat`` rounds), each timing ``trainer.quality.choose.fit_model`` on the
filtered matrix (the same call ``recs train --model KIND`` makes) and reading its own peak
resident memory at the end. Printed per kind: median fit seconds, the ratio to ALS's median in
the same run (the baseline), and the peak RSS of the child (the whole process). ``auto`` and
``blend`` include their validation fits. EASE's fit is O(resources^2) memory and
O(resources^3) time; ALS's grows with the non-zeros.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
KINDS = ("als", "ease", "blend", "auto")


def child(csv: Path, kind: str, threads: int) -> dict:
    from trainer.config import FilterConfig, ModelSpec
    from trainer.data.extracts import load_views
    from trainer.data.matrix import apply_filters, build_matrix
    from trainer.quality.choose import fit_model

    df, _ = load_views(csv)
    df, _ = apply_filters(df, FilterConfig())
    matrix = build_matrix(df)
    started = time.perf_counter()
    _, fitted = fit_model(matrix, ModelSpec(kind), "en", threads=threads)
    return {"seconds": time.perf_counter() - started, "fitted": fitted,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "shape": list(matrix.shape), "nnz": matrix.nnz}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=60_000)
    p.add_argument("--resources", type=int, default=4_000)
    p.add_argument("--mean-items", type=float, default=9.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.csv, args.child, args.threads)))
        return 0

    from trainer.data.synth import generate

    with tempfile.TemporaryDirectory(prefix="recs-bench-") as tmp:
        data = generate(args.users, args.resources, ["en"], seed=1, mean_items=args.mean_items)
        csv = data.write(tmp)["en"]["views"]
        runs: dict[str, list[dict]] = {k: [] for k in KINDS}
        for _ in range(args.repeat):
            for kind in KINDS:
                done = subprocess.run(
                    [sys.executable, __file__, "--child", kind, "--csv", str(csv),
                     "--threads", str(args.threads)], capture_output=True, text=True,
                    check=True)
                runs[kind].append(json.loads(done.stdout.strip().splitlines()[-1]))
        first = runs["als"][0]
        print(f"matrix after the platform filters: {first['shape'][0]} users x "
              f"{first['shape'][1]} resources, {first['nnz']} non-zeros; {args.repeat} rounds")
        base = statistics.median(r["seconds"] for r in runs["als"])
        for kind in KINDS:
            secs = statistics.median(r["seconds"] for r in runs[kind])
            fitted = sorted({r["fitted"] for r in runs[kind]})
            print(f"{kind:<6} fit {secs:7.2f} s  {secs / base:5.2f}x ALS  peak RSS "
                  f"{max(r['peak_rss_mb'] for r in runs[kind]):6.0f} MiB  fitted {fitted}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
