"""The option groups of the ``recs`` commands (recs/cli_commands.py adds them per command).

Every default has one home, the library's settings dataclass (``trainer.config``,
``trainer.settings``, ``consumers.config``, ``store.trending``) or a function's keyword:
:class:`Default` reads it only when help is shown or the command runs, so building the
parser imports no handler module (``recs train`` never loads Kafka); help texts show it with
``(default %(default)s)``. Every value, flag or variable, passes the option's checked type
(``core/options.py``).
"""

from __future__ import annotations

import argparse
import importlib
import inspect

from core import options as o
from store.trending import TrendingConfig
from trainer.config import (
    BLEND_PARTNERS,
    EASE_SCALINGS,
    ENGINES,
    MODEL_DEST,
    MODELS,
    SCALINGS,
    AlsConfig,
    BlendConfig,
    EaseConfig,
    FilterConfig,
    ModelSpec,
    Rp3betaConfig,
)
from trainer.scoring_config import SCORING_METHODS, ScoringConfig
from trainer.settings import EvaluateConfig, LookupConfig, RetrainConfig, SearchConfig, SparkConfig

CONSUMER = "consumers.config:ConsumerConfig"
UPDATER = "consumers.config:UpdaterConfig"
CONTROL = "consumers.control:ControlDefaults"
IMPRESSIONS = "consumers.impressions:ImpressionDefaults"
ATTRIBUTION = "store.attribution:AttributionConfig"
SYNTH = "trainer.data.synth:generate"
SEED = o.int_range(0, 2**32 - 1)  # numpy's RandomState, which implicit seeds, takes no more
THREADS = o.int_range(0, 1024)
D = " (default %(default)s)"


