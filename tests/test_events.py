"""Event validation (contract section 1), every invalid kind, as pure functions."""

import orjson
import pytest

from consumers.events import (
    MAX_VALUE_BYTES,
    REASONS,
    InvalidEvent,
    encode_event,
    parse_event,
    valid_lang,
    valid_user_id,
)

BASE = {"user_id": "8b0c2f0e-1", "resource_id": 489473, "lang": "en", "count": 2,
        "ts": 1764201600000}


def event(**changes) -> bytes:
    doc = dict(BASE)
    for k, v in changes.items():
        if v is _DROP:
            doc.pop(k)
        else:
            doc[k] = v
    return orjson.dumps(doc)


_DROP = object()


def test_a_valid_event():
    assert parse_event(event()) == ("en", "8b0c2f0e-1", 489473, 2)


@pytest.mark.parametrize(("changes", "expected"), [
    ({"count": _DROP}, ("en", "8b0c2f0e-1", 489473, 1)),
    ({"count": None}, ("en", "8b0c2f0e-1", 489473, 1)),
    ({"ts": _DROP, "extra": {"nested": [1, 2]}}, ("en", "8b0c2f0e-1", 489473, 2)),
    ({"ts": "not a number"}, ("en", "8b0c2f0e-1", 489473, 2)),  # ts changes no count
    ({"resource_id": "489473"}, ("en", "8b0c2f0e-1", 489473, 2)),
    ({"resource_id": "000042"}, ("en", "8b0c2f0e-1", 42, 2)),
    ({"resource_id": 1}, ("en", "8b0c2f0e-1", 1, 2)),
    ({"resource_id": 4294967295}, ("en", "8b0c2f0e-1", 4294967295, 2)),
    ({"resource_id": "4294967295"}, ("en", "8b0c2f0e-1", 4294967295, 2)),
    ({"lang": "pt"}, ("pt", "8b0c2f0e-1", 489473, 2)),
    ({"lang": "spa"}, ("spa", "8b0c2f0e-1", 489473, 2)),
    ({"count": 1}, ("en", "8b0c2f0e-1", 489473, 1)),
    ({"count": 10000}, ("en", "8b0c2f0e-1", 489473, 10000)),
    ({"user_id": "x" * 128}, ("en", "x" * 128, 489473, 2)),
    ({"user_id": "Zoë Müller 李"}, ("en", "Zoë Müller 李", 489473, 2)),
    ({"user_id": "a\u00a0b\u200d"}, ("en", "a\u00a0b\u200d", 489473, 2)),  # not controls
    ({"user_id": "a:b:c"}, ("en", "a:b:c", 489473, 2)),
])
def test_valid_variants(changes, expected):
    assert parse_event(event(**changes)) == expected


INVALID = [
    (None, "no_value"),
    (b"", "no_value"),
    (b"x" * (MAX_VALUE_BYTES + 1), "too_large"),
    (event(pad="y" * MAX_VALUE_BYTES), "too_large"),
    (b"not json", "not_json"),
    (b'{"user_id": "u", ', "not_json"),
    (b'{"user_id": "\xff\xfe", "resource_id": 1, "lang": "en"}', "not_json"),
    (b'{"user_id": "\\ud800", "resource_id": 1, "lang": "en"}', "not_json"),
    (b"[1, 2]", "not_object"),
    (b'"a string"', "not_object"),
    (b"42", "not_object"),
    (b"null", "not_object"),
    (event(user_id=_DROP), "missing_user_id"),
    (event(user_id=None), "missing_user_id"),
    (event(user_id=""), "invalid_user_id"),
    (event(user_id="x" * 129), "invalid_user_id"),
    (event(user_id="a\nb"), "invalid_user_id"),
    (event(user_id="a\x00b"), "invalid_user_id"),
    (event(user_id="a\x7fb"), "invalid_user_id"),
    (event(user_id="a\x85b"), "invalid_user_id"),
    (event(user_id=123), "invalid_user_id"),
    (event(user_id=True), "invalid_user_id"),
    (event(user_id=["u"]), "invalid_user_id"),
    (event(resource_id=_DROP), "missing_resource_id"),
    (event(resource_id=None), "missing_resource_id"),
    (event(resource_id=0), "invalid_resource_id"),
    (event(resource_id=-5), "invalid_resource_id"),
    (event(resource_id=4294967296), "invalid_resource_id"),
    (b'{"user_id": "u", "resource_id": 1180591620717411303424, "lang": "en"}',
     "invalid_resource_id"),  # beyond 64 bits orjson gives a float
    (b'{"user_id": "u", "resource_id": 1e3, "lang": "en"}', "invalid_resource_id"),
    (event(resource_id="4294967296"), "invalid_resource_id"),
    (event(resource_id="0"), "invalid_resource_id"),
    (event(resource_id=""), "invalid_resource_id"),
    (event(resource_id="12a"), "invalid_resource_id"),
    (event(resource_id="-3"), "invalid_resource_id"),
    (event(resource_id="+3"), "invalid_resource_id"),
    (event(resource_id=" 3"), "invalid_resource_id"),
    (event(resource_id="3.0"), "invalid_resource_id"),
    (event(resource_id="\u0663"), "invalid_resource_id"),  # Arabic-Indic digit three
    (event(resource_id="1" * 30), "invalid_resource_id"),
    (event(resource_id=3.0), "invalid_resource_id"),
    (event(resource_id=True), "invalid_resource_id"),
    (event(resource_id=[3]), "invalid_resource_id"),
    (event(lang=_DROP), "missing_lang"),
    (event(lang=None), "missing_lang"),
    (event(lang="EN"), "invalid_lang"),
    (event(lang="e"), "invalid_lang"),
    (event(lang="engl"), "invalid_lang"),
    (event(lang="e1"), "invalid_lang"),
    (event(lang="én"), "invalid_lang"),
    (event(lang="e-n"), "invalid_lang"),
    (event(lang=""), "invalid_lang"),
    (event(lang=12), "invalid_lang"),
    (event(count=0), "invalid_count"),
    (event(count=-1), "invalid_count"),
    (event(count=10001), "invalid_count"),
    (event(count=1.0), "invalid_count"),
    (event(count="2"), "invalid_count"),
    (event(count=True), "invalid_count"),
    (event(count=[1]), "invalid_count"),
]


@pytest.mark.parametrize(("value", "reason"), INVALID)
def test_invalid_events(value, reason):
    with pytest.raises(InvalidEvent) as info:
        parse_event(value)
    assert info.value.reason == reason
    assert reason in REASONS


def test_every_reason_is_exercised():
    assert {reason for _, reason in INVALID} == set(REASONS)


def test_value_exactly_at_the_size_limit_is_parsed():
    doc = orjson.dumps({**BASE, "pad": ""})
    value = orjson.dumps({**BASE, "pad": "p" * (MAX_VALUE_BYTES - len(doc))})
    assert len(value) == MAX_VALUE_BYTES
    assert parse_event(value) == ("en", "8b0c2f0e-1", 489473, 2)


def test_helpers_share_the_rules():
    assert valid_user_id("u-1") and not valid_user_id("") and not valid_user_id("a\tb")
    assert not valid_user_id("x" * 129) and not valid_user_id(5)
    assert valid_lang("es") and valid_lang("por")
    assert not valid_lang("ES") and not valid_lang("e") and not valid_lang(None)
    assert parse_event(encode_event("u", 7, "es", 3, ts=1)) == ("es", "u", 7, 3)
