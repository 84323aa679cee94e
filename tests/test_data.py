"""Loading extracts: dtypes, gzip, duplicates, bad rows with their line numbers, resources."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from trainer.data.extracts import load_resources, load_views

HEADER = "user_id,resource_id,view_count\n"


def write(path, text: str, gz: bool = False):
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_views_columns_dtypes_and_big_counts(tmp_path):
    p = write(tmp_path / "v.csv", HEADER + "u1,489473,3\nu2,4294967295,70000\nNA,7,1\n")
    df, report = load_views(p)
    assert list(df.columns) == ["user_id", "resource_id", "views"]
    assert df["resource_id"].dtype == np.int64 and df["views"].dtype == np.int64
    # Counts are not limited to 255; "NA" is a user id, not a missing value.
    assert df.values.tolist() == [["u1", 489473, 3], ["u2", 4294967295, 70000], ["NA", 7, 1]]
    assert report.rows == 3 and report.duplicates == 0 and report.bad == []


def test_gzip_reads_like_plain(tmp_path):
    text = HEADER + "a,1,2\nb,2,3\na,2,1\n"
    plain, _ = load_views(write(tmp_path / "v.csv", text))
    zipped, _ = load_views(write(tmp_path / "v.csv.gz", text, gz=True))
    pd.testing.assert_frame_equal(plain, zipped)
    # gzip is recognised by content, not only by the name (the careful path too).
    renamed, _ = load_views(write(tmp_path / "v_gz.csv", text + "c,x,1\n", gz=True),
                            skip_bad_rows=True)
    pd.testing.assert_frame_equal(plain, renamed)


def test_duplicate_pairs_keep_the_first_row(tmp_path):
    p = write(tmp_path / "v.csv", HEADER + "u1,10,3\nu2,10,1\nu1,10,7\nu1,11,2\nu1,10,9\n")
    df, report = load_views(p)
    assert df.values.tolist() == [["u1", 10, 3], ["u2", 10, 1], ["u1", 11, 2]]
    assert report.duplicates == 2 and report.rows == 3


@pytest.mark.parametrize("row, problem", [
    ("u1,5", "2 fields, expected 3"),
    ("u1,5,1,9", "4 fields, expected 3"),
    ("u1,abc,1", "resource_id 'abc' is not an integer"),
    ("u1,5,-2", "view_count -2 is below 1 (negative)"),
    ("u1,5,0", "view_count 0 is below 1"),
    ("u1,5,x", "view_count 'x' is not an integer"),
    ("u1,0,1", "resource_id 0 outside 1..4294967295"),
    ("u1,4294967296,1", "resource_id 4294967296 outside 1..4294967295"),
    ("u1,99999999999999999999999,1", "outside 1..4294967295"),
    (",5,1", "empty user_id"),
    ("u" * 129 + ",5,1", "user_id longer than 128"),
])
def test_bad_row_names_file_line_and_problem(tmp_path, row, problem):
    # A blank line before the bad row: line numbers are the file's, blank lines count.
    p = write(tmp_path / "views.csv", HEADER + "u1,1,1\n\nu2,2,2\n" + row + "\nu3,3,3\n")
    with pytest.raises(InputError) as err:
        load_views(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: line 5: ") and problem in msg


def test_skip_bad_rows_reports_count_and_lines(tmp_path):
    good = "a,1,1\nb,2,5\nc,3,2\n"
    p = write(tmp_path / "v.csv", HEADER + "a,1,1\nb,-1,1\nb,2,5\nc,3,-4\nc,3,2\nd\n")
    df, report = load_views(p, skip_bad_rows=True)
    clean, _ = load_views(write(tmp_path / "clean.csv", HEADER + good))
    # The careful (row by row) path yields exactly what the fast path yields.
    pd.testing.assert_frame_equal(df, clean)
    assert [b.line for b in report.bad] == [3, 5, 7]
    assert "outside" in report.bad[0].problem and "negative" in report.bad[1].problem
    assert "skipped 3 bad rows, lines 3, 5, 7" in "\n".join(report.lines())


def test_header_must_name_the_columns(tmp_path):
    p = write(tmp_path / "v.csv", "user_id,resource_id\nu1,5\n")
    with pytest.raises(InputError, match=r"line 1: .*lacks column\(s\) view_count"):
        load_views(p)
    with pytest.raises(InputError, match="line 1: empty file"):
        load_views(write(tmp_path / "empty.csv", ""))
    with pytest.raises(InputError, match="no such file"):
        load_views(tmp_path / "missing.csv")


def test_columns_in_another_order(tmp_path):
    p = write(tmp_path / "v.csv", "view_count,user_id,resource_id\n4,u1,5\n")
    df, _ = load_views(p)
    assert df.values.tolist() == [["u1", 5, 4]]


def test_resources_file(tmp_path):
    p = write(tmp_path / "r.csv",
              "id,title,folder,subject,tags\n"
              '10,"Cells, tissues and organs",Bio,Cell biology,"cells,biology"\n'
              "20,Algebra basics,,Algebra,\n"
              "10,Repeated id,,,\n")
    res = load_resources(p)
    assert res.index.dtype == np.int64 and list(res.index) == [10, 20]
    assert res.loc[10, "title"] == "Cells, tissues and organs"
    assert res.loc[10, "tags"] == "cells,biology"
    assert res.loc[20, "folder"] == ""


def test_resources_optional_columns_and_bad_id(tmp_path):
    res = load_resources(write(tmp_path / "r.csv", "id,title\n5,Only a title\n"))
    assert res.loc[5, "subject"] == "" and res.loc[5, "title"] == "Only a title"
    bad = write(tmp_path / "bad.csv", "id,title\n5,ok\nfive,bad\n")
    with pytest.raises(InputError, match=r"bad.csv: line 3: id 'five'"):
        load_resources(bad)
