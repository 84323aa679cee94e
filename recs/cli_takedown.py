"""The ``recs`` options of take-downs, forgetting and the trending list (issue 13), added to
the parser by two calls in recs/cli.py so that file stays as it was otherwise."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from recs.options import (
    host,
    lang,
    non_negative_float,
    non_negative_int,
    port,
    positive_float,
    positive_int,
)
from store.trending import TrendingConfig
from trainer.config import FilterConfig

_D = " (default %(default)s)"


def add_trending_options(p: argparse.ArgumentParser) -> None:
    """Options of the trending refresh, for ``recs update`` and ``recs trending``."""
    d = TrendingConfig()
    g = p.add_argument_group("trending list (users the model cannot place)")
    g.add_argument("--trending-every", type=non_negative_float, default=d.every,
                   help=f"refresh every SECONDS (default {d.every:g}; 0: recs update does not)")
    g.add_argument("--trending-half-life", type=positive_float, default=d.half_life,
                   help=f"seconds after which a view weighs half (default {d.half_life:g})")
    g.add_argument("--trending-size", type=positive_int, default=d.size,
                   help=f"resources in the list (default {d.size})")
    if not any(a.dest == "max_item_views" for a in p._actions):
        g.add_argument("--max-item-views", type=non_negative_int,
                       default=FilterConfig().max_item_views,
                       help="leave out resources with this many all-time views or more "
                            "(0: no cap; the training filter's default)")


def add_takedown_commands(command: Callable[[str, str, str], argparse.ArgumentParser],
                          kafka: Callable[[argparse.ArgumentParser], None],
                          from_: Callable[[str, str], object]) -> None:
    """``recs hide``, ``unhide``, ``hidden``, ``forget``, ``control``, ``trending``;
    ``from_(target, field)`` is recs/cli.py's lazy default (one home per default)."""
    p = command("hide", "trainer.takedown:cmd_hide",
                "take resources out of every list now, until unhidden")
    p.add_argument("resource_ids", nargs="+", metavar="RESOURCE_ID")
    p.add_argument("--lang", type=lang, help="one language (default: every language)")
    p.add_argument("--reason", help="why (kept with the hidden entry)")

    p = command("unhide", "trainer.takedown:cmd_unhide",
                "let hidden resources back (their own similar list at once, the rest at "
                "the next retrain)")
    p.add_argument("resource_ids", nargs="+", metavar="RESOURCE_ID")
    p.add_argument("--lang", type=lang, help="one language (default: every language)")

    p = command("hidden", "trainer.takedown:cmd_hidden", "list the hidden resources")
    p.add_argument("--lang", type=lang, required=True)
    p.add_argument("--json", action="store_true")

    p = command("forget", "trainer.takedown:cmd_forget",
                "remove every trace of users: views, counts, factors, lists, queue entries")
    p.add_argument("user_ids", nargs="+", metavar="USER_ID")
    p.add_argument("--lang", type=lang, help="one language (default: every language)")

    _control(command("control", "consumers.control:cmd_control",
                     "control events (hide, unhide, forget) from Kafka, each applied once"),
             kafka, from_)

    p = command("trending", "consumers.trending:cmd_trending",
                "refresh the trending list (also done by recs update every minute)")
    p.add_argument("--lang", type=lang, help="one language (default: every language)")
    p.add_argument("--every", type=non_negative_float, default=0,
                   help="repeat every SECONDS (default: once)")
    add_trending_options(p)


def _control(p: argparse.ArgumentParser, kafka, from_) -> None:
    ctl, consumer = "consumers.control:ControlDefaults", "consumers.consume:ConsumerConfig"
    kafka(p)
    p.add_argument("--control-topic", default=from_(ctl, "topic"), help="[RECS_CONTROL_TOPIC]" + _D)
    p.add_argument("--control-dlq-topic", default=from_(ctl, "dlq_topic"),
                   help="[RECS_CONTROL_DLQ_TOPIC]" + _D)
    p.add_argument("--control-group", default=from_(ctl, "group"), help="[RECS_CONTROL_GROUP]" + _D)
    p.add_argument("--batch-size", type=positive_int, default=from_(ctl, "batch_size"),
                   help="events per batch at most" + _D)
    p.add_argument("--batch-timeout", type=positive_float,
                   default=from_(consumer, "batch_timeout"),
                   help="seconds a batch may wait to fill" + _D)
    p.add_argument("--metrics-port", type=port, default=from_(ctl, "metrics_port"),
                   help="Prometheus port; 0 = off" + _D)
    p.add_argument("--metrics-address", type=host, default=from_(consumer, "metrics_address"),
                   help="address the metrics server listens on" + _D)
    p.add_argument("--redis-retry-max", type=positive_float, default=from_(consumer, "retry_max"),
                   help="cap in seconds of the doubling wait between Redis retries" + _D)
    p.add_argument("--offset-check-interval", type=positive_float,
                   default=from_(consumer, "offset_check_interval"),
                   help="while idle: check the offsets in Redis and settle queued hides" + _D)
    p.add_argument("--until-drained", action="store_true")
