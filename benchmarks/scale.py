"""The cost curve: ``recs train`` from Redis at growing sizes, per engine and scoring method.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/scale.py --users 20000,100000,300000 \
        [--spark-max-users 100000] [--spark-io driver|executors|both] [--out benchmarks/out]
    ... --similar-to-redis 1000000 --threads 2     (1M similar lists, built and written)
    ... --scoring-only 66000,1000000               (scoring alone, extrapolated)
    ... --merge a/scale.csv b/scale.csv --out docs (runs made apart, one CSV and chart)

For each size the parent generates a synthetic language (about 15 users per resource,
``trainer.data.synth``), starts a redis-server (``recs.localstack``), loads the counts with the
backfill path, then runs each configuration in a fresh child process (so none inherits
another's memory): the implicit engine with exact and with approximate (``ann``) scoring at
every size, Spark (``local[2]``, exact scoring) up to ``--spark-max-users``. Each child runs
``trainer.pipeline.retrain.train_language`` (read, filters, fit, save, publish) and reports:

- read / matrix / fit / publish seconds (publish split into similar lists, user lists...);
- peak RSS of the Python process (``VmHWM``; the Spark JVM is a separate process and is
  not included: its heap is bounded by ``spark.driver.memory``);
- Redis bytes per user: ``used_memory`` with the counts only, and what the published lists
  and factors add, each divided by the users; bytes per resource: the mean ``MEMORY USAGE``
  of 300 similar lists;
- ``ann`` rows: recall@20 of the approximate user lists and similar lists against exact ones
  on a sample (2,000 users, 2,000 resources);
- ``implicit``/exact rows: the speed-up of the faiss exact scoring over the previous numpy
  scoring (``trainer.models.als.recommend_by_factors``) on a sample of users, with the share of
  identical list entries (a ratio in one process, as the project's benchmarks are).

Writes ``scale.csv`` and ``scale.png`` (matplotlib) into ``--out`` and prints the rows. Load
average (``os.getloadavg``) is recorded with each row: figures from a busy machine are slower.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer.config import ModelSpec

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

COLUMNS = ["users", "resources", "nnz", "engine", "method", "read_s", "matrix_s", "fit_s",
           "publish_s", "similar_s", "user_lists_s", "total_s", "peak_rss_mb",
           "redis_counts_bytes_per_user", "redis_lists_bytes_per_user",
           "redis_bytes_per_resource", "recall20_users", "recall20_similar",
           "exact_speedup_vs_numpy", "exact_identical_share", "load1"]


def child(args) -> dict:
    """One configuration against the loaded Redis; prints one JSON row."""
    from store.keys import Keys
    from trainer.config import AlsConfig, FilterConfig
    from trainer.pipeline.retrain import train_language
    from trainer.scoring_config import ScoringConfig
    from trainer.settings import RetrainConfig

    client = _client(args.redis_url)
    counts_bytes = client.info("memory")["used_memory"]
    engine, _, spark_io = args.engine.partition("-")  # spark-executors: --spark-io executors
    if engine == "spark":
        from trainer.data import spark as spark_engine
        from trainer.settings import SparkConfig

        spark_engine.configure(SparkConfig(master="local[2]"))
    settings = RetrainConfig(
        filters=FilterConfig(), top_n=20, model_dir=args.model_dir,
        spec=ModelSpec(als=AlsConfig(factors=args.factors, iterations=args.iterations,
                                     engine=engine)),
        scoring=ScoringConfig(similar_method=args.method, recs_method=args.method),
        spark_io=spark_io or "driver", redis_url=args.redis_url)
    captured = {}
    _keep_model(captured)
    started = time.perf_counter()
    result = train_language(client, Keys(), "en", settings)
    total = time.perf_counter() - started
    f = result.fields
    users, resources = f["users"], f["resources"]
    lists_bytes = client.info("memory")["used_memory"] - counts_bytes
    row = {"users": users, "resources": resources, "nnz": f["nnz"], "engine": args.engine,
           "method": args.method, "read_s": f["read_seconds"],
           "matrix_s": f.get("matrix_seconds"),  # executors: inside read and fit
           "fit_s": f["fit_seconds"], "publish_s": f["publish_seconds"],
           "similar_s": f["publish_steps"].get("similar"),
           "user_lists_s": f["publish_steps"].get("users"), "total_s": round(total, 2),
           "peak_rss_mb": peak_rss_mb(),
           "redis_counts_bytes_per_user": round(counts_bytes / max(args.all_users, 1)),
           "redis_lists_bytes_per_user": round(lists_bytes / max(users, 1)),
           "redis_bytes_per_resource": _sampled_bytes(client, Keys().similar, "en",
                                                      client.smembers(
                                                          Keys().published_items("en"))),
           "load1": round(os.getloadavg()[0], 2)}
    if engine == "spark":
        row["spark_jvm_peak_rss_mb"] = _jvm_peak_rss_mb()
        return row
    model = captured["model"]
    if args.method == "ann":
        row.update(_recall(model))
    elif args.engine == "implicit":
        row.update(_exact_speedup(model))
    return row


def peak_rss_mb() -> int:
    """This process' peak resident memory: VmHWM, not ``ru_maxrss``, which Linux carries
    over from the parent across fork + exec (the parent holds the generated extract)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _jvm_peak_rss_mb() -> int | None:
    """The local Spark JVM's VmHWM (the py4j gateway process pyspark launched)."""
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024)
    except (AttributeError, OSError):
        return None
    return None


