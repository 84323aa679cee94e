"""Property-based tests (hypothesis): the event validator and the CSV reader take any bytes.

For every input: no exception other than the documented rejection escapes; an input is either
accepted (and then everything taken from it obeys the contract) or rejected with a reason,
never both."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.events import REASONS, InvalidEvent, parse_event
from core.contract import (
    CONTROL_CHARACTERS,
    MAX_COUNT,
    MAX_CSV_COUNT,
    MAX_RESOURCE_ID,
    MAX_USER_ID_LENGTH,
    valid_lang,
)
from core.errors import InputError
from trainer.data.extracts import load_views

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- events -------------------------------------------------------------------------------
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
    st.text(max_size=140), st.sampled_from(["en", "es", "EN", "e", "engl", "", "123", "1e3"]))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=3)
                           | st.dictionaries(st.text(max_size=5), kids, max_size=3), max_leaves=6)
event_like = st.fixed_dictionaries({}, optional={
    "user_id": st.one_of(st.text(min_size=0, max_size=140), json_values),
    "resource_id": st.one_of(st.integers(-5, 2**33), st.text(max_size=12), json_values),
    "lang": st.one_of(st.sampled_from(["en", "es", "pt", "xyz"]), json_values),
    "count": st.one_of(st.integers(-5, MAX_COUNT + 5), json_values),
    "ts": json_values,
})


def dumps(doc) -> bytes:
    """JSON as any producer might write it: big integers, Infinity, lone surrogates."""
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


event_bytes = st.one_of(
    st.binary(max_size=300),
    event_like.map(dumps),
    st.tuples(event_like.map(dumps), st.integers(0, 400), st.binary(max_size=4)).map(
        lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:]),  # bytes spliced into valid JSON
)


@FUZZ
@given(event_bytes)
def test_every_event_value_is_either_valid_or_rejected_with_a_reason(value):
    try:
        lang, user, rid, count = parse_event(value)
    except InvalidEvent as exc:
        assert exc.reason in REASONS
        return
    assert valid_lang(lang)
    assert type(user) is str and 0 < len(user) <= MAX_USER_ID_LENGTH
    assert CONTROL_CHARACTERS.search(user) is None
    assert type(rid) is int and 1 <= rid <= MAX_RESOURCE_ID
    assert type(count) is int and 1 <= count <= MAX_COUNT


# -- the CSV reader -----------------------------------------------------------------------
field = st.one_of(
    st.integers(-3, 2**64).map(str), st.text(max_size=12),
    st.sampled_from(["1e3", "5.0", " 7 ", "+4", "٣", "", "NA", str(MAX_CSV_COUNT)]))
rows = st.lists(st.lists(field, min_size=0, max_size=4), max_size=12)
headers = st.sampled_from([
    ["user_id", "resource_id", "view_count"], [" user_id", "resource_id ", "view_count"],
    ["view_count", "user_id", "resource_id"], ["user_id", "resource_id"],
    ["user_id", "resource_id", "view_count", "view_count"], []])


def csv_bytes(header: list[str], body: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    if header:
        writer.writerow(header)
    writer.writerows(r for r in body if r)
    return out.getvalue().encode()


csv_inputs = st.one_of(
    st.binary(max_size=400),
    st.builds(csv_bytes, headers, rows),
    st.tuples(st.builds(csv_bytes, headers, rows), st.integers(0, 300), st.binary(max_size=3))
    .map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:]),
)


def load(data: bytes, skip: bool):
    fd, path = tempfile.mkstemp(suffix=".csv")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        try:
            return load_views(path, skip_bad_rows=skip), path
        except InputError as exc:
            assert str(exc).startswith(path) and len(str(exc).splitlines()) == 1
            return exc, path
    finally:
        os.unlink(path)


@FUZZ
@given(csv_inputs)
def test_every_csv_is_either_loaded_or_rejected_with_file_and_line(data):
    strict, _ = load(data, skip=False)
    lenient, _ = load(data, skip=True)
    if isinstance(strict, InputError):
        # Rejected: the lenient read either rejects the file too (header, encoding) or
        # names at least one bad row; it never keeps a row it also calls bad.
        if not isinstance(lenient, InputError):
            df, report = lenient
            assert report.bad, "rejected strictly, yet nothing bad when skipping"
            assert len({b.line for b in report.bad}) == len(report.bad)
        return
    df, report = strict
    assert not isinstance(lenient, InputError) and lenient[1].bad == []
    assert lenient[0].equals(df)
    assert report.rows == len(df)
    assert ((df["resource_id"] >= 1) & (df["resource_id"] <= MAX_RESOURCE_ID)).all()
    assert ((df["views"] >= 1) & (df["views"] <= MAX_CSV_COUNT)).all()
    lengths = df["user_id"].str.len()
    assert ((lengths >= 1) & (lengths <= MAX_USER_ID_LENGTH)).all()
    assert not df.duplicated(["user_id", "resource_id"]).any()
