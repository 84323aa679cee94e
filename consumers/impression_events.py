"""Impression events (docs/CONTRACT.md "Impressions and clicks", issue 19): validation, as
pure functions.

``parse_impression(value)`` turns one message value into an :class:`Impression` or raises
:class:`~consumers.events.InvalidEvent` whose ``reason`` becomes the dead-letter ``error``
header. Every string that reaches a Redis key or a Lua list (impression id, model, arm,
experiment) is restricted to characters that cannot hold the separators the store uses
(`` ``, ``|``, ``/``, ``,``), so a cell or a window entry always splits back the way it
was joined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from consumers.events import (
    IMPRESSION_ID,
    MAX_TS,
    InvalidEvent,
    json_object,
    valid_user_id,
)
from core.contract import MAX_RESOURCE_ID, valid_lang

LISTS = ("recs", "similar", "trending")
MAX_ITEMS = 100
"""The most resource ids one impression may show."""
MODEL = re.compile(r"[A-Za-z0-9_.:-]{0,64}")
ARM = re.compile(r"[a-z0-9_-]{1,32}")
"""Arms and experiment ids alike."""

# Every reason code parse_impression can give (the dead-letter ``error`` header).
REASONS = (
    "no_value", "too_large", "not_json", "not_object",
    "missing_impression_id", "invalid_impression_id", "missing_user_id", "invalid_user_id",
    "missing_lang", "invalid_lang", "missing_list", "invalid_list", "missing_resource_id",
    "invalid_resource_id", "invalid_model", "invalid_arm", "invalid_experiment",
    "missing_items", "invalid_items", "missing_ts", "invalid_ts",
)


@dataclass(frozen=True)
class Impression:
    """One valid impression event."""

    impression_id: str
    user_id: str
    lang: str
    list: str
    resource_id: int | None
    """The resource whose similar list was shown (``similar`` only)."""
    model: str
    arm: str
    experiment: str
    """"" when the impression belongs to no experiment."""
    items: tuple[int, ...]
    ts: int

    @property
    def day(self) -> str:
        """UTC date of ``ts``, ``YYYY-MM-DD``: the counters' day."""
        return datetime.fromtimestamp(self.ts / 1000, UTC).strftime("%Y-%m-%d")

    @property
    def cell(self) -> str:
        """``day|list|model|arm|experiment``: which counters the impression (and its clicks)
        go to (store/keys.py ``Keys.ctr``)."""
        return "|".join((self.day, self.list, self.model, self.arm, self.experiment))


def _resource_id(rid: object) -> int | None:
    """A resource id as view events take it (an int or its decimal string), else None."""
    if type(rid) is str and 0 < len(rid) <= 20 and rid.isascii() and rid.isdigit():
        rid = int(rid)
    if type(rid) is int and 0 < rid <= MAX_RESOURCE_ID:
        return rid
    return None


def _text(doc: dict, field: str, pattern: re.Pattern, default: str | None) -> str:
    value = doc.get(field)
    if value is None:
        if default is None:
            raise InvalidEvent(f"missing_{field}")
        return default
    if type(value) is not str or pattern.fullmatch(value) is None:
        raise InvalidEvent(f"invalid_{field}")
    return value


def _items(doc: dict) -> tuple[int, ...]:
    items = doc.get("items")
    if items is None:
        raise InvalidEvent("missing_items")
    if type(items) is not list or not 0 < len(items) <= MAX_ITEMS:
        raise InvalidEvent("invalid_items")
    out = tuple(_resource_id(r) for r in items)
    if None in out or len(set(out)) != len(out):
        raise InvalidEvent("invalid_items")
    return out  # type: ignore[return-value]


def parse_impression(value: bytes | None) -> Impression:
    """The impression of one message value; raises InvalidEvent (docs/CONTRACT.md)."""
    doc = json_object(value)
    imp = _text(doc, "impression_id", IMPRESSION_ID, None)
    user = doc.get("user_id")
    if user is None:
        raise InvalidEvent("missing_user_id")
    if not valid_user_id(user):
        raise InvalidEvent("invalid_user_id")
    lang = doc.get("lang")
    if not valid_lang(lang):
        raise InvalidEvent("missing_lang" if lang is None else "invalid_lang")
    kind = doc.get("list")
    if kind not in LISTS:
        raise InvalidEvent("missing_list" if kind is None else "invalid_list")
    rid = None
    if kind == "similar":
        raw = doc.get("resource_id")
        if raw is None:
            raise InvalidEvent("missing_resource_id")
        rid = _resource_id(raw)
        if rid is None:
            raise InvalidEvent("invalid_resource_id")
    model = _text(doc, "model", MODEL, "")
    arm = _text(doc, "arm", ARM, "default")
    experiment = _text(doc, "experiment", ARM, "")
    items = _items(doc)
    ts = doc.get("ts")
    if ts is None:
        raise InvalidEvent("missing_ts")
    if type(ts) is not int or not 0 < ts <= MAX_TS:
        raise InvalidEvent("invalid_ts")
    return Impression(imp, user, lang, kind, rid, model, arm, experiment, items, ts)


def encode_impression(impression_id: str, user_id: str, lang: str, items, ts: int,
                      list_: str = "recs", model: str = "", arm: str = "default",
                      experiment: str | None = None, resource_id: int | None = None) -> bytes:
    """The contract's JSON value for one impression (what an app sends)."""
    doc: dict[str, object] = {"impression_id": impression_id, "user_id": user_id,
                              "lang": lang, "list": list_, "model": model, "arm": arm,
                              "items": list(items), "ts": ts}
    if experiment is not None:
        doc["experiment"] = experiment
    if resource_id is not None:
        doc["resource_id"] = resource_id
    return orjson.dumps(doc)
