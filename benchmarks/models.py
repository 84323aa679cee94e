"""What each model costs next to ALS, on the generator's catalogues: quality, fit, retrain, memory.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/models.py --users 300000 \
        [--resources N] [--kinds als,plain-als,ease,rp3beta,blend] [--repeat 1] \
        [--retrain] [--quality] [--formula 1000000]

The parent writes one synthetic extract (``trainer.data.synth``, ``--users`` users and
``--resources`` resources, default users / 15: 300,000 users leave 251,596 x 16,660 after
the platform's filters, 1,000,000 leave 827,442 x 55,359), then runs every kind in a fresh
child process (alternating kinds, ``--repeat`` rounds), so none inherits another's memory:

- default: the fit alone (``trainer.quality.choose.fit_model`` on the filtered matrix, the
  call ``recs train --model KIND`` makes), its seconds, the ratio to ALS's in the same run,
  the child's peak RSS (VmHWM) and the family's own estimate (``fit_bytes``, the figure the
  memory rule refuses on);
- ``--retrain``: ``recs train`` from Redis (``trainer.pipeline.retrain.train_language``:
  read, filters, fit, model file, every list published, the switch) against one
  redis-server loaded once with the counts (each retrain replaces the live model, as in
  production); seconds and the ratio to the ALS retrain of the same run;
- ``--quality``: NDCG@10 on a 20 % hold-out split (seed 42), as ``recs evaluate``, and the
  ratio to ``plain-als`` (``implicit``'s defaults on log(1 + views): 100 factors,
  regularization 0.01, 15 iterations, confidence 1 + log(1 + views)), the peer to beat.

Kinds: ``als`` (the project's ALS defaults), ``plain-als``, ``ease``, ``rp3beta`` and ``blend``
(ALS + RP3beta at ``--blend-weight``, default 0.5, fixed as a tuned or shipped setting would
be: a weight chosen on validation adds two validation fits). A kind whose fit would not fit
in memory prints its one-line refusal (EASE at 55k resources). ``--formula N`` prints each
kind's ``fit_bytes`` at N resources, with users and non-zeros per resource as in this run.
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
KINDS = ("als", "plain-als", "ease", "rp3beta", "blend")


def spec_of(kind: str, blend_weight: float):
    from trainer.config import AlsConfig, BlendConfig, ModelSpec

    if kind == "plain-als":
        return ModelSpec("als", als=AlsConfig(factors=100, regularization=0.01, iterations=15,
                                              alpha=1.0, scaling="log"))
    if kind == "blend":
        return ModelSpec("blend", blend=BlendConfig(weight=blend_weight, partner="rp3beta"))
    return ModelSpec(kind)


def peak_rss_mb() -> int:
    """VmHWM: ``ru_maxrss`` would carry the parent's peak over fork + exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return 0


def matrix_of(csv: Path):
    from trainer.config import FilterConfig
    from trainer.data.extracts import load_views
    from trainer.data.matrix import apply_filters, build_matrix

    df, _ = load_views(csv)
    df, _ = apply_filters(df, FilterConfig())
    return build_matrix(df)


def estimate_mb(kind: str, spec, users: int, items: int, nnz: int) -> int:
    from trainer.models.registry import FAMILIES

    return round(FAMILIES[spec.model].fit_bytes(users, items, nnz, spec) / 2**20)


def child_fit(args, spec) -> dict:
    from trainer.quality.choose import fit_model

    matrix = matrix_of(args.csv)
    started = time.perf_counter()
    fit_model(matrix, spec, "en", threads=args.threads)
    return {"seconds": time.perf_counter() - started, "shape": list(matrix.shape),
            "nnz": matrix.nnz, "estimate_mb": estimate_mb(args.child, spec, *matrix.shape,
                                                          matrix.nnz)}


def child_quality(args, spec) -> dict:
    from trainer.data.matrix import holdout_split
    from trainer.quality.choose import evaluate_spec

    matrix = matrix_of(args.csv)
    split = holdout_split(matrix, 0.2, 42)
    started = time.perf_counter()
    result = evaluate_spec(split.train, split.test, spec, threads=args.threads)
    return {"seconds": time.perf_counter() - started, "ndcg": result["model"]["ndcg"],
            "popularity_ndcg": result["popularity"]["ndcg"], "shape": list(matrix.shape),
            "nnz": matrix.nnz}


def child_retrain(args, spec) -> dict:
    import redis

    from store.keys import Keys
    from trainer.config import FilterConfig
    from trainer.pipeline.retrain import train_language
    from trainer.settings import RetrainConfig

    client = redis.Redis.from_url(args.redis_url)
    settings = RetrainConfig(filters=FilterConfig(), top_n=20, spec=spec,
                             model_dir=str(Path(args.csv).parent / "models"),
                             threads=args.threads, redis_url=args.redis_url)
    started = time.perf_counter()
    result = train_language(client, Keys(), "en", settings)
    f = result.fields
    return {"seconds": time.perf_counter() - started, "fit_s": f["fit_seconds"],
            "publish_s": f["publish_seconds"], "shape": [f["users"], f["resources"]],
            "nnz": f["nnz"]}


