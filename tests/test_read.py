"""The decoding rules both read clients share (store.read): pure functions, no Redis."""

from store.read import (
    Scored,
    decode_details,
    decode_model,
    decode_scored,
    decode_views,
    encode_details,
    top_range,
)


def test_lists_and_ranges():
    assert top_range(10) == (0, 9) and top_range(0) is None and top_range(-1) is None
    assert decode_scored([(b"12", b"0.5"), ("7", 2)]) == [Scored(12, 0.5), Scored(7, 2.0)]


def test_model_fields_are_typed_and_bad_values_stay_strings():
    got = decode_model({b"factors": b"40", b"alpha": b"50", b"metrics": b'{"k": 10}',
                        b"users": b"many", b"version": b"v1"})
    assert got == {"factors": 40, "alpha": 50.0, "metrics": {"k": 10}, "users": "many",
                   "version": "v1"}
    assert decode_model({}) is None


def test_details_round_trip_and_damaged_values_read_as_none():
    value = encode_details({"title": "Ünï, \"q\"", "subject": "Bio", "tags": None, "x": 1})
    assert decode_details(value.encode()) == {"title": "Ünï, \"q\"", "folder": "",
                                              "subject": "Bio", "tags": ""}
    for bad in (None, b"not json", b"[1, 2]", b'"text"'):
        assert decode_details(bad) is None


def test_views_skip_fields_that_are_not_integers():
    assert decode_views({b"12": b"3", b"x": b"1", b"13": b"two"}) == {12: 3}


def test_history_records_flat_and_nested():
    from store.quality import history_record

    flat = history_record(b'{"version": "v1", "trained_at": "t", "k": 10, "ndcg": 0.4, '
                          b'"popularity_ndcg": 0.1, "published": false}')
    assert flat == {"trained_at": "t", "version": "v1", "published": False,
                    "metrics": {"k": 10, "model": {"ndcg": 0.4}, "popularity": {"ndcg": 0.1}}}
    nested = history_record('{"version": "v2", "metrics": "{\\"k\\": 5, \\"model\\": {}}"}')
    assert nested["metrics"] == {"k": 5, "model": {}} and nested["published"] is True
    assert history_record(b"[1]") is None and history_record(b"nope") is None
