"""Each ``recs`` command: one row of :data:`COMMANDS` (name, handler, help) and one function
that adds its options, in ``--help`` order; the groups several commands share are
recs/cli_options.py's. A handler is named as a ``"module:function"`` string and imported only
when its command runs, so ``recs train`` never imports Kafka.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from core import options as o
from recs.cli_options import (
    CONSUMER,
    CONTROL,
    IMPRESSIONS,
    SEED,
    SYNTH,
    THREADS,
    UPDATER,
    D,
    Default,
    clicks,
    consumer_loop,
    extract,
    gate,
    kafka,
    lookup,
    metrics,
    model_options,
    scoring,
    search,
    split,
    topics,
    trending,
)
from trainer.settings import SPARK_IO, SPLITS, EvaluateConfig, RetrainConfig

SERVE = "recs.serve_base:ServeConfig"


def _consume(p: argparse.ArgumentParser) -> None:
    kafka(p)
    topics(p, CONSUMER)
    consumer_loop(p, CONSUMER)
    clicks(p)
    p.add_argument("--clicks", action="store_true",
                   help="attribute views to impressions as clicks (keeps a view window per "
                        "user; turn on where the apps publish impressions); RECS_CLICKS")


def _impressions(p: argparse.ArgumentParser) -> None:
    kafka(p)
    topics(p, IMPRESSIONS, "impressions-")
    consumer_loop(p, IMPRESSIONS)
    clicks(p)


def _update(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", action="append", type=o.lang,
                   help="only these languages, repeatable (default: all); RECS_LANG: en,es")
    p.add_argument("--batch-size", type=o.positive_int, default=Default(UPDATER, "batch_size"),
                   help="users per batch at most" + D)
    p.add_argument("--poll-interval", type=o.non_negative_float,
                   default=Default(UPDATER, "poll_interval"),
                   help="seconds to sleep when nothing is pending" + D)
    p.add_argument("--top-n", type=o.positive_int, default=Default(UPDATER, "top_n"),
                   help="recommendations kept per user" + D)
    p.add_argument("--lease-seconds", type=o.positive_float,
                   default=Default(UPDATER, "lease_seconds"),
                   help="how long a claimed user is held before another updater may take it "
                        "(covers an updater that died mid-batch)" + D)
    metrics(p, UPDATER)
    trending(p)


def _backfill(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="views CSV: user_id,resource_id,view_count (.gz ok)")
    p.add_argument("--lang", required=True, type=o.lang)
    p.add_argument("--force", action="store_true", help="load even if this file was loaded before")
    extract(p)


def _repair(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang,
                   help="one language (default: every language in Redis)")


def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang, help="one language (default: every language in Redis)")
    p.add_argument("--views", help="train offline from this views CSV instead of Redis")
    p.add_argument("--model-dir", default=RetrainConfig.model_dir,
                   help="where model files are written; checked before training" + D)
    p.add_argument("--every", type=o.non_negative_float, default=RetrainConfig.every,
                   help="repeat every SECONDS (with jitter); 0 = once" + D)
    p.add_argument("--top-n", type=o.positive_int, default=RetrainConfig.top_n,
                   help="list length published to Redis" + D)
    p.add_argument("--evaluate", action="store_true",
                   help="hold out --test-fraction first and store metrics in the model hash")
    split(p)
    gate(p)
    scoring(p)
    p.add_argument("--spark-io", choices=SPARK_IO, default=RetrainConfig.spark_io,
                   help="--engine spark: executors read the counts from Redis and write the "
                        "user lists (for a cluster); driver does both in this process")
    metrics(p, "trainer.settings:RetrainConfig")  # served only while repeating with --every
    model_options(p)


def _tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang,
                   help="tune from the Redis counts and store the settings in Redis")
    p.add_argument("--views", help="tune offline on this views CSV instead")
    p.add_argument("--out", help="with --views: write the settings JSON here")
    p.add_argument("--threads", type=THREADS, default=EvaluateConfig.threads,
                   help="implicit's training threads (0 = all cores)" + D)
    search(p)
    model_options(p)


def _history(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", required=True, type=o.lang)
    p.add_argument("--plot", help="also draw NDCG@10 over time to this PNG file")
    p.add_argument("--json", action="store_true")


def _experiment(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("start", "status", "stop", "promote", "report"))
    p.add_argument("arm", nargs="?", help="promote: the arm whose settings become the "
                   "language's")
    p.add_argument("--lang", required=True, type=o.lang)
    p.add_argument("--arms", help="start: NAME=SPEC:WEIGHT,... (SPEC: tuned, als, ease, "
                   "blend, auto or a settings JSON file; the first arm is the default)")
    p.add_argument("--id", help="start: the experiment id (default: LANG-DATE-TIME-XXXX)")
    p.add_argument("--json", action="store_true")


def _similar(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource_id")
    lookup(p, "similar lists")


def _recommend(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_id")
    lookup(p, "recommendations")


def _evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--views", required=True, help="views CSV")
    p.add_argument("--test", help="held-out views CSV (default: a seeded random split)")
    p.add_argument("--k", type=o.positive_int, default=EvaluateConfig.k,
                   help="cut-off for the ranking metrics" + D)
    p.add_argument("--json", action="store_true")
    split(p)
    p.add_argument("--split", choices=SPLITS, default=EvaluateConfig.split,
                   help="which pairs are held out: random (seeded) or time (each user's "
                        "latest; needs a ts column in --views)" + D)
    p.add_argument("--tune", action="store_true",
                   help="also tune on the training part and report the tuned model")
    search(p)
    model_options(p)


def _generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=Default("trainer.data.synth:SyntheticData.write", "out"),
                   help="output folder" + D)
    p.add_argument("--users", type=o.positive_int, default=Default(SYNTH, "n_users"),
                   help="users per language" + D)
    p.add_argument("--resources", type=o.int_range(2), default=Default(SYNTH, "n_resources"),
                   help="resources per language, at least 2" + D)
    p.add_argument("--langs", type=o.lang_list, default=Default(SYNTH, "langs"),
                   help="comma-separated languages" + D)
    p.add_argument("--seed", type=SEED, default=Default(SYNTH, "seed"), help="random seed" + D)
    p.add_argument("--subjects", type=o.positive_int, default=Default(SYNTH, "n_subjects"),
                   help="subjects per language" + D)
    p.add_argument("--mean-items", type=o.positive_float, default=Default(SYNTH, "mean_items"),
                   help="mean distinct resources per user (heavy-tailed)" + D)
    p.add_argument("--gzip", action="store_true", help="write views_{lang}.csv.gz")


def _serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [RECS_HOST]")
    p.add_argument("--port", type=o.int_range(1, 65535), default=8000, help="[RECS_PORT]")
    p.add_argument("--token", default="",
                   help="bearer token for every route but /healthz; prefer RECS_TOKEN (a flag "
                        "shows in ps); also turns on user look-ups on the page")
    g = p.add_argument_group("limits")
    for field, kind, what in (
            ("max_connections", o.positive_int,
             "client connections at once; past it 503 (lowered to fit the open-file limit)"),
            ("header_timeout", o.positive_float,
             "seconds a client has to send a whole request head"),
            ("redis_connections", o.positive_int,
             "Redis connection pool; requests wait for a free one")):
        g.add_argument("--" + field.replace("_", "-"), type=kind, default=Default(SERVE, field),
                       help=what + D)
    g = p.add_argument_group("consumer lag on the page (optional)")
    g.add_argument("--kafka-bootstrap-servers", default=Default(SERVE, "kafka_bootstrap_servers"),
                   help="ask Kafka for end offsets to show the consumer's lag; empty = off "
                        "[RECS_KAFKA_BOOTSTRAP_SERVERS]")
    g.add_argument("--topic", default=Default(SERVE, "topic"), help="the views topic [RECS_TOPIC]")
    g.add_argument("--group", default=Default(SERVE, "group"),
                   help="the consumer group [RECS_GROUP]")
    g.add_argument("--kafka-config", action="append", default=[], metavar="KEY=VALUE",
                   help="librdkafka setting, repeatable (as for recs consume)")


def _resources(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("load",), help="load: replace the language's details")
    p.add_argument("file", help="resources CSV: id,title,folder,subject,tags (.gz ok)")
    p.add_argument("--lang", required=True, type=o.lang)


def _hide(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource_ids", nargs="+", metavar="RESOURCE_ID")
    p.add_argument("--lang", type=o.lang, help="one language (default: every language)")
    p.add_argument("--reason", help="why (kept with the hidden entry)")


def _unhide(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource_ids", nargs="+", metavar="RESOURCE_ID")
    p.add_argument("--lang", type=o.lang, help="one language (default: every language)")


def _hidden(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang, required=True)
    p.add_argument("--json", action="store_true")


def _forget(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_ids", nargs="+", metavar="USER_ID")
    p.add_argument("--lang", type=o.lang, help="one language (default: every language)")


def _control(p: argparse.ArgumentParser) -> None:
    kafka(p)
    topics(p, CONTROL, "control-")
    consumer_loop(p, CONTROL)


def _trending_command(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang, help="one language (default: every language)")
    p.add_argument("--every", type=o.non_negative_float, default=0,
                   help="repeat every SECONDS (default: once)")
    trending(p)


Command = tuple[str, str, str, Callable[[argparse.ArgumentParser], None]]

# The commands, in --help order: (name, "module:handler", help, add its options).
# A handler module is imported only when its command runs, so `recs train` never loads Kafka.
COMMANDS: list[Command] = [
    # -- streaming
    ("consume", "consumers.consume_command:cmd_consume", "Kafka view events -> counts in Redis",
     _consume),
    ("update", "consumers.update_command:cmd_update",
     "fold users with new views into the current model between retrains", _update),
    ("backfill", "consumers.backfill:cmd_backfill",
     "load a views CSV extract into the Redis counts", _backfill),
    ("repair", "consumers.repair:cmd_repair",
     "count the views parked in the quarantine once their keys are fixed", _repair),
    # -- training
    ("train", "trainer.commands.train:cmd_train",
     "train from the Redis counts and publish, or offline from --views", _train),
    ("tune", "trainer.commands.tune:cmd_tune",
     "search the model settings on a validation split; store the best", _tune),
    ("history", "trainer.commands.history:cmd_history",
     "quality of the models trained with --evaluate, oldest first", _history),
    ("experiment", "trainer.commands.experiment:cmd_experiment",
     "A/B experiments of model settings: start, status, stop, promote, report", _experiment),
    ("similar", "trainer.commands.lookup:cmd_similar", "top-N resources similar to one", _similar),
    ("recommend", "trainer.commands.lookup:cmd_recommend", "top-N resources for a user",
     _recommend),
    ("evaluate", "trainer.commands.evaluate:cmd_evaluate",
     "held-out metrics for the model and a popularity baseline", _evaluate),
    ("generate", "trainer.commands.generate:cmd_generate",
     "write a synthetic GoConqr-like extract (views and resources CSVs)", _generate),
    # -- serving
    ("serve", "recs.serve_command:cmd_serve", "HTTP API and operator page over the published lists",
     _serve),
    ("resources", "recs.catalogue:cmd_resources",
     "load resource details (title, folder, subject, tags) into Redis", _resources),
    # -- take-downs, forgetting and the trending list (issue 13)
    ("hide", "trainer.commands.takedown:cmd_hide",
     "take resources out of every list now, until unhidden", _hide),
    ("unhide", "trainer.commands.takedown:cmd_unhide",
     "let hidden resources back (their own similar list at once, the rest at the next retrain)",
     _unhide),
    ("hidden", "trainer.commands.takedown:cmd_hidden", "list the hidden resources", _hidden),
    ("forget", "trainer.commands.takedown:cmd_forget",
     "remove every trace of users: views, counts, factors, lists, queue entries", _forget),
    ("impressions", "consumers.impressions:cmd_impressions",
     "impression events from Kafka -> impression and click counters, each once",
     _impressions),
    ("control", "consumers.control:cmd_control",
     "control events (hide, unhide, forget) from Kafka, each applied once", _control),
    ("trending", "consumers.trending:cmd_trending",
     "refresh the trending list (also done by recs update every minute)", _trending_command),
]