def _sampled_bytes(client, key_of, lang: str, ids, sample: int = 300) -> int:
    """Mean MEMORY USAGE of the keys of up to ``sample`` of ``ids``."""
    ids = list(ids)[:sample]
    if not ids:
        return 0
    total = sum(client.memory_usage(key_of(lang, i.decode())) or 0 for i in ids)
    return round(total / len(ids))


def _keep_model(captured: dict) -> None:
    """Keep the fitted model for the sample measurements (wraps the retrain's fit)."""
    import trainer.pipeline.retrain as retrain

    fit_model = retrain.fit_model

    def keeping(*a, **kw):
        model, kind = fit_model(*a, **kw)
        captured["model"] = model
        return model, kind

    retrain.fit_model = keeping


def _recall(model, sample: int = 2000) -> dict:
    import numpy as np

    from trainer.scoring.search import Scorer
    from trainer.scoring_config import ScoringConfig

    rng = np.random.default_rng(0)
    users = rng.choice(len(model.users), min(sample, len(model.users)), replace=False)
    items = rng.choice(len(model.items), min(sample, len(model.items)), replace=False)
    out = {}
    for name, method in (("exact", "exact"), ("ann", "ann")):
        scorer = Scorer(model.item_factors, ScoringConfig(similar_method=method,
                                                          recs_method=method))
        out[name] = (scorer.user_lists(model.user_factors[users], model.seen[users], 20)[0],
                     scorer.similar_lists(items, 20)[0])
    return {"recall20_users": round(_overlap(out["ann"][0], out["exact"][0]), 4),
            "recall20_similar": round(_overlap(out["ann"][1], out["exact"][1]), 4)}


def _exact_speedup(model, sample: int = 20000) -> dict:
    from trainer.models.rank import recommend_by_factors
    from trainer.scoring.search import Scorer
    from trainer.scoring_config import ScoringConfig

    rows = slice(0, min(sample, len(model.users)))
    uf, seen = model.user_factors[rows], model.seen[rows]
    t = time.perf_counter()
    old, _ = recommend_by_factors(uf, model.item_factors, 20, exclude=seen)
    numpy_s = time.perf_counter() - t
    scorer = Scorer(model.item_factors, ScoringConfig(similar_method="exact",
                                                      recs_method="exact", faiss_min_items=0))
    scorer.user_lists(uf[:10], seen[:10], 20)  # index built outside the clock
    t = time.perf_counter()
    new, _ = scorer.user_lists(uf, seen, 20)
    faiss_s = time.perf_counter() - t
    return {"exact_speedup_vs_numpy": round(numpy_s / faiss_s, 2),
            "exact_identical_share": round(float((old == new).mean()), 4)}


