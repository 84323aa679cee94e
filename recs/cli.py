"""The ``recs`` command: one parser, handlers imported only when their command runs.

Every option also reads ``RECS_<OPTION>`` from the environment (``--redis-url`` reads
``RECS_REDIS_URL``); a flag on the command line wins. Handlers live beside the code they
drive and are named as ``"module:function"`` strings, so ``recs train`` never imports Kafka.
A command is one row of ``COMMANDS`` (name, handler, help) and one small function that adds
its options; option groups shared by several commands are functions too.

Every option's default has one home: the library's config dataclass (``_From`` reads it
only when help is shown or the command runs), and every value, flag or variable, passes the
option's checked type from ``core/options.py``. A service error that reaches ``main``
(Redis down, a wrong password, a Kafka error) is one line with secrets masked, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence

from core import options as o
from core.errors import RecsError
from core.redact import mask_url, redact, register_settings, register_url
from store.trending import TrendingConfig
from trainer.config import (
    EASE_SCALINGS,
    ENGINES,
    MODELS,
    SCALINGS,
    EaseConfig,
    FilterConfig,
    TrainConfig,
)
from trainer.scoring.search import METHODS as SCORING_METHODS
from trainer.scoring.search import ScoringConfig

ENV_PREFIX = "RECS_"
_TRUE = {"1", "true", "yes", "on"}
_CONSUMER = "consumers.consume:ConsumerConfig"
_UPDATER = "consumers.updater:UpdaterConfig"
_CONTROL = "consumers.control:ControlDefaults"
_ONLINE = "trainer.pipeline.retrain:OnlineSettings"
_SYNTH = "trainer.data.synth:generate"
_SEED = o.int_range(0, 2**32 - 1)  # numpy's RandomState, which implicit seeds, takes no more
_THREADS = o.int_range(0, 1024)
_D = " (default %(default)s)"
_QUOTED_VALUE = re.compile(r'value \\?"[^"\\]*\\?"')


class _From:
    """A default whose home is a library dataclass field (or a function's keyword), read
    only when help is printed or the command runs, so building the parser imports no
    handler module (``recs train`` never loads Kafka)."""

    def __init__(self, target: str, name: str) -> None:
        self.target, self.name = target, name

    def value(self):
        module, attr = self.target.split(":")
        obj = getattr(importlib.import_module(module), attr)
        fields = getattr(obj, "__dataclass_fields__", None)
        if fields is not None:
            value = fields[self.name].default
        else:
            import inspect

            value = inspect.signature(obj).parameters[self.name].default
        # A sequence default is what its option takes as comma-separated text.
        return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value

    def __str__(self) -> str:
        return str(self.value())


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common")
    g.add_argument("--redis-url", default="redis://localhost:6379/0", type=o.redis_url,
                   help="Redis URL; may carry a password and use rediss:// [RECS_REDIS_URL]")
    g.add_argument("--prefix", default="recs", help="key prefix [RECS_PREFIX]")
    g.add_argument("--log-level", default="INFO", type=o.log_level,
                   help="DEBUG, INFO, WARNING, ERROR or CRITICAL [RECS_LOG_LEVEL]")
    g.add_argument("--log-format", default="text", choices=("text", "json"),
                   help="json for one structured object per line [RECS_LOG_FORMAT]")


def _filters(p: argparse.ArgumentParser) -> None:
    d = FilterConfig()
    g = p.add_argument_group("filters (0 turns one off)")
    g.add_argument("--min-item-views", type=o.non_negative_int, default=d.min_item_views,
                   help=f"drop resources with fewer total views (default {d.min_item_views})")
    g.add_argument("--max-item-views", type=o.non_negative_int, default=d.max_item_views,
                   help=f"then drop resources with this many or more (default {d.max_item_views})")
    g.add_argument("--min-user-views", type=o.non_negative_int, default=d.min_user_views,
                   help=f"then drop users with fewer views (default {d.min_user_views})")


def _hyper(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("model")
    g.add_argument("--factors", type=o.positive_int, default=d.factors,
                   help="latent dimensions" + _D)
    g.add_argument("--regularization", type=o.non_negative_float, default=d.regularization,
                   help="L2 penalty" + _D)
    g.add_argument("--iterations", type=o.positive_int, default=d.iterations,
                   help="ALS sweeps" + _D)
    g.add_argument("--alpha", type=o.positive_float, default=d.alpha,
                   help="confidence weight of a view" + _D)
    g.add_argument("--scaling", choices=SCALINGS, default=d.scaling,
                   help="confidence c = 1 + alpha * f(views); linear is the seed's setting" + _D)
    g.add_argument("--seed", type=_SEED, default=d.seed,
                   help="random seed (factors and splits), 0 .. 2^32-1" + _D)

    g.add_argument("--engine", choices=ENGINES, default=d.engine,
                   help="who fits ALS: implicit (CPU), spark (Spark MLlib, needs the spark "
                        "extra and Java) or implicit-gpu (implicit's CUDA build)")
    g.add_argument("--spark-master", default="local[*]",
                   help="Spark master URL for --engine spark (local[*], spark://..., yarn)")
    g.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   type=o.key_value,
                   help="any Spark setting (repeatable); RECS_SPARK_CONF takes a JSON "
                        "object, one KEY=VALUE per line, or a comma-separated list")


def _models(p: argparse.ArgumentParser) -> None:
    d = EaseConfig()
    g = p.add_argument_group("model choice (--settings FILE: tuned settings from `recs tune`; "
                             "a flag or RECS_* variable given wins over them)")
    g.add_argument("--model", dest="model_kind", choices=MODELS, default="als",
                   help="als, ease, their blend, or auto (the best of the three on a "
                        "validation split of the training data) [RECS_MODEL_KIND]")
    g.add_argument("--ease-l2", type=o.positive_float, default=d.l2, help="EASE's lambda")
    g.add_argument("--ease-scaling", choices=EASE_SCALINGS, default=d.scaling,
                   help="what EASE's input holds per viewed resource")
    g.add_argument("--blend-weight", type=o.float_range(0.0, 1.0), default=None,
                   help="ALS's weight in the blend (default: chosen on validation)")
    g.add_argument("--settings", help="tuned settings JSON written by `recs tune --out`")


def _search(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search (Optuna TPE, seeded by --seed)")
    g.add_argument("--trials", type=o.positive_int, default=30,
                   help="trials at most (default 30)")
    g.add_argument("--timeout", type=o.positive_float, default=None,
                   help="stop starting trials after "
                   "this many seconds")
    g.add_argument("--search", default="als,ease,blend",
                   help="comma-separated models to search (default als,ease,blend)")


def _extract(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip malformed CSV rows (and report them) instead of stopping")


def _lookup(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-n", type=o.positive_int, default=10, help="list length" + _D)
    p.add_argument("--lang", type=o.lang,
                   help=f"read the published {what} from Redis for this language")
    p.add_argument("--model", help="read from a model file instead of Redis")
    p.add_argument("--resources", help="resources CSV (id,title,folder,subject,tags) for titles")
    p.add_argument("--json", action="store_true", help="print a JSON array")


def _kafka(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kafka")
    g.add_argument("--kafka-bootstrap-servers", default=_From(_CONSUMER, "bootstrap_servers"),
                   help="[RECS_KAFKA_BOOTSTRAP_SERVERS]" + _D)
    g.add_argument("--kafka-config", action="append", default=[], metavar="KEY=VALUE",
                   type=o.key_value,
                   help="any librdkafka setting (repeatable), e.g. security.protocol=SASL_SSL; "
                        "RECS_KAFKA_CONFIG takes a JSON object ({\"sasl.password\": \"a,b\"}: "
                        "any value), one KEY=VALUE per line, or KEY=VALUE,KEY=VALUE")
    g.add_argument("--broker-warn-after", type=o.positive_float,
                   default=_From(_CONSUMER, "broker_warn_after"),
                   help="warn when no broker has been reachable for this many seconds" + _D)


def _metrics(p: argparse.ArgumentParser, config: str) -> None:
    p.add_argument("--metrics-port", type=o.port, default=_From(config, "metrics_port"),
                   help="Prometheus port; 0 = off" + _D)
    p.add_argument("--metrics-address", type=o.host, default=_From(config, "metrics_address"),
                   help="address the metrics server listens on (README: why this default)" + _D)


def _split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-fraction", type=o.float_range(0.0, 1.0),
                   default=_From(_ONLINE, "test_fraction"),
                   help="share of (user, resource) pairs held out, between 0 and 1" + _D)
    p.add_argument("--threads", type=_THREADS, default=_From(_ONLINE, "threads"),
                   help="implicit's training threads (0 = all cores)" + _D)


def _trending(p: argparse.ArgumentParser) -> None:
    """Options of the trending refresh, for ``recs update`` and ``recs trending``."""
    d = TrendingConfig()
    g = p.add_argument_group("trending list (users the model cannot place)")
    g.add_argument("--trending-every", type=o.non_negative_float, default=d.every,
                   help=f"refresh every SECONDS (default {d.every:g}; 0: recs update does not)")
    g.add_argument("--trending-half-life", type=o.positive_float, default=d.half_life,
                   help=f"seconds after which a view weighs half (default {d.half_life:g})")
    g.add_argument("--trending-size", type=o.positive_int, default=d.size,
                   help=f"resources in the list (default {d.size})")
    if not any(a.dest == "max_item_views" for a in p._actions):
        g.add_argument("--max-item-views", type=o.non_negative_int,
                       default=FilterConfig().max_item_views,
                       help="leave out resources with this many all-time views or more "
                            "(0: no cap; the training filter's default)")


def _scoring(p: argparse.ArgumentParser) -> None:
    d = ScoringConfig()
    p.add_argument("--similar-method", choices=SCORING_METHODS, default="auto",
                   help="similar lists: exact, ann (approximate index over item factors) or "
                        "auto (ann from --ann-min-items resources)")
    p.add_argument("--recs-method", choices=SCORING_METHODS, default="auto",
                   help="users' lists: exact, ann or auto, as --similar-method")
    p.add_argument("--ann-min-items", type=o.positive_int, default=d.ann_min_items,
                   help="auto scores similar lists with the approximate index from this many "
                        "resources")
    p.add_argument("--recs-ann-min-items", type=o.positive_int, default=d.recs_ann_min_items,
                   help="the same for users' lists (default: exact for any catalogue measured)")
    p.add_argument("--scoring-threads", type=o.positive_int, default=d.threads,
                   help="faiss threads while scoring the lists (default 1: the publisher "
                        "scores while it waits on Redis)")


def _gate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-wait", type=o.non_negative_float, default=_From(_ONLINE, "lock_wait"),
                   help="seconds to wait while another trainer publishes the language, "
                        "then skip it (exit code 0)" + _D)
    p.add_argument("--lock-ttl", type=o.float_range(1.0), default=_From(_ONLINE, "lock_ttl"),
                   help="trainer lock expiry in seconds (>= 1), renewed while training" + _D)
    p.add_argument("--gate-margin", type=o.float_range(0.0, 1.0),
                   default=_From(_ONLINE, "gate_margin"),
                   help="with --evaluate: keep the live model if the new one's held-out "
                        "NDCG@10 is more than this fraction below its last figure, or below "
                        "popularity's (default 0.05)")
    p.add_argument("--force", action="store_true", help="publish even if the gate says no")


def _model_options(p: argparse.ArgumentParser) -> None:
    """What every command that fits a model takes: filters, ALS, model choice, CSV rows."""
    _filters(p)
    _hyper(p)
    _models(p)
    _extract(p)


# -- one function per command: its own options, in --help order --------------------------

def _consume(p: argparse.ArgumentParser) -> None:
    _kafka(p)
    p.add_argument("--topic", default=_From(_CONSUMER, "topic"), help="[RECS_TOPIC]" + _D)
    p.add_argument("--dlq-topic", default=_From(_CONSUMER, "dlq_topic"),
                   help="[RECS_DLQ_TOPIC]" + _D)
    p.add_argument("--group", default=_From(_CONSUMER, "group"),
                   help="consumer group id [RECS_GROUP]" + _D)
    p.add_argument("--batch-size", type=o.positive_int, default=_From(_CONSUMER, "batch_size"),
                   help="events per batch at most" + _D)
    p.add_argument("--batch-timeout", type=o.positive_float,
                   default=_From(_CONSUMER, "batch_timeout"),
                   help="seconds a batch may wait to fill before it is written" + _D)
    _metrics(p, _CONSUMER)
    p.add_argument("--redis-retry-max", type=o.positive_float,
                   default=_From(_CONSUMER, "retry_max"),
                   help="cap in seconds of the doubling wait between Redis retries" + _D)
    p.add_argument("--offset-check-interval", type=o.positive_float,
                   default=_From(_CONSUMER, "offset_check_interval"),
                   help="while idle, check this often (s) that Redis still holds our offsets" + _D)
    p.add_argument("--until-drained", action="store_true",
                   help="exit once every assigned partition is written up to its end")


def _update(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", action="append", type=o.lang,
                   help="only these languages, repeatable (default: all); RECS_LANG: en,es")
    p.add_argument("--batch-size", type=o.positive_int, default=_From(_UPDATER, "batch_size"),
                   help="users per batch at most" + _D)
    p.add_argument("--poll-interval", type=o.non_negative_float,
                   default=_From(_UPDATER, "poll_interval"),
                   help="seconds to sleep when nothing is pending" + _D)
    p.add_argument("--top-n", type=o.positive_int, default=_From(_UPDATER, "top_n"),
                   help="recommendations kept per user" + _D)
    p.add_argument("--lease-seconds", type=o.positive_float,
                   default=_From(_UPDATER, "lease_seconds"),
                   help="how long a claimed user is held before another updater may take it "
                        "(covers an updater that died mid-batch)" + _D)
    _metrics(p, _UPDATER)
    _trending(p)


def _backfill(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="views CSV: user_id,resource_id,view_count (.gz ok)")
    p.add_argument("--lang", required=True, type=o.lang)
    p.add_argument("--force", action="store_true", help="load even if this file was loaded before")
    _extract(p)


def _repair(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang,
                   help="one language (default: every language in Redis)")


def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang, help="one language (default: every language in Redis)")
    p.add_argument("--views", help="train offline from this views CSV instead of Redis")
    p.add_argument("--model-dir", default=_From(_ONLINE, "model_dir"),
                   help="where model files are written; checked before training" + _D)
    p.add_argument("--every", type=o.non_negative_float, default=0,
                   help="repeat every SECONDS (with jitter); 0 = once" + _D)
    p.add_argument("--top-n", type=o.positive_int, default=_From(_ONLINE, "top_n"),
                   help="list length published to Redis" + _D)
    p.add_argument("--evaluate", action="store_true",
                   help="hold out --test-fraction first and store metrics in the model hash")
    _split(p)
    _gate(p)
    _scoring(p)
    p.add_argument("--spark-io", choices=("driver", "executors"), default="driver",
                   help="--engine spark: executors read the counts from Redis and write the "
                        "user lists (for a cluster); driver does both in this process")
    _metrics(p, _ONLINE)  # served only while repeating with --every
    _model_options(p)


def _tune(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang,
                   help="tune from the Redis counts and store the settings in Redis")
    p.add_argument("--views", help="tune offline on this views CSV instead")
    p.add_argument("--out", help="with --views: write the settings JSON here")
    p.add_argument("--threads", type=_THREADS, default=_From(_ONLINE, "threads"),
                   help="implicit's training threads (0 = all cores)")
    _search(p)
    _model_options(p)


def _history(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", required=True, type=o.lang)
    p.add_argument("--plot", help="also draw NDCG@10 over time to this PNG file")
    p.add_argument("--json", action="store_true")


def _similar(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource_id")
    _lookup(p, "similar lists")


def _recommend(p: argparse.ArgumentParser) -> None:
    p.add_argument("user_id")
    _lookup(p, "recommendations")


def _evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--views", required=True, help="views CSV")
    p.add_argument("--test", help="held-out views CSV (default: a seeded random split)")
    p.add_argument("--k", type=o.positive_int, default=10,
                   help="cut-off for the ranking metrics" + _D)
    p.add_argument("--json", action="store_true")
    _split(p)
    p.add_argument("--tune", action="store_true",
                   help="also tune on the training part and report the tuned model")
    _search(p)
    _model_options(p)


def _generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="data/synthetic", help="output folder")
    p.add_argument("--users", type=o.positive_int, default=_From(_SYNTH, "n_users"),
                   help="users per language" + _D)
    p.add_argument("--resources", type=o.int_range(2), default=_From(_SYNTH, "n_resources"),
                   help="resources per language, at least 2" + _D)
    p.add_argument("--langs", type=o.lang_list, default=_From(_SYNTH, "langs"),
                   help="comma-separated languages" + _D)
    p.add_argument("--seed", type=_SEED, default=_From(_SYNTH, "seed"), help="random seed" + _D)
    p.add_argument("--subjects", type=o.positive_int, default=_From(_SYNTH, "n_subjects"),
                   help="subjects per language" + _D)
    p.add_argument("--mean-items", type=o.positive_float, default=_From(_SYNTH, "mean_items"),
                   help="mean distinct resources per user (heavy-tailed)" + _D)
    p.add_argument("--gzip", action="store_true", help="write views_{lang}.csv.gz")


def _serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on [RECS_HOST]")
    p.add_argument("--port", type=o.int_range(1, 65535), default=8000, help="[RECS_PORT]")
    p.add_argument("--token", default="",
                   help="bearer token for every route but /healthz; prefer RECS_TOKEN (a flag "
                        "shows in ps); also turns on user look-ups on the page")
    g = p.add_argument_group("consumer lag on the page (optional)")
    g.add_argument("--kafka-bootstrap-servers", default="",
                   help="ask Kafka for end offsets to show the consumer's lag; empty = off "
                        "[RECS_KAFKA_BOOTSTRAP_SERVERS]")
    g.add_argument("--topic", default="resource-views", help="the views topic [RECS_TOPIC]")
    g.add_argument("--group", default="recs", help="the consumer group [RECS_GROUP]")
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
    _kafka(p)
    p.add_argument("--control-topic", default=_From(_CONTROL, "topic"),
                   help="[RECS_CONTROL_TOPIC]" + _D)
    p.add_argument("--control-dlq-topic", default=_From(_CONTROL, "dlq_topic"),
                   help="[RECS_CONTROL_DLQ_TOPIC]" + _D)
    p.add_argument("--control-group", default=_From(_CONTROL, "group"),
                   help="[RECS_CONTROL_GROUP]" + _D)
    p.add_argument("--batch-size", type=o.positive_int, default=_From(_CONTROL, "batch_size"),
                   help="events per batch at most" + _D)
    p.add_argument("--batch-timeout", type=o.positive_float,
                   default=_From(_CONSUMER, "batch_timeout"),
                   help="seconds a batch may wait to fill" + _D)
    p.add_argument("--metrics-port", type=o.port, default=_From(_CONTROL, "metrics_port"),
                   help="Prometheus port; 0 = off" + _D)
    p.add_argument("--metrics-address", type=o.host, default=_From(_CONSUMER, "metrics_address"),
                   help="address the metrics server listens on" + _D)
    p.add_argument("--redis-retry-max", type=o.positive_float,
                   default=_From(_CONSUMER, "retry_max"),
                   help="cap in seconds of the doubling wait between Redis retries" + _D)
    p.add_argument("--offset-check-interval", type=o.positive_float,
                   default=_From(_CONSUMER, "offset_check_interval"),
                   help="while idle: check the offsets in Redis and settle queued hides" + _D)
    p.add_argument("--until-drained", action="store_true")


def _trending_command(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lang", type=o.lang, help="one language (default: every language)")
    p.add_argument("--every", type=o.non_negative_float, default=0,
                   help="repeat every SECONDS (default: once)")
    _trending(p)


Command = tuple[str, str, str, Callable[[argparse.ArgumentParser], None]]

# The commands, in --help order: (name, "module:handler", help, add its options).
# A handler module is imported only when its command runs, so `recs train` never loads Kafka.
COMMANDS: list[Command] = [
    # -- streaming
    ("consume", "consumers.consume:cmd_consume", "Kafka view events -> counts in Redis",
     _consume),
    ("update", "consumers.updater:cmd_update",
     "fold users with new views into the current model between retrains", _update),
    ("backfill", "consumers.backfill:cmd_backfill",
     "load a views CSV extract into the Redis counts", _backfill),
    ("repair", "consumers.repair:cmd_repair",
     "count the views parked in the quarantine once their keys are fixed", _repair),
    # -- training
    ("train", "trainer.commands.train:cmd_train",
     "train from the Redis counts and publish, or offline from --views", _train),
    ("tune", "trainer.commands.train:cmd_tune",
     "search the model settings on a validation split; store the best", _tune),
    ("history", "trainer.commands.train:cmd_history",
     "quality of the models trained with --evaluate, oldest first", _history),
    ("similar", "trainer.commands.train:cmd_similar", "top-N resources similar to one", _similar),
    ("recommend", "trainer.commands.train:cmd_recommend", "top-N resources for a user", _recommend),
    ("evaluate", "trainer.commands.train:cmd_evaluate",
     "held-out metrics for the model and a popularity baseline", _evaluate),
    ("generate", "trainer.data.synth:cmd_generate",
     "write a synthetic GoConqr-like extract (views and resources CSVs)", _generate),
    # -- serving
    ("serve", "recs.serve:cmd_serve", "HTTP API and operator page over the published lists",
     _serve),
    ("resources", "recs.catalogue:cmd_resources",
     "load resource details (title, folder, subject, tags) into Redis", _resources),
    # -- take-downs, forgetting and the trending list (issue 13)
    ("hide", "trainer.pipeline.takedown:cmd_hide",
     "take resources out of every list now, until unhidden", _hide),
    ("unhide", "trainer.pipeline.takedown:cmd_unhide",
     "let hidden resources back (their own similar list at once, the rest at the next retrain)",
     _unhide),
    ("hidden", "trainer.pipeline.takedown:cmd_hidden", "list the hidden resources", _hidden),
    ("forget", "trainer.pipeline.takedown:cmd_forget",
     "remove every trace of users: views, counts, factors, lists, queue entries", _forget),
    ("control", "consumers.control:cmd_control",
     "control events (hide, unhide, forget) from Kafka, each applied once", _control),
    ("trending", "consumers.trending:cmd_trending",
     "refresh the trending list (also done by recs update every minute)", _trending_command),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recs", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _common(common)
    for name, handler, help_, add_options in COMMANDS:
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(handler=handler)
        add_options(p)
    _apply_env(parser)
    return parser


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.values()


def _apply_env(parser: argparse.ArgumentParser, environ=os.environ) -> None:
    """Make ``RECS_<DEST>`` the default of every optional argument that has it set.

    argparse converts string defaults with the option's ``type``, so env values are
    checked exactly like flags. A repeatable option keeps the raw text for ``_resolve``,
    which splits and checks it only for the command that runs."""
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
                action.default = None  # so _resolve can tell "no flag given"
                action.env_text = value
            else:
                action.default = value


def _env_items(action: argparse.Action) -> list:
    """The checked items of a repeatable option's ``RECS_*`` variable."""
    name = ENV_PREFIX + action.dest.upper()
    try:
        if action.type is o.key_value:
            items = o.key_value_items(action.env_text)
        else:
            items = [v.strip() for v in action.env_text.split(",") if v.strip()]
        return [action.type(item) if action.type else item for item in items]
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise argparse.ArgumentError(None, f"{name}: {exc}") from None


def _resolve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the chosen command's ``_From`` defaults and repeatable ``RECS_*`` variables,
    each checked by its option's type like a flag. A bad one is argparse's one-line
    error, exit 2."""
    command = next(a.choices[args.command] for a in parser._actions
                   if isinstance(a, argparse._SubParsersAction))
    for action in command._actions:
        current = getattr(args, action.dest, None)
        try:
            if isinstance(current, _From):
                value = current.value()
                if action.type is not None:
                    value = action.type(str(value))
                setattr(args, action.dest, value)
            elif current is None and hasattr(action, "env_text"):
                setattr(args, action.dest, _env_items(action))
        except argparse.ArgumentTypeError as exc:
            command.error(f"argument {'/'.join(action.option_strings)}: {exc}")
        except argparse.ArgumentError as exc:
            command.error(str(exc))


def _service_error(exc: Exception, args: argparse.Namespace) -> str | None:
    """One line for an error of a server we talk to (Redis, Kafka), or None for a bug."""
    import redis

    where = mask_url(getattr(args, "redis_url", "") or "")
    if isinstance(exc, redis.AuthenticationError):
        return f"Redis at {where} refused the credentials: {exc}"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return f"cannot reach Redis at {where}: {exc}"
    if isinstance(exc, redis.RedisError):
        return f"Redis at {where} answered with an error: {exc}"
    kafka = sys.modules.get("confluent_kafka")
    if kafka is not None and isinstance(exc, kafka.KafkaException):
        # librdkafka quotes a rejected setting's value: it may be (part of) a password.
        return "Kafka: " + _QUOTED_VALUE.sub("value (not shown)", str(exc))
    return None


def _register_secrets(args: argparse.Namespace) -> None:
    """Tell ``core.redact`` the secrets this run was given, before anything can log them."""
    register_url(getattr(args, "redis_url", None))
    for value in vars(args).values():
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            register_settings(v.partition("=")[::2] for v in value if "=" in v)


def _redacting_excepthook(kind, exc, tb) -> None:
    import traceback

    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


def parse_args(argv: Sequence[str] | None = None,
               parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """``argv`` as the command would see it: every default filled in and checked."""
    parser = parser or build_parser()
    args = parser.parse_args(argv)
    _resolve(parser, args)
    return args


def _explicit(argv: Sequence[str] | None, environ=os.environ) -> frozenset[str]:
    """Dests the user gave, by flag or by ``RECS_*`` variable: these win over tuned settings.

    Parses ``argv`` again with every default suppressed, so only given options appear."""
    parser = build_parser()
    for p in [parser, *_subparsers(parser)]:
        for action in p._actions:
            if action.option_strings:
                action.default = argparse.SUPPRESS
    given = set(vars(parser.parse_args(argv)))
    given |= {a.dest for p in _subparsers(parser) for a in p._actions
              if a.option_strings and ENV_PREFIX + a.dest.upper() in environ}
    return frozenset(given)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse's one line (or --help): a code, like any other
        return exc.code if isinstance(exc.code, int) else 2
    args.explicit = _explicit(argv)
    _register_secrets(args)
    sys.excepthook = _redacting_excepthook
    from core.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    module_name, func_name = args.handler.split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except RecsError as exc:
        print(redact(f"recs {args.command}: error: {exc}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = _service_error(exc, args)
        if line is None:
            raise
        print(redact(f"recs {args.command}: error: {line}"), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
