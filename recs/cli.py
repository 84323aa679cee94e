"""The ``recs`` command: one parser, handlers imported only when their command runs.

Every option also reads ``RECS_<OPTION>`` from the environment (``--redis-url`` reads
``RECS_REDIS_URL``); a flag on the command line wins. Handlers live beside the code they
drive and are named as ``"module:function"`` strings, so ``recs train`` never imports Kafka.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from recs.errors import RecsError
from recs.options import port, positive_int
from trainer.config import ENGINES, SCALINGS, FilterConfig, TrainConfig
from trainer.scoring import METHODS as SCORING_METHODS
from trainer.scoring import ScoringConfig

ENV_PREFIX = "RECS_"
_TRUE = {"1", "true", "yes", "on"}


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common")
    g.add_argument("--redis-url", default="redis://localhost:6379/0",
                   help="Redis URL; may carry a password and use rediss:// [RECS_REDIS_URL]")
    g.add_argument("--prefix", default="recs", help="key prefix [RECS_PREFIX]")
    g.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... [RECS_LOG_LEVEL]")
    g.add_argument("--log-format", default="text", choices=("text", "json"),
                   help="json for one structured object per line [RECS_LOG_FORMAT]")


def _filters(p: argparse.ArgumentParser) -> None:
    d = FilterConfig()
    g = p.add_argument_group("filters (0 turns one off)")
    g.add_argument("--min-item-views", type=int, default=d.min_item_views,
                   help=f"drop resources with fewer total views (default {d.min_item_views})")
    g.add_argument("--max-item-views", type=int, default=d.max_item_views,
                   help=f"then drop resources with this many or more (default {d.max_item_views})")
    g.add_argument("--min-user-views", type=int, default=d.min_user_views,
                   help=f"then drop users with fewer views (default {d.min_user_views})")


def _hyper(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("model")
    g.add_argument("--factors", type=int, default=d.factors)
    g.add_argument("--regularization", type=float, default=d.regularization)
    g.add_argument("--iterations", type=int, default=d.iterations)
    g.add_argument("--alpha", type=float, default=d.alpha)
    g.add_argument("--scaling", choices=SCALINGS, default=d.scaling,
                   help="confidence c = 1 + alpha * f(views); linear is the seed's setting")
    g.add_argument("--seed", type=int, default=d.seed, help="random seed (factors and splits)")
    g.add_argument("--engine", choices=ENGINES, default=d.engine,
                   help="who fits ALS: implicit (CPU), spark (Spark MLlib, needs the spark "
                        "extra and Java) or implicit-gpu (implicit's CUDA build)")
    g.add_argument("--spark-master", default="local[*]",
                   help="Spark master URL for --engine spark (local[*], spark://..., yarn)")
    g.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   help="any Spark setting (repeatable); RECS_SPARK_CONF takes a "
                        "comma-separated list")


def _extract(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip malformed CSV rows (and report them) instead of stopping")


def _lookup(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-n", type=int, default=10, help="list length (default 10)")
    p.add_argument("--lang", help=f"read the published {what} from Redis for this language")
    p.add_argument("--model", help="read from a model file instead of Redis")
    p.add_argument("--resources", help="resources CSV (id,title,folder,subject,tags) for titles")
    p.add_argument("--json", action="store_true", help="print a JSON array")


def _kafka(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kafka")
    g.add_argument("--kafka-bootstrap-servers", default="localhost:9092",
                   help="[RECS_KAFKA_BOOTSTRAP_SERVERS]")
    g.add_argument("--kafka-config", action="append", default=[], metavar="KEY=VALUE",
                   help="any librdkafka setting (repeatable), e.g. security.protocol=SASL_SSL; "
                        "RECS_KAFKA_CONFIG takes a comma-separated list")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _common(common)

    def command(name: str, handler: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    # -- streaming ---------------------------------------------------------------------
    p = command("consume", "consumers.consume:cmd_consume", "Kafka view events -> counts in Redis")
    _kafka(p)
    p.add_argument("--topic", default="resource-views", help="[RECS_TOPIC]")
    p.add_argument("--dlq-topic", default="resource-views.dlq", help="[RECS_DLQ_TOPIC]")
    p.add_argument("--group", default="recs", help="consumer group id [RECS_GROUP]")
    p.add_argument("--batch-size", type=int, default=5000, help="events per batch at most")
    p.add_argument("--batch-timeout", type=float, default=0.05,
                   help="seconds a batch may wait to fill before it is written")
    p.add_argument("--metrics-port", type=int, default=9100, help="Prometheus port; 0 = off")
    p.add_argument("--redis-retry-max", type=float, default=5.0,
                   help="cap in seconds of the doubling wait between Redis retries")
    p.add_argument("--offset-check-interval", type=float, default=5.0,
                   help="while idle, check this often (s) that Redis still holds our offsets")
    p.add_argument("--until-drained", action="store_true",
                   help="exit once every assigned partition is written up to its end")

    p = command("update", "consumers.updater:cmd_update",
                "fold users with new views into the current model between retrains")
    p.add_argument("--lang", action="append", help="only these languages (default: all)")
    p.add_argument("--batch-size", type=int, default=500, help="users per batch at most")
    p.add_argument("--poll-interval", type=float, default=0.02,
                   help="seconds to sleep when nothing is pending")
    p.add_argument("--top-n", type=int, default=20, help="recommendations kept per user")
    p.add_argument("--lease-seconds", type=float, default=30.0,
                   help="how long a claimed user is held before another updater may take it "
                        "(covers an updater that died mid-batch)")
    p.add_argument("--metrics-port", type=int, default=9101, help="Prometheus port; 0 = off")

    p = command("backfill", "consumers.backfill:cmd_backfill",
                "load a views CSV extract into the Redis counts")
    p.add_argument("file", help="views CSV: user_id,resource_id,view_count (.gz ok)")
    p.add_argument("--lang", required=True)
    p.add_argument("--force", action="store_true", help="load even if this file was loaded before")
    _extract(p)

    # -- training ----------------------------------------------------------------------
    p = command("train", "trainer.commands:cmd_train",
                "train from the Redis counts and publish, or offline from --views")
    p.add_argument("--lang", help="one language (default: every language in Redis)")
    p.add_argument("--views", help="train offline from this views CSV instead of Redis")
    p.add_argument("--model-dir", default="models", help="where model files are written")
    p.add_argument("--every", type=float, default=0, help="repeat every SECONDS (with jitter)")
    p.add_argument("--top-n", type=int, default=20, help="list length published to Redis")
    p.add_argument("--evaluate", action="store_true",
                   help="hold out --test-fraction first and store metrics in the model hash")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=0,
                   help="implicit's training threads (0 = all cores)")
    p.add_argument("--lock-wait", type=float, default=0,
                   help="seconds to wait while another trainer publishes the language, "
                        "then skip it (exit code 0)")
    p.add_argument("--lock-ttl", type=float, default=60,
                   help="trainer lock expiry in seconds, renewed while training")
    p.add_argument("--similar-method", choices=SCORING_METHODS, default="auto",
                   help="similar lists: exact, ann (approximate index over item factors) or "
                        "auto (ann from --ann-min-items resources)")
    p.add_argument("--recs-method", choices=SCORING_METHODS, default="auto",
                   help="users' lists: exact, ann or auto, as --similar-method")
    p.add_argument("--ann-min-items", type=positive_int, default=ScoringConfig().ann_min_items,
                   help="auto scores similar lists with the approximate index from this many "
                        "resources")
    p.add_argument("--recs-ann-min-items", type=positive_int,
                   default=ScoringConfig().recs_ann_min_items,
                   help="the same for users' lists (default: exact for any catalogue measured)")
    p.add_argument("--scoring-threads", type=positive_int, default=ScoringConfig().threads,
                   help="faiss threads while scoring the lists (default 1: the publisher "
                        "scores while it waits on Redis)")
    p.add_argument("--spark-io", choices=("driver", "executors"), default="driver",
                   help="--engine spark: executors read the counts from Redis and write the "
                        "user lists (for a cluster); driver does both in this process")
    p.add_argument("--metrics-port", type=port, default=9102,
                   help="Prometheus port while repeating with --every; 0 = off")
    _filters(p)
    _hyper(p)
    _extract(p)

    p = command("similar", "trainer.commands:cmd_similar", "top-N resources similar to one")
    p.add_argument("resource_id")
    _lookup(p, "similar lists")

    p = command("recommend", "trainer.commands:cmd_recommend", "top-N resources for a user")
    p.add_argument("user_id")
    _lookup(p, "recommendations")

    p = command("evaluate", "trainer.commands:cmd_evaluate",
                "held-out metrics for the model and a popularity baseline")
    p.add_argument("--views", required=True, help="views CSV")
    p.add_argument("--test", help="held-out views CSV (default: a seeded random split)")
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--k", type=int, default=10, help="cut-off for the ranking metrics")
    p.add_argument("--json", action="store_true")
    p.add_argument("--threads", type=int, default=0,
                   help="implicit's training threads (0 = all cores)")
    _filters(p)
    _hyper(p)
    _extract(p)

    p = command("generate", "trainer.synth:cmd_generate",
                "write a synthetic GoConqr-like extract (views and resources CSVs)")
    p.add_argument("--out", default="data/synthetic", help="output folder")
    p.add_argument("--users", type=int, default=5000)
    p.add_argument("--resources", type=int, default=800)
    p.add_argument("--langs", default="en,es", help="comma-separated languages")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--subjects", type=int, default=16, help="subjects per language")
    p.add_argument("--mean-items", type=float, default=14.0,
                   help="mean distinct resources per user (heavy-tailed)")
    p.add_argument("--gzip", action="store_true", help="write views_{lang}.csv.gz")

    _apply_env(parser)
    return parser


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.values()


def _apply_env(parser: argparse.ArgumentParser, environ=os.environ) -> None:
    """Make ``RECS_<DEST>`` the default of every optional argument that has it set.

    argparse converts string defaults with the option's ``type``, so env values are
    checked exactly like flags."""
    for p in [parser, *_subparsers(parser)]:
        for action in p._actions:
            if not action.option_strings or action.dest in ("help", "handler"):
                continue
            value = environ.get(ENV_PREFIX + action.dest.upper())
            if value is None:
                continue
            if isinstance(action, argparse._StoreTrueAction):
                action.default = value.strip().lower() in _TRUE
            elif isinstance(action, argparse._AppendAction):
                action.default = [v.strip() for v in value.split(",") if v.strip()]
            else:
                action.default = value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from recs.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    module_name, func_name = args.handler.split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except RecsError as exc:
        print(f"recs {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
