"""Event validation (contract section 1), every invalid kind, as pure functions."""

import orjson
import pytest

from consumers.events import (
    MAX_VALUE_BYTES,
    REASONS,
    InvalidEvent,
    encode_event,
    parse_event,
    parse_view,
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


def invalid(field: str, reason: str, *values) -> list[tuple[bytes, str]]:
    """The base event with ``field`` set to each of ``values``, all invalid for ``reason``."""
    return [(event(**{field: v}), reason) for v in values]


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
    *invalid("user_id", "missing_user_id", _DROP, None),
    *invalid("user_id", "invalid_user_id", "", "x" * 129, "a\nb", "a\x00b", "a\x7fb", "a\x85b",
             123, True, ["u"]),
    *invalid("resource_id", "missing_resource_id", _DROP, None),
    *invalid("resource_id", "invalid_resource_id", 0, -5, 4294967296),
    (b'{"user_id": "u", "resource_id": 1180591620717411303424, "lang": "en"}',
     "invalid_resource_id"),  # beyond 64 bits orjson gives a float
    (b'{"user_id": "u", "resource_id": 1e3, "lang": "en"}', "invalid_resource_id"),
    *invalid("resource_id", "invalid_resource_id", "4294967296", "0", "", "12a", "-3", "+3",
             " 3", "3.0",
             "\u0663",  # Arabic-Indic digit three
             "1" * 30, 3.0, True, [3]),
    *invalid("lang", "missing_lang", _DROP, None),
    *invalid("lang", "invalid_lang", "EN", "e", "engl", "e1", "én", "e-n", "", 12),
    *invalid("count", "invalid_count", 0, -1, 10001, 1.0, "2", True, [1]),
    *invalid("impression_id", "invalid_impression_id", "", "a b", "x" * 65, "a|b", "a/b", 7,
             True, ["i"]),
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


def test_a_view_gives_its_time_and_impression_id_for_clicks():
    value = encode_event("u", 7, "es", 3, ts=1764201600000, impression_id="imp:1.a-b_c")
    assert parse_view(value) == ("es", "u", 7, 3, 1764201600000, "imp:1.a-b_c")
    # A ts that is not a positive integer was never validated: still a valid view, no time.
    for ts in ("soon", -1, 0, 1.5, None):
        doc = orjson.loads(encode_event("u", 7, "es"))
        assert parse_view(orjson.dumps({**doc, "ts": ts}))[4:] == (None, None)