def child(args) -> dict:
    from core.errors import InputError

    spec = spec_of(args.child, args.blend_weight)
    job = {"fit": child_fit, "quality": child_quality, "retrain": child_retrain}[args.job]
    try:
        row = job(args, spec)
    except InputError as exc:
        return {"refused": str(exc), "peak_rss_mb": peak_rss_mb()}
    usage = resource.getrusage(resource.RUSAGE_SELF)  # CPU: fairer than wall on a busy host
    return {**row, "peak_rss_mb": peak_rss_mb(), "cpu_s": round(usage.ru_utime + usage.ru_stime)}


def run_child(args, csv: Path, kind: str, job: str, redis_url: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--job", job, "--csv", str(csv),
           "--threads", str(args.threads), "--blend-weight", str(args.blend_weight),
           "--redis-url", redis_url]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"child {kind}/{job} failed")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(job: str, runs: dict[str, list[dict]], base_kind: str, key: str = "seconds") -> None:
    base = runs.get(base_kind) and [r for r in runs[base_kind] if "refused" not in r]
    base_value = statistics.median(r[key] for r in base) if base else None
    for kind, rows in runs.items():
        done = [r for r in rows if "refused" not in r]
        if not done:
            print(f"{job:<8} {kind:<10} refused: {rows[0]['refused']}")
            continue
        value = statistics.median(r[key] for r in done)
        ratio = f"{value / base_value:5.2f}x {base_kind}" if base_value else ""
        extra = {"fit": lambda r: f"estimate {r['estimate_mb']:6d} MiB",
                 "retrain": lambda r: f"fit {r['fit_s']:6.1f} s publish {r['publish_s']:6.1f} s",
                 "quality": lambda r: f"popularity {r['popularity_ndcg']:.4f}, "
                                      f"{r['seconds']:.0f} s"}[job](done[0])
        figure = f"ndcg@10 {value:.4f}" if key == "ndcg" else f"{value:7.1f} s"
        print(f"{job:<8} {kind:<10} {figure}  {ratio}  peak RSS "
              f"{max(r['peak_rss_mb'] for r in done):6d} MiB  {extra}", flush=True)


def formula(kinds, args, shape, nnz) -> None:
    users_per, nnz_per = shape[0] / shape[1], nnz / shape[1]
    n = args.formula
    users, total = round(users_per * n), round(nnz_per * n)
    print(f"formula at {n} resources ({users} users, {total} non-zeros, as this run per "
          "resource):")
    for kind in kinds:
        spec = spec_of(kind, args.blend_weight)
        gib = estimate_mb(kind, spec, users, n, total) / 1024
        print(f"formula  {kind:<10} fit needs {gib:8.1f}"
              " GiB")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=300_000)
    p.add_argument("--resources", type=int, default=0, help="default users / 15")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--blend-weight", type=float, default=0.5)
    p.add_argument("--retrain", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--no-fit", action="store_true", help="skip the fit-only rows")
    p.add_argument("--formula", type=int, default=0)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--job", default="fit", help=argparse.SUPPRESS)
    p.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--redis-url", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    jobs = ([] if args.no_fit else ["fit"]) + (["quality"] if args.quality else []) + (
        ["retrain"] if args.retrain else [])

    from trainer.data.synth import generate

    with tempfile.TemporaryDirectory(prefix="recs-bench-") as tmp:
        t = time.perf_counter()
        data = generate(args.users, args.resources or max(50, args.users // 15), ["en"], seed=1)
        csv = data.write(tmp)["en"]["views"]
        del data
        print(f"extract: {args.users} users written in {time.perf_counter() - t:.0f} s; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        shape = nnz = None
        for job in jobs:
            runs = run_job(args, Path(tmp), csv, kinds, job)
            first = next(r for rows in runs.values() for r in rows if "shape" in r)
            shape, nnz = first["shape"], first["nnz"]
            print(f"{job}: {shape[0]} users x {shape[1]} resources, {nnz} non-zeros")
            report(job, runs, "plain-als" if job == "quality" else "als",
                   "ndcg" if job == "quality" else "seconds")
        if args.formula and shape:
            formula(kinds, args, shape, nnz)
    return 0


def run_job(args, tmp: Path, csv: Path, kinds: list[str], job: str) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    server = None
    if job == "retrain":
        from consumers.backfill import backfill
        from recs.localstack import RedisServer
        from store.keys import Keys

        server = RedisServer(tmp / "redis", appendonly=False)
        server.start()
        client = server.client()
        backfill(client, Keys(), csv, "en")
        client.close()
    try:
        for _ in range(args.repeat if job != "quality" else 1):
            for kind in kinds:
                row = run_child(args, csv, kind, job, server.url if server else "")
                runs[kind].append(row)
                print(f"  {job} {kind}: {json.dumps(row)}", flush=True)
    finally:
        if server is not None:
            server.stop()
    return runs


if __name__ == "__main__":
    sys.exit(main())