def _overlap(got, want) -> float:
    import numpy as np

    return float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max((b >= 0).sum(), 1)
                          for a, b in zip(got, want, strict=True)]))


def _client(url: str):
    import redis

    return redis.Redis.from_url(url)


def one_size(users: int, args, out_rows: list[dict]) -> None:
    from consumers.backfill import backfill
    from recs.localstack import RedisServer
    from store.keys import Keys
    from trainer.data.synth import generate

    with tempfile.TemporaryDirectory(prefix="recs-scale-") as tmp:
        data = generate(users, max(50, users // 15), ["en"], seed=1)
        csv_path = data.write(tmp)["en"]["views"]
        del data
        configs = [] if args.only_spark else [("implicit", "exact"), ("implicit", "ann")]
        if users <= args.spark_max_users:
            configs += [("spark", "exact")] if args.spark_io != "executors" else []
            configs += [("spark-executors", "exact")] if args.spark_io != "driver" else []
        for engine, method in configs:
            # A fresh Redis per configuration: each publish starts from counts only.
            server = RedisServer(Path(tmp) / f"redis-{engine}-{method}", appendonly=False)
            server.start()
            try:
                client = server.client()
                t = time.perf_counter()
                backfill(client, Keys(), csv_path, "en")
                backfill_s = time.perf_counter() - t
                client.close()
                cmd = [sys.executable, __file__, "--child", "--redis-url", server.url,
                       "--engine", engine, "--method", method, "--all-users", str(users),
                       "--model-dir", str(Path(tmp) / "models"), "--factors",
                       str(args.factors), "--iterations", str(args.iterations)]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode:
                    print(done.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"child {engine}/{method} at {users} users failed")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                row["backfill_s"] = round(backfill_s, 1)
                out_rows.append(row)
                print(json.dumps(row), flush=True)
            finally:
                server.stop()


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in sorted({(r["engine"], r["method"]) for r in rows}):
        part = sorted((r for r in rows if (r["engine"], r["method"]) == key),
                      key=lambda r: r["users"])
        xs = [r["users"] for r in part]
        ax_t.plot(xs, [r["total_s"] for r in part], "o-", label=f"{key[0]} / {key[1]}: total")
        ax_t.plot(xs, [r["user_lists_s"] for r in part], "x--",
                  label=f"{key[0]} / {key[1]}: user lists")
        ax_m.plot(xs, [r["peak_rss_mb"] for r in part], "o-", label=f"{key[0]} / {key[1]}")
        jvm = [(r["users"], float(r["spark_jvm_peak_rss_mb"])) for r in part
               if r.get("spark_jvm_peak_rss_mb")]
        if jvm:
            ax_m.plot(*zip(*jvm, strict=True), "s--", label=f"{key[0]}: its JVM (separate)")
    for ax, title, unit in ((ax_t, "recs train, one language", "seconds"),
                            (ax_m, "trainer peak RSS", "MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("users (about 15 per resource)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def scoring_only(items_list: list[int], sample: int, factors: int, threads: int = 1
                 ) -> list[dict]:
    """Scoring alone on synthetic clustered factors (not trained ones: say so when quoting):
    seconds per 1,000 users for each method (index builds, both item spaces, timed apart as
    ``*_build_s``), extrapolated to 1M users, and the similar lists of every resource,
    measured on ``sample`` resources and extrapolated to the whole catalogue; recall@20 of
    ann against exact on the sample."""
    import numpy as np
    import scipy.sparse as sp

    from trainer.models.rank import recommend_by_factors
    from trainer.scoring.search import Scorer
    from trainer.scoring_config import ScoringConfig

    rng = np.random.default_rng(1)
    rows = []
    for items in items_list:
        centres = rng.standard_normal((max(16, items // 300), factors)).astype(np.float32)
        item_f, user_f = clustered(rng, centres, items), clustered(rng, centres, sample)
        per_user = min(11, items // 2)  # viewed resources per user (with repeats: fewer)
        seen = sp.csr_matrix((np.ones(sample * per_user, dtype=np.float32),
                              (np.repeat(np.arange(sample), per_user),
                               rng.integers(0, items, sample * per_user))),
                             shape=(sample, items))
        seen.sum_duplicates()
        probe = rng.choice(items, min(sample, items), replace=False)
        row = {"items": items, "sample": sample, "threads": threads,
               "load1": round(os.getloadavg()[0], 2)}
        # The numpy baseline on at most 2,000 users: it takes 40 ms a user at 1M resources.
        few = min(sample, 2000)
        t = time.perf_counter()
        base, _ = recommend_by_factors(user_f[:few], item_f, 20, exclude=seen[:few])
        row["numpy_s_per_1k_users"] = round((time.perf_counter() - t) / few * 1000, 4)
        got = {}
        for method in ("exact", "ann"):
            t = time.perf_counter()
            scorer = Scorer(item_f, ScoringConfig(method, method, faiss_min_items=0,
                                                  threads=threads))
            scorer.user_lists(user_f[:10], seen[:10], 20)
            scorer.similar_lists(probe[:10], 20)  # both indexes built outside the clocks
            row[f"{method}_build_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            got[method], _ = scorer.user_lists(user_f, seen, 20)
            row[f"{method}_s_per_1k_users"] = round((time.perf_counter() - t) / sample * 1000, 4)
            t = time.perf_counter()
            got[method + "_sim"], _ = scorer.similar_lists(probe, 20)
            row[f"{method}_similar_all_s_extrapolated"] = round(
                (time.perf_counter() - t) / len(probe) * items, 1)
        row["exact_identical_share"] = round(float((got["exact"][:few] == base).mean()), 4)
        row["recall20_users"] = round(_overlap(got["ann"], got["exact"]), 4)
        row["recall20_similar"] = round(_overlap(got["ann_sim"], got["exact_sim"]), 4)
        for m in ("numpy", "exact", "ann"):
            row[f"{m}_1M_users_s_extrapolated"] = round(row[f"{m}_s_per_1k_users"] * 1000, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def clustered(rng, centres, rows: int):
    """``rows`` synthetic factors around random ``centres`` (clustered, as trained factors
    of a catalogue with subjects are; uniform noise would make every neighbour a tie)."""
    import numpy as np

    return (centres[rng.integers(0, len(centres), rows)]
            + 0.5 * rng.standard_normal((rows, centres.shape[1]))).astype(np.float32)


def similar_to_redis(items: int, factors: int, threads: int, sample: int = 2000) -> dict:
    """Every resource's similar list for a synthetic catalogue of ``items`` (clustered
    factors, not trained ones: say so when quoting), scored with the approximate index and
    written by the publisher to a fresh redis-server, as ``recs train`` writes them. Reports
    the index build, the scoring-and-writing seconds, Redis bytes per resource, and recall@20
    of the lists read back from Redis against exact search on ``sample`` resources."""
    from types import SimpleNamespace

    import numpy as np

    from recs.localstack import RedisServer
    from store.keys import Keys
    from store.publish import Publisher
    from trainer.scoring.lists import similar_batches
    from trainer.scoring.search import Scorer
    from trainer.scoring_config import ScoringConfig

    rng = np.random.default_rng(1)
    item_f = clustered(rng, rng.standard_normal((max(16, items // 300), factors)), items)
    ids = np.arange(1, items + 1, dtype=np.int64)
    model = SimpleNamespace(items=SimpleNamespace(ids=ids), item_factors=item_f)
    row = {"items": items, "factors": factors, "threads": threads, "method": "ann"}
    with tempfile.TemporaryDirectory(prefix="recs-similar-") as tmp:
        server = RedisServer(Path(tmp) / "redis", appendonly=False)
        server.start()
        try:
            client = server.client()
            base = client.info("memory")["used_memory"]
            started = time.perf_counter()
            scorer = Scorer(item_f, ScoringConfig("ann", "ann", faiss_min_items=0,
                                                  threads=threads))
            scorer.similar_lists(np.arange(10), 20)
            row["index_build_s"] = round(time.perf_counter() - started, 1)
            t = time.perf_counter()
            written = Publisher(client, Keys(), "en").write_similar(
                similar_batches(model, 20, scorer))
            row["score_and_write_s"] = round(time.perf_counter() - t, 1)
            row["total_s"] = round(time.perf_counter() - started, 1)
            row["lists_written"] = written
            row["redis_bytes_per_resource"] = round(
                (client.info("memory")["used_memory"] - base) / items)
            probe = rng.choice(items, min(sample, items), replace=False)
            exact, _ = Scorer(item_f, ScoringConfig("exact", "exact", faiss_min_items=0,
                                                    threads=threads)).similar_lists(probe, 20)
            stored = [np.array(client.zrevrange(Keys().similar("en", int(ids[p])), 0, -1),
                               dtype=np.int64) for p in probe]
            row["recall20_vs_exact"] = round(
                _overlap(stored, [ids[want[want >= 0]] for want in exact]), 4)
            row["load1"] = round(os.getloadavg()[0], 2)
            client.close()
        finally:
            server.stop()
    print(json.dumps(row), flush=True)
    return row


def merge(paths: list[Path], out: Path) -> int:
    """One scale.csv and chart from the rows of several runs, ordered by size."""
    rows: list[dict] = []
    for path in paths:
        with open(path, newline="") as fh:
            rows += list(csv.DictReader(fh))
    numeric = ("users", "total_s", "user_lists_s", "peak_rss_mb")
    rows = [{**r, **{k: float(r[k]) for k in numeric}} for r in rows]
    rows.sort(key=lambda r: (r["users"], r["engine"], r["method"]))
    write_rows(rows, out)
    return 0


def write_rows(rows: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "scale.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*COLUMNS, "backfill_s", "spark_jvm_peak_rss_mb"],
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows({**r, "users": int(r["users"]), "peak_rss_mb": int(r["peak_rss_mb"])}
                         for r in rows)
    chart(rows, out / "scale.png")
    print(f"wrote {out / 'scale.csv'} and {out / 'scale.png'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", default="20000,100000,300000",
                   help="comma-separated sizes (1000000 takes about 15 minutes on 2 cores)")
    p.add_argument("--spark-max-users", type=int, default=100_000)
    p.add_argument("--spark-io", choices=["driver", "executors", "both"], default="driver",
                   help="Spark rows: the driver path, the executors path, or both")
    p.add_argument("--only-spark", action="store_true",
                   help="skip the implicit rows (Spark sizes measured apart)")
    p.add_argument("--factors", type=int, default=40)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--redis-url", help=argparse.SUPPRESS)
    p.add_argument("--engine", default="implicit", help=argparse.SUPPRESS)
    p.add_argument("--method", default="exact", help=argparse.SUPPRESS)
    p.add_argument("--all-users", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--scoring-only", default="",
                   help="comma-separated catalogue sizes: time only the scoring, on "
                        "synthetic clustered factors (e.g. 66000,1000000)")
    p.add_argument("--threads", type=int, default=1, help="faiss threads (--scoring-only)")
    p.add_argument("--sample", type=int, default=20000,
                   help="users (and resources) scored per size with --scoring-only")
    p.add_argument("--similar-to-redis", type=int, default=0, metavar="RESOURCES",
                   help="build and write to Redis the similar lists of a synthetic catalogue "
                        "of this many resources (e.g. 1000000), approximate index")
    p.add_argument("--merge", nargs="+", type=Path, default=[], metavar="CSV",
                   help="join the scale.csv files of separate runs (e.g. 1M users run "
                        "alone) into one --out scale.csv and chart")
    args = p.parse_args()
    if args.merge:
        return merge(args.merge, args.out)
    if args.similar_to_redis:
        row = similar_to_redis(args.similar_to_redis, args.factors, args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "similar_to_redis.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(row))
            writer.writeheader()
            writer.writerow(row)
        return 0
    if args.scoring_only:
        rows = scoring_only([int(i) for i in args.scoring_only.split(",")], args.sample,
                            args.factors, args.threads)
        args.out.mkdir(parents=True, exist_ok=True)
        with open(args.out / "scoring.csv", "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return 0
    if args.child:
        print(json.dumps(child(args)))
        return 0
    rows: list[dict] = []
    for users in [int(u) for u in args.users.split(",") if u.strip()]:
        one_size(users, args, rows)
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
