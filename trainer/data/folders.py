"""Views extracts beyond one CSV file, for ``recs train --engine spark --views PATH``: a CSV,
CSV.gz or Parquet file, or a folder of them (a Spark job's output folder, say).

The rules are the CSV reader's (``trainer.data.extracts.load_views``), applied to every file: a
bad row stops the command naming the file, the row and the problem (or is skipped and reported
with ``--skip-bad-rows``), and a repeated (user, resource) pair keeps its first row. Across
the files of a folder, "first" follows the files' names in sorted order, then row order
within a file. Parquet files are read by Spark's own reader; a Parquet
file's row numbers start at 1 for its first data row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import MAX_RESOURCE_ID, MAX_USER_ID_LENGTH
from core.errors import InputError
from trainer.data.extracts import VIEW_COLUMNS, BadRow, LoadReport, load_views
from trainer.data.spark import session

SKIPPED_NAMES = ("_", ".")
"""Spark's markers (_SUCCESS, _committed...) and hidden/checksum files in an output folder."""


def extract_files(path: str | Path) -> list[Path]:
    """The data files of ``path``: itself, or a folder's files in name order."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise InputError(f"{p}: no such file or folder")
    files = sorted(f for f in p.rglob("*") if f.is_file()
                   and not f.name.startswith(SKIPPED_NAMES) and not f.name.endswith(".crc"))
    if not files:
        raise InputError(f"{p}: the folder holds no data files")
    return files


def load_views_any(path: str | Path, skip_bad_rows: bool = False
                   ) -> tuple[pd.DataFrame, LoadReport]:
    """Every file of ``path`` as one views table (``load_views``' shape) and one report."""
    frames, report = [], LoadReport(path=str(path))
    for f in extract_files(path):
        if f.suffix == ".parquet" or f.name.endswith(".snappy.parquet"):
            df, part = parquet_views(f, skip_bad_rows)
        else:
            df, part = load_views(f, skip_bad_rows=skip_bad_rows)
        frames.append(df)
        report.duplicates += part.duplicates
        report.bad += [BadRow(b.line, f"{f.name}: {b.problem}") for b in part.bad]
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(["user_id", "resource_id"], keep="first").to_numpy()
    report.duplicates += int(dup.sum())
    df = df[~dup].reset_index(drop=True)
    report.rows = len(df)
    return df, report


def parquet_views(path: Path, skip_bad_rows: bool = False) -> tuple[pd.DataFrame, LoadReport]:
    """One Parquet file of ``user_id, resource_id, view_count``, read by Spark and checked
    row by row like a CSV extract."""
    raw = session().read.parquet(str(path)).toPandas()
    missing = [c for c in VIEW_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                         f"{', '.join(VIEW_COLUMNS)}")
    problems = _row_problems(raw)
    report = LoadReport(path=str(path))
    bad = np.flatnonzero(problems != "")
    if bad.size and not skip_bad_rows:
        first = int(bad[0])
        raise InputError(f"{path}: row {first + 1}: {problems[first]} (use --skip-bad-rows "
                         "to skip bad rows)")
    report.bad = [BadRow(int(i) + 1, str(problems[i])) for i in bad]
    good = raw[problems == ""]
    df = pd.DataFrame({"user_id": good["user_id"].astype(str).to_numpy(),
                       "resource_id": good["resource_id"].astype(np.int64).to_numpy(),
                       "views": good["view_count"].astype(np.int64).to_numpy()})
    dup = df.duplicated(["user_id", "resource_id"], keep="first").to_numpy()
    report.duplicates = int(dup.sum())
    df = df[~dup].reset_index(drop=True)
    report.rows = len(df)
    return df, report


def _row_problems(raw: pd.DataFrame) -> np.ndarray:
    """Per row, "" or the first problem found (the CSV reader's rules)."""
    out = np.full(len(raw), "", dtype=object)
    user = raw["user_id"]
    rid = pd.to_numeric(raw["resource_id"], errors="coerce")
    count = pd.to_numeric(raw["view_count"], errors="coerce")
    checks = [
        (user.isna() | (user.astype(str).str.len() == 0), "empty user_id"),
        (user.astype(str).str.len() > MAX_USER_ID_LENGTH,
         f"user_id longer than {MAX_USER_ID_LENGTH} characters"),
        (rid.isna() | (rid % 1 != 0), "resource_id is not an integer"),
        ((rid < 1) | (rid > MAX_RESOURCE_ID), f"resource_id outside 1..{MAX_RESOURCE_ID}"),
        (count.isna() | (count % 1 != 0), "view_count is not an integer"),
        (count < 1, "view_count below 1"),
    ]
    for mask, problem in reversed(checks):  # the first check listed wins
        out[np.asarray(mask.fillna(False), dtype=bool)] = problem
    return out
