"""The CSV reader (trainer/data.py) against hostile extracts: one clear error with the file and
line, never a traceback, never a silently wrong number."""

from __future__ import annotations

import pytest

from core.contract import MAX_CSV_COUNT
from core.errors import InputError
from trainer.data.extracts import load_views

HEADER = "user_id,resource_id,view_count\n"


def write(path, data: str | bytes):
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def test_a_header_padded_with_spaces_is_accepted(tmp_path):
    p = write(tmp_path / "v.csv", " user_id , resource_id,view_count \nu1,5,2\nu2,6,1\n")
    df, _ = load_views(p)
    assert df.values.tolist() == [["u1", 5, 2], ["u2", 6, 1]]


@pytest.mark.parametrize("count, problem", [
    ("9223372036854775808", "above the maximum"),
    ("99999999999999999999999", "above the maximum"),
    (str(MAX_CSV_COUNT + 1), "above the maximum"),
    ("1e3", "'1e3' is not an integer"),
    ("5.0", "'5.0' is not an integer"),
    ("5_000", "'5_000' is not an integer"),
    ("٣", "is not an integer"),
])
def test_counts_beyond_the_bound_or_not_plain_integers_name_the_line(tmp_path, count, problem):
    p = write(tmp_path / "v.csv", HEADER + f"u1,1,1\nu2,2,{count}\n")
    with pytest.raises(InputError) as err:
        load_views(p)
    assert str(err.value).startswith(f"{p}: line 3: ") and problem in str(err.value)


def test_the_largest_count_and_padded_numbers_are_accepted(tmp_path):
    p = write(tmp_path / "v.csv", HEADER + f"u1,1,{MAX_CSV_COUNT}\nu2, 2 ,+3\n")
    df, _ = load_views(p)
    assert df.values.tolist() == [["u1", 1, MAX_CSV_COUNT], ["u2", 2, 3]]


def test_a_resource_id_written_as_a_float_is_refused(tmp_path):
    p = write(tmp_path / "v.csv", HEADER + "u1,5.0,1\n")
    with pytest.raises(InputError, match="line 2: resource_id '5.0' is not an integer"):
        load_views(p)


def test_a_column_named_twice_is_refused(tmp_path):
    p = write(tmp_path / "v.csv", "user_id,resource_id,view_count,view_count\nu,1,2,3\n")
    with pytest.raises(InputError, match="line 1: .*view_count more than once"):
        load_views(p)


def test_invalid_utf8_is_reported_on_its_own_line(tmp_path):
    rows = "".join(f"user-{i},{i + 1},1\n" for i in range(3000))  # well past one buffer
    p = write(tmp_path / "v.csv", HEADER.encode() + rows.encode() + b"bad\xff,7,1\nz,8,1\n")
    with pytest.raises(InputError, match=r"v.csv: line 3002: not UTF-8"):
        load_views(p)


def test_a_directory_is_reported_as_such(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_views(tmp_path)
