"""View events (shared/CONTRACT.md section 1): validation, as pure functions.

``parse_event(value)`` turns one Kafka message value into ``(lang, user_id, resource_id,
count)`` (``parse_view`` also gives the view's ``ts`` and ``impression_id``, for click
attribution) or raises :class:`InvalidEvent` whose ``reason`` is a short code (it becomes the
dead-letter ``error`` header and a metrics label). The consumer calls it once per message,
so it is written for speed: one ``orjson.loads``, then exact ``type(...) is`` checks (a JSON
``true`` is a bool, and a bool is not an int here) and C-level string predicates before
any regular expression.

Fields the contract does not name are ignored, and so is a ``ts`` that is not a positive
integer (it was never validated: old producers' events stay valid); a malformed
``impression_id`` is invalid. Impression events (docs/CONTRACT.md, issue 19) are
``consumers/impression_events.py``'s.
"""

from __future__ import annotations

import re

import orjson

from core.contract import (
    CONTROL_CHARACTERS,
    MAX_COUNT,
    MAX_RESOURCE_ID,
    MAX_USER_ID_LENGTH,
    valid_lang,
)

MAX_VALUE_BYTES = 64 * 1024
"""A value longer than this is invalid without being parsed."""

# Every reason code parse_event can give, for metrics and tests.
REASONS = (
    "no_value",           # a null value (tombstone) or an empty one
    "too_large",          # over MAX_VALUE_BYTES
    "not_json",           # not JSON, or not UTF-8
    "not_object",         # JSON, but not an object
    "missing_user_id",
    "invalid_user_id",    # not a string, empty, too long, or with control characters
    "missing_resource_id",
    "invalid_resource_id",  # not an integer (or decimal string of one) in 1..MAX_RESOURCE_ID
    "missing_lang",
    "invalid_lang",       # not 2-3 lowercase ASCII letters
    "invalid_count",      # present but not an integer in 1..MAX_COUNT
    "invalid_impression_id",  # present but not 1..64 characters of [A-Za-z0-9_.:-]
)

MAX_TS = 32503680000000
"""The latest epoch-ms timestamp an event may carry (year 3000)."""
IMPRESSION_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""An impression id (docs/CONTRACT.md, issue 19): safe in Redis fields and Lua lists."""



# Valid languages met so far: a set lookup instead of four string tests per event. Bounded:
# there are only 26**2 + 26**3 valid codes.
_LANGS_SEEN: set[str] = set()


class InvalidEvent(ValueError):
    """An event the contract rejects; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def json_object(value: bytes | None) -> dict:
    """A message value as a JSON object: the first checks of every topic's events (views and
    control alike); raises InvalidEvent with the reason the dead letter carries."""
    if not value:
        raise InvalidEvent("no_value")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidEvent("too_large")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidEvent("not_json") from None
    if type(doc) is not dict:
        raise InvalidEvent("not_object")
    return doc


def parse_event(value: bytes | None) -> tuple[str, str, int, int]:
    """``(lang, user_id, resource_id, count)`` of a valid event value; raises InvalidEvent."""
    return parse_view(value)[:4]


def parse_view(value: bytes | None) -> tuple[str, str, int, int, int | None, str | None]:
    """``(lang, user_id, resource_id, count, ts or None, impression_id or None)`` of a valid
    event value; raises InvalidEvent."""
    doc = json_object(value)

    user = doc.get("user_id")
    if type(user) is not str or not 0 < len(user) <= MAX_USER_ID_LENGTH or (
            not user.isprintable() and CONTROL_CHARACTERS.search(user)):
        # isprintable() is a fast yes for nearly every id; only ids it doubts (spaces other
        # than ' ', format characters...) pay for the exact control-character test.
        raise InvalidEvent("missing_user_id" if user is None else "invalid_user_id")

    rid = doc.get("resource_id")
    if type(rid) is not int:
        rid = _resource_id_from(rid)
    if not 0 < rid <= MAX_RESOURCE_ID:
        raise InvalidEvent("invalid_resource_id")

    lang = doc.get("lang")
    if type(lang) is not str or lang not in _LANGS_SEEN:
        if not valid_lang(lang):
            raise InvalidEvent("missing_lang" if lang is None else "invalid_lang")
        _LANGS_SEEN.add(lang)

    count = doc.get("count")
    if count is None:  # absent, or an explicit null: the default
        count = 1
    elif type(count) is not int or not 0 < count <= MAX_COUNT:
        raise InvalidEvent("invalid_count")
    imp = doc.get("impression_id")
    if imp is not None and (type(imp) is not str or IMPRESSION_ID.fullmatch(imp) is None):
        raise InvalidEvent("invalid_impression_id")
    ts = doc.get("ts")
    if type(ts) is not int or not 0 < ts <= MAX_TS:
        ts = None
    return lang, user, rid, count, ts, imp


def _resource_id_from(rid: object) -> int:
    """A resource id sent as a decimal string (``"489473"``); raises for anything else."""
    if rid is None:
        raise InvalidEvent("missing_resource_id")
    # isdigit() alone accepts other scripts' digits and superscripts; isascii() rules them out.
    if type(rid) is str and 0 < len(rid) <= 20 and rid.isascii() and rid.isdigit():
        return int(rid)
    raise InvalidEvent("invalid_resource_id")


def valid_user_id(user: object) -> bool:
    """The contract's user_id rule as a predicate (parse_event inlines it for speed)."""
    return (type(user) is str and 0 < len(user) <= MAX_USER_ID_LENGTH
            and CONTROL_CHARACTERS.search(user) is None)


def encode_event(user_id: str, resource_id: int, lang: str, count: int = 1,
                 ts: int | None = None, impression_id: str | None = None) -> bytes:
    """The contract's JSON value for one event (what producers send)."""
    doc: dict[str, object] = {"user_id": user_id, "resource_id": resource_id, "lang": lang,
                              "count": count}
    if ts is not None:
        doc["ts"] = ts
    if impression_id is not None:
        doc["impression_id"] = impression_id
    return orjson.dumps(doc)
