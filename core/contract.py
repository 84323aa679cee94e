"""The id rules of shared/CONTRACT.md, in one place for the consumer, the loaders and the
key layout. Pure constants and predicates: importing this loads nothing heavy."""

from __future__ import annotations

import re

MAX_USER_ID_LENGTH = 128
MAX_RESOURCE_ID = 4294967295
"""Resource ids are uint32 and start at 1."""
MAX_COUNT = 10000
"""The most views one event may carry (pre-aggregated batches)."""

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Unicode category Cc (C0 controls, DEL, C1 controls): never allowed in a user_id."""


def valid_lang(lang: object) -> bool:
    """2 or 3 lowercase ASCII letters. Internal Redis keys put a longer word or a leading
    ``_`` where ``{lang}`` stands, so they can never collide with a language's keys."""
    return (type(lang) is str and 1 < len(lang) < 4 and lang.isascii() and lang.isalpha()
            and lang.islower())


MAX_CSV_COUNT = 10**9
"""Largest view_count a CSV row may carry. Every total stays an exact integer: the counts
script sums a chunk's item totals as Lua numbers (doubles, exact below 2**53 ~ 9.0e15) and
a backfill chunk holds at most 20,000 rows (2e13 at most); a Redis count (int64, 2**63 ~
9.2e18) needs 9.2e9 rows at this maximum to overflow, and one that would is parked, never
half-written (store/counts.py)."""
