"""``recs trending``: refresh the trending list of every language (store/trending.py), once or
``--every`` SECONDS. ``recs update`` does the same every ``--trending-every`` seconds, so this
command is only needed where no updater runs."""

from __future__ import annotations

import logging
import time

import redis

from core.signals import StopFlag, on_stop_signals
from store.cluster_keys import layout
from store.connection import connect_checked
from store.snapshot import read_languages
from store.trending import Trending, TrendingConfig

log = logging.getLogger("recs.trending")


def refresh_once(trending: Trending, lang: str | None) -> dict[str, int]:
    """Refresh ``lang`` (or every language); returns list length per language."""
    langs = [lang] if lang else read_languages(trending.client, trending.keys)
    out = {}
    for one in langs:
        _, scored, length = trending.refresh(one, min_interval=0)
        out[one] = length
        log.info("trending refreshed", extra={"fields": {"lang": one, "scored": scored,
                                                         "length": length}})
    return out


def cmd_trending(args) -> int:
    client = connect_checked(args.redis_url)
    trending = Trending(client, layout(client, args.prefix), TrendingConfig.from_args(args))
    if not args.every:
        for lang, length in refresh_once(trending, args.lang).items():
            print(f"{lang}: {length} resources trending", flush=True)
        return 0
    stop = StopFlag()
    on_stop_signals(lambda name: stop.set())
    while not stop.is_set():
        started = time.monotonic()
        try:
            refresh_once(trending, args.lang)
        except redis.RedisError as exc:
            log.warning("redis unavailable; retrying", extra={"fields": {"error": str(exc)}})
        stop.wait(max(0.0, args.every - (time.monotonic() - started)))
    return 0