class Default:
    """A default whose home is a dataclass field or a function's keyword (``"module:attr"``,
    ``attr`` may be dotted), read only when help is printed or the command runs."""

    def __init__(self, target: str, name: str) -> None:
        self.target, self.name = target, name

    def value(self):
        module, attr = self.target.split(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        fields = getattr(obj, "__dataclass_fields__", None)
        if fields is not None:
            value = fields[self.name].default
        else:
            value = inspect.signature(obj).parameters[self.name].default
        # A sequence default is what its option takes as comma-separated text.
        return ",".join(map(str, value)) if isinstance(value, (tuple, list)) else value

    def __str__(self) -> str:
        return str(self.value())


def common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("common")
    g.add_argument("--redis-url", default=Default(CONSUMER, "redis_url"), type=o.redis_url,
                   help="Redis URL; may carry a password and use rediss:// [RECS_REDIS_URL]")
    g.add_argument("--prefix", default=Default(CONSUMER, "prefix"),
                   help="key prefix [RECS_PREFIX]")
    g.add_argument("--log-level", default="INFO", type=o.log_level,
                   help="DEBUG, INFO, WARNING, ERROR or CRITICAL [RECS_LOG_LEVEL]")
    g.add_argument("--log-format", default="text", choices=("text", "json"),
                   help="json for one structured object per line [RECS_LOG_FORMAT]")


def filters(p: argparse.ArgumentParser) -> None:
    d = FilterConfig()
    g = p.add_argument_group("filters (0 turns one off)")
    g.add_argument("--min-item-views", type=o.non_negative_int, default=d.min_item_views,
                   help="drop resources with fewer total views" + D)
    g.add_argument("--max-item-views", type=o.non_negative_int, default=d.max_item_views,
                   help="then drop resources with this many or more" + D)
    g.add_argument("--min-user-views", type=o.non_negative_int, default=d.min_user_views,
                   help="then drop users with fewer views" + D)


def hyperparameters(p: argparse.ArgumentParser) -> None:
    d = AlsConfig()
    g = p.add_argument_group("model")
    g.add_argument("--factors", type=o.positive_int, default=d.factors,
                   help="latent dimensions" + D)
    g.add_argument("--regularization", type=o.non_negative_float, default=d.regularization,
                   help="L2 penalty" + D)
    g.add_argument("--iterations", type=o.positive_int, default=d.iterations,
                   help="ALS sweeps" + D)
    g.add_argument("--alpha", type=o.positive_float, default=d.alpha,
                   help="confidence weight of a view" + D)
    g.add_argument("--scaling", choices=SCALINGS, default=d.scaling,
                   help="confidence c = 1 + alpha * f(views); linear is the seed's setting" + D)
    g.add_argument("--seed", type=SEED, default=d.seed,
                   help="random seed (factors and splits), 0 .. 2^32-1" + D)
    g.add_argument("--engine", choices=ENGINES, default=d.engine,
                   help="who fits ALS: implicit (CPU), spark (Spark MLlib, needs the spark "
                        "extra and Java) or implicit-gpu (implicit's CUDA build)" + D)
    g.add_argument("--spark-master", default=SparkConfig.master,
                   help="Spark master URL for --engine spark (local[*], spark://..., yarn)" + D)
    g.add_argument("--spark-conf", action="append", default=[], metavar="KEY=VALUE",
                   type=o.key_value,
                   help="any Spark setting (repeatable); RECS_SPARK_CONF takes a JSON "
                        "object, one KEY=VALUE per line, or a comma-separated list")


def models(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model choice (--settings FILE: tuned settings from `recs tune`; "
                             "a flag or RECS_* variable given wins over them)")
    g.add_argument("--model", dest=MODEL_DEST, choices=MODELS, default=ModelSpec.model,
                   help="als, ease, their blend, rp3beta, or auto (the best of the three on a "
                        "validation split of the training data) [RECS_MODEL_KIND]" + D)
    g.add_argument("--ease-l2", type=o.positive_float, default=EaseConfig.l2,
                   help="EASE's lambda" + D)
    g.add_argument("--ease-scaling", choices=EASE_SCALINGS, default=EaseConfig.scaling,
                   help="what EASE's input holds per viewed resource" + D)
    g.add_argument("--blend-weight", type=o.float_range(0.0, 1.0), default=BlendConfig.weight,
                   help="ALS's weight in the blend" + D)
    g.add_argument("--blend-partner", choices=BLEND_PARTNERS, default=BlendConfig.partner,
                   help="the item-item model ALS is blended with" + D)
    r = Rp3betaConfig
    g.add_argument("--rp3-alpha", type=o.positive_float, default=r.alpha,
                   help="RP3beta's exponent of the walk probabilities" + D)
    g.add_argument("--rp3-beta", type=o.float_range(0.0, None), default=r.beta,
                   help="RP3beta's popularity penalty (0: P3alpha)" + D)
    g.add_argument("--rp3-neighbours", type=o.int_range(1, None), default=r.neighbours,
                   help="weights RP3beta keeps per resource" + D)
    g.add_argument("--rp3-scaling", choices=EASE_SCALINGS, default=r.scaling,
                   help="what RP3beta's input holds per viewed resource" + D)
    g.add_argument("--rp3-normalize", type=o.int_range(0, 1), default=int(r.normalize),
                   help="1: rescale each kept row of RP3beta's weights to sum 1" + D)
    g.add_argument("--memory-limit", type=o.byte_size, default=ModelSpec.memory_limit,
                   help="bytes a fit may use (2G, 500M); a model needing more is refused "
                        "before it starts (default: the machine's available memory)")
    g.add_argument("--settings", help="tuned settings JSON written by `recs tune --out`")


def search(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search (Optuna TPE, seeded by --seed)")
    g.add_argument("--trials", type=o.positive_int, default=SearchConfig.trials,
                   help="trials at most" + D)
    g.add_argument("--timeout", type=o.positive_float, default=SearchConfig.timeout,
                   help="stop starting trials after this many seconds")
    g.add_argument("--search", default=Default("trainer.settings:SearchConfig", "models"),
                   help="comma-separated models to search" + D)


def extract(p: argparse.ArgumentParser) -> None:
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip malformed CSV rows (and report them) instead of stopping")


def lookup(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("-n", type=o.positive_int, default=LookupConfig.n, help="list length" + D)
    p.add_argument("--lang", type=o.lang,
                   help=f"read the published {what} from Redis for this language")
    p.add_argument("--model", help="read from a model file instead of Redis")
    p.add_argument("--resources", help="resources CSV (id,title,folder,subject,tags) for titles")
    p.add_argument("--json", action="store_true", help="print a JSON array")


def kafka(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kafka")
    g.add_argument("--kafka-bootstrap-servers", default=Default(CONSUMER, "bootstrap_servers"),
                   help="[RECS_KAFKA_BOOTSTRAP_SERVERS]" + D)
    g.add_argument("--kafka-config", action="append", default=[], metavar="KEY=VALUE",
                   type=o.key_value,
                   help="any librdkafka setting (repeatable), e.g. security.protocol=SASL_SSL; "
                        "RECS_KAFKA_CONFIG takes a JSON object ({\"sasl.password\": \"a,b\"}: "
                        "any value), one KEY=VALUE per line, or KEY=VALUE,KEY=VALUE")
    g.add_argument("--broker-warn-after", type=o.positive_float,
                   default=Default(CONSUMER, "broker_warn_after"),
                   help="warn when no broker has been reachable for this many seconds" + D)


def topics(p: argparse.ArgumentParser, config: str, prefix: str = "") -> None:
    """A consumer loop's topic, dead-letter topic and group (``prefix``: ``control-`` for
    ``recs control``'s own options)."""
    for name, field, what in (("topic", "topic", "the topic read"),
                              ("dlq-topic", "dlq_topic", "the dead-letter topic"),
                              ("group", "group", "the consumer group id")):
        option = f"--{prefix}{name}"
        variable = "RECS_" + option[2:].upper().replace("-", "_")
        p.add_argument(option, default=Default(config, field), help=f"{what} [{variable}]" + D)


def consumer_loop(p: argparse.ArgumentParser, config: str) -> None:
    """What both consumer loops take (``recs consume``, ``recs control``): batches, metrics,
    Redis retries, the idle check; the batch size and metrics port are ``config``'s."""
    p.add_argument("--batch-size", type=o.positive_int, default=Default(config, "batch_size"),
                   help="events per batch at most" + D)
    p.add_argument("--batch-timeout", type=o.positive_float,
                   default=Default(CONSUMER, "batch_timeout"),
                   help="seconds a batch may wait to fill before it is written" + D)
    p.add_argument("--metrics-port", type=o.port, default=Default(config, "metrics_port"),
                   help="Prometheus port; 0 = off" + D)
    p.add_argument("--metrics-address", type=o.host, default=Default(CONSUMER, "metrics_address"),
                   help="address the metrics server listens on (README: why this default)" + D)
    p.add_argument("--redis-retry-max", type=o.positive_float,
                   default=Default(CONSUMER, "retry_max"),
                   help="cap in seconds of the doubling wait between Redis retries" + D)
    p.add_argument("--offset-check-interval", type=o.positive_float,
                   default=Default(CONSUMER, "offset_check_interval"),
                   help="while idle, check this often (s) that Redis still holds our offsets "
                        "(recs control: and settle queued hides)" + D)
    p.add_argument("--until-drained", action="store_true",
                   help="exit once every assigned partition is written up to its end")


def clicks(p: argparse.ArgumentParser) -> None:
    """Click attribution (``recs consume`` and ``recs impressions``: give both the same)."""
    g = p.add_argument_group("clicks (docs/CONTRACT.md: give recs consume and recs "
                             "impressions the same values)")
    g.add_argument("--click-window", type=o.positive_float,
                   default=Default(ATTRIBUTION, "window"),
                   help="seconds after an impression a view of a shown resource is a click" + D)
    g.add_argument("--impression-cap", type=o.positive_int,
                   default=Default(ATTRIBUTION, "impression_cap"),
                   help="impressions kept per user for attribution" + D)
    g.add_argument("--view-cap", type=o.positive_int, default=Default(ATTRIBUTION, "view_cap"),
                   help="viewed resources kept per user for attribution" + D)
    g.add_argument("--click-state-ttl", type=o.positive_float,
                   default=Default(ATTRIBUTION, "state_ttl"),
                   help="seconds a user's attribution windows live after their last write" + D)


def metrics(p: argparse.ArgumentParser, config: str) -> None:
    p.add_argument("--metrics-port", type=o.port, default=Default(config, "metrics_port"),
                   help="Prometheus port; 0 = off" + D)
    p.add_argument("--metrics-address", type=o.host, default=Default(config, "metrics_address"),
                   help="address the metrics server listens on (README: why this default)" + D)


def split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-fraction", type=o.float_range(0.0, 1.0),
                   default=EvaluateConfig.test_fraction,
                   help="share of (user, resource) pairs held out, between 0 and 1" + D)
    p.add_argument("--threads", type=THREADS, default=EvaluateConfig.threads,
                   help="implicit's training threads (0 = all cores)" + D)


def trending(p: argparse.ArgumentParser) -> None:
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


def scoring(p: argparse.ArgumentParser) -> None:
    d = ScoringConfig()
    p.add_argument("--similar-method", choices=SCORING_METHODS, default=d.similar_method,
                   help="similar lists: exact, ann (approximate index over item factors) or "
                        "auto (ann from --ann-min-items resources)" + D)
    p.add_argument("--recs-method", choices=SCORING_METHODS, default=d.recs_method,
                   help="users' lists: exact, ann or auto, as --similar-method" + D)
    p.add_argument("--ann-min-items", type=o.positive_int, default=d.ann_min_items,
                   help="auto scores similar lists with the approximate index from this many "
                        "resources" + D)
    p.add_argument("--recs-ann-min-items", type=o.positive_int, default=d.recs_ann_min_items,
                   help="the same for users' lists" + D)
    p.add_argument("--scoring-threads", type=o.positive_int, default=d.threads,
                   help="faiss threads while scoring the lists (the publisher scores while "
                        "it waits on Redis)" + D)


def gate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-wait", type=o.non_negative_float, default=RetrainConfig.lock_wait,
                   help="seconds to wait while another trainer publishes the language, "
                        "then skip it (exit code 0)" + D)
    p.add_argument("--lock-ttl", type=o.float_range(1.0), default=RetrainConfig.lock_ttl,
                   help="trainer lock expiry in seconds (>= 1), renewed while training" + D)
    p.add_argument("--gate-margin", type=o.float_range(0.0, 1.0),
                   default=RetrainConfig.gate_margin,
                   help="with --evaluate: keep the live model if the new one's held-out "
                        "NDCG@10 is more than this fraction below its last figure, or below "
                        "popularity's" + D)
    p.add_argument("--force", action="store_true", help="publish even if the gate says no")


def model_options(p: argparse.ArgumentParser) -> None:
    """What every command that fits a model takes: filters, ALS, model choice, CSV rows."""
    filters(p)
    hyperparameters(p)
    models(p)
    extract(p)
