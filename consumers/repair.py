"""``recs repair [--lang L]``: count the views parked in the quarantine (store/quarantine.py).

Run it after fixing (or deleting) the keys the consumer's log and
``recs_consumer_views_quarantined_total`` named. Safe to run at any time and more than once:
an entry is re-applied at most once, and one whose key still refuses stays parked. Exit 0
when nothing is left parked, 1 when some entries still are (each named on stderr).
On a Redis Cluster every slot group's quarantine is repaired, the user side only (their
views are in the item totals already: store/quarantine.py).
"""

from __future__ import annotations

import sys

import redis

from core.errors import RecsError
from store.cluster_keys import layout
from store.connection import connect
from store.quarantine import repair
from store.snapshot import read_languages


def cmd_repair(args) -> int:
    client = connect(args.redis_url)
    keys = layout(client, args.prefix)
    left = 0
    try:
        for lang in [args.lang] if args.lang else read_languages(client, keys):
            result = repair(client, keys, lang)
            print(f"{lang}: {result.applied} parked entries counted now, "
                  f"{result.still_parked} still refused")
            for reason in result.reasons or ():
                print(f"recs repair: {lang}: still refused: {reason}", file=sys.stderr)
            left += result.still_parked
    except redis.RedisError as exc:
        raise RecsError(f"Redis: {type(exc).__name__}: {exc}") from None
    finally:
        client.close()
    return 1 if left else 0
