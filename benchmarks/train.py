"""Offline training path vs a bare ``implicit`` fit, on a GoConqr-scale synthetic extract.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/train.py [--users 60000 ...]

The parent writes the extract (about 60,000 users, 4,000 resources, 500,000 non-zeros) to a
temporary folder, then runs each measurement in a fresh child process, alternating, so
neither inherits the other's memory or warm caches:

- ``bare``: CSV -> matrix -> confidence untimed; times (wall and CPU) only
  ``implicit.cpu.als.AlternatingLeastSquares.fit`` on that confidence matrix.
- ``path``: times everything ``recs train --views`` does, from the CSV file to the saved model
  file, plus the top-20 similar list of every resource (batched).

Both use the same factors/regularization/iterations, ``num_threads`` (implicit's threads,
default 2 = the cores this machine has) and OpenBLAS at 1 thread. Printed: median seconds of
each, the ratio path / bare (target <= 1.3), the path's stage times, and the path child's
peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at its end: the whole
process, Python and imports included; target < 2 GB).
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

from trainer.models.file import save_model

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child_bare(csv: Path, threads: int, factors: int, iterations: int) -> dict:
    from implicit.cpu.als import AlternatingLeastSquares

    from trainer.config import AlsConfig, FilterConfig
    from trainer.data.extracts import load_views
    from trainer.data.matrix import apply_filters, build_matrix
    from trainer.models.confidence import scale_confidence

    config = AlsConfig(factors=factors, iterations=iterations)
    df, _ = load_views(csv)
    df, _ = apply_filters(df, FilterConfig())
    matrix = build_matrix(df)
    confidence = scale_confidence(matrix.views, config.scaling, config.alpha)
    als = AlternatingLeastSquares(factors=config.factors, regularization=config.regularization,
                                  alpha=1.0, iterations=config.iterations, num_threads=threads,
                                  random_state=config.seed)
    started, cpu = time.perf_counter(), time.process_time()
    als.fit(confidence, show_progress=False)
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
            "peak_rss_mb": _peak_rss_mb()}


def child_path(csv: Path, threads: int, factors: int, iterations: int, out: Path) -> dict:
    # Library imports happen before the clock starts, as in the bare child; timed apart.
    imports = time.perf_counter()
    import implicit.cpu.als  # noqa: F401  (fit imports it lazily)

    from trainer.config import AlsConfig, FilterConfig
    from trainer.data.extracts import load_views
    from trainer.data.matrix import apply_filters, build_matrix
    from trainer.models.als import fit

    imports = time.perf_counter() - imports
    stages = {}
    started, cpu = time.perf_counter(), time.process_time()
    mark = started

    def stage(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        stages[name] = round(now - mark, 3)
        mark = now

    df, _ = load_views(csv)
    stage("load_views")
    df, report = apply_filters(df, FilterConfig())
    stage("apply_filters")
    matrix = build_matrix(df)
    stage("build_matrix")
    model = fit(matrix, AlsConfig(factors=factors, iterations=iterations), "en",
                num_threads=threads, stats={"filters": report.as_dict()})
    stage("fit (scaling + implicit)")
    path = save_model(model, out)
    stage("save")
    ids, scores = model.similar_items(model.items.ids, n=20)
    stage("similar top-20, all resources")
    return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
            "imports": imports, "stages": stages,
            "peak_rss_mb": _peak_rss_mb(), "model": str(path), "users": matrix.shape[0],
            "items": matrix.shape[1], "nnz": matrix.nnz, "similar_shape": list(ids.shape),
            "model_file_mb": round(path.stat().st_size / 2**20, 1)}


def run_child(kind: str, args, csv: Path, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--csv", str(csv), "--out", str(out),
           "--threads", str(args.threads), "--factors", str(args.factors),
           "--iterations", str(args.iterations)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=60_000)
    p.add_argument("--resources", type=int, default=4_000)
    p.add_argument("--mean-items", type=float, default=9.5,
                   help="mean distinct resources per user (9.5 gives ~500,000 non-zeros)")
    p.add_argument("--factors", type=int, default=40)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--threads", type=int, default=2, help="implicit's num_threads, both runs")
    p.add_argument("--repeat", type=int, default=3, help="runs of each, alternating")
    p.add_argument("--child", choices=("bare", "path"), help=argparse.SUPPRESS)
    p.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child == "bare":
        print(json.dumps(child_bare(args.csv, args.threads, args.factors, args.iterations)))
        return 0
    if args.child == "path":
        print(json.dumps(child_path(args.csv, args.threads, args.factors, args.iterations,
                                    args.out)))
        return 0

    from trainer.data.synth import generate

    with tempfile.TemporaryDirectory(prefix="recs-bench-") as tmp:
        data = generate(args.users, args.resources, ["en"], seed=1, mean_items=args.mean_items)
        paths = data.write(tmp)
        csv = paths["en"]["views"]
        v = data.views
        print(f"extract: {v['user_id'].nunique()} users, {v['resource_id'].nunique()} "
              f"resources, {len(v)} rows, {int(v['views'].sum())} views, "
              f"{csv.stat().st_size / 2**20:.1f} MiB CSV")
        print(f"settings: factors {args.factors}, iterations {args.iterations}, implicit "
              f"num_threads {args.threads}, OPENBLAS_NUM_THREADS "
              f"{os.environ.get('OPENBLAS_NUM_THREADS')}, {os.cpu_count()} cores")
        bare, path = [], []
        for _ in range(args.repeat):
            bare.append(run_child("bare", args, csv, Path(tmp) / "models"))
            path.append(run_child("path", args, csv, Path(tmp) / "models"))
        last = path[-1]
        print(f"matrix after the platform filters: {last['users']} users x {last['items']} "
              f"resources, {last['nnz']} non-zeros; similar lists {last['similar_shape']}")
        bare_s = statistics.median(r["seconds"] for r in bare)
        path_s = statistics.median(r["seconds"] for r in path)
        print("bare implicit fit  s: " + ", ".join(f"{r['seconds']:.2f}" for r in bare)
              + f"  (median {bare_s:.2f})")
        print("whole path         s: " + ", ".join(f"{r['seconds']:.2f}" for r in path)
              + f"  (median {path_s:.2f})")
        bare_cpu = statistics.median(r["cpu"] for r in bare)
        path_cpu = statistics.median(r["cpu"] for r in path)
        print(f"ratio path / bare fit, wall: {path_s / bare_s:.3f} on medians, "
              f"{min(r['seconds'] for r in path) / min(r['seconds'] for r in bare):.3f} on "
              "the fastest runs  (target <= 1.3)")
        print(f"ratio path / bare fit, CPU time of all threads: {path_cpu / bare_cpu:.3f} "
              f"({path_cpu:.2f} s / {bare_cpu:.2f} s; steadier while other work shares the "
              "cores)")
        print(f"library imports before the path's clock (not in either figure): "
              f"{last['imports']:.2f} s")
        print("path stages (last run): " + ", ".join(f"{k} {v:.2f}s"
                                                     for k, v in last["stages"].items()))
        peak = max(r["peak_rss_mb"] for r in path)
        print(f"path peak RSS (ru_maxrss of the child): {peak:.0f} MiB  (target < 2048); "
              f"bare child's: {max(r['peak_rss_mb'] for r in bare):.0f} MiB; "
              f"model file {last['model_file_mb']} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
