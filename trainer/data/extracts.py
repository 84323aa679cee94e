"""Reading the platform's CSV extracts (plain or .gz), validated once here at the boundary.

- ``load_views(path, skip_bad_rows=False) -> (DataFrame, LoadReport)``: a views extract
  ``user_id,resource_id,view_count`` (header row), optionally a fourth column ``ts``: the time
  of the pair's last view in epoch milliseconds (the view events' unit), an integer in
  0..MAX_TS. The DataFrame has columns ``user_id`` (str), ``resource_id`` (int64) and
  ``views`` (int64), plus ``ts`` (int64) when the file has it, one row per (user, resource):
  a repeated pair keeps its first row, as the platform does. A bad row (a field missing, an id
  or count that is not written as a plain integer (``5.0`` and ``1e3`` are refused), a count
  outside 1..MAX_CSV_COUNT, a resource id outside 1..4294967295, an empty or over-long user
  id) raises ``InputError`` naming the file, the line and the problem; with ``skip_bad_rows`` it is
  skipped and listed in the report instead. Counts are int64 (not limited to 255). A header
  may pad its names with spaces; a column named twice is refused.
- ``load_resources(path) -> DataFrame``: a resources file ``id,title,folder,subject,tags``,
  indexed by ``id`` (int64), the other columns str ("" when absent). Only id and title are
  required columns.

Line numbers are the file's (the header is line 1), invalid UTF-8 included: lines are
decoded one by one. Blank lines are ignored.
"""

from __future__ import annotations

import csv
import gzip
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from core.contract import MAX_CSV_COUNT, MAX_RESOURCE_ID, MAX_USER_ID_LENGTH
from core.errors import InputError

VIEW_COLUMNS = ("user_id", "resource_id", "view_count")
TIME_COLUMN = "ts"
MAX_TS = 10**14
"""Largest ``ts`` taken (epoch ms, the year 5138): a bound that keeps sums and weights exact."""
RESOURCE_COLUMNS = ("id", "title", "folder", "subject", "tags")


@dataclass(frozen=True)
class BadRow:
    line: int
    problem: str


@dataclass
class LoadReport:
    """What loading an extract kept and skipped."""

    path: str
    rows: int = 0
    """Data rows kept (after dropping duplicates)."""
    duplicates: int = 0
    """Rows dropped because their (user, resource) pair came earlier in the file."""
    bad: list[BadRow] = field(default_factory=list)
    """Rows skipped under ``skip_bad_rows``, in file order."""

    def lines(self) -> list[str]:
        out = [f"{self.path}: {self.rows} rows kept, {self.duplicates} duplicate "
               f"(user, resource) rows dropped (first kept)"]
        if self.bad:
            shown = ", ".join(str(b.line) for b in self.bad[:20])
            more = f" and {len(self.bad) - 20} more" if len(self.bad) > 20 else ""
            out.append(f"{self.path}: skipped {len(self.bad)} bad rows, lines {shown}{more}; "
                       f"first: line {self.bad[0].line}: {self.bad[0].problem}")
        return out


def _open_text(path: Path):
    """Text stream of a plain or gzip file (gzip recognised by its magic bytes)."""
    with open(path, "rb") as fh:
        magic = fh.read(2)
    raw = gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected a CSV file")
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    return p


def _read_header(p: Path, required: tuple[str, ...]) -> list[str]:
    try:
        with _open_text(p) as fh:
            header = next(csv.reader(fh), None)
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: line 1: unreadable ({exc})") from None
    if not header:
        raise InputError(f"{p}: line 1: empty file, expected a header {','.join(required)}")
    names = [h.strip() for h in header]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{p}: line 1: header {_shown(names)} names column(s) "
                         f"{_shown(twice, ', ')} more than once")
    missing = [c for c in required if c not in names]
    if missing:
        raise InputError(f"{p}: line 1: header {_shown(names)} lacks column(s) "
                         f"{', '.join(missing)} (expected {','.join(required)})")
    return names


def _shown(names: list[str], sep: str = ",") -> str:
    """Header names for a one-line message: control characters and the like escaped."""
    text = sep.join(names)
    return text if text.isprintable() else repr(text)


def _data_rows(p: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row after the header. The line number is the
    row's last line in the file (a quoted field may span lines); a file that cannot be read
    to the end raises ``InputError`` naming the last line read."""
    reader = None
    try:
        reader = csv.reader(_decoded_lines(p))
        next(reader, None)
        for raw in reader:
            if raw:
                yield reader.line_num, raw
    except (OSError, EOFError, csv.Error) as exc:
        line = reader.line_num if reader is not None else 0
        raise InputError(f"{p}: unreadable after line {line}: {exc}") from None


def _decoded_lines(p: Path) -> Iterator[str]:
    """The file's lines, each decoded on its own, so that invalid UTF-8 is reported on the
    line that holds it (a decoding stream fails a whole buffer ahead of the csv reader)."""
    with open(p, "rb") as fh:
        magic = fh.read(2)
    with (gzip.open(p, "rb") if magic == b"\x1f\x8b" else open(p, "rb")) as fh:
        for number, line in enumerate(fh, start=1):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            try:
                yield line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{p}: line {number}: not UTF-8 ({exc.reason} at byte "
                                 f"{exc.start + 1} of the line)") from None


def _to_int(text: str) -> int | None:
    """The integer a field holds if it is written as one (' 5', '+5', '-2'); None for
    anything else ('5.0', '1e3', '5_000', other scripts' digits)."""
    s = text.strip()
    digits = s[1:] if s[:1] in "+-" else s
    if not (digits.isascii() and digits.isdigit()):
        return None
    return int(s)


def _view_problem(user: str, resource: int | None, count: int | None, raw: list[str]) -> str | None:
    if user == "":
        return "empty user_id"
    if len(user) > MAX_USER_ID_LENGTH:
        return f"user_id longer than {MAX_USER_ID_LENGTH} characters"
    if resource is None:
        return f"resource_id {raw[1]!r} is not an integer"
    if not 1 <= resource <= MAX_RESOURCE_ID:
        return f"resource_id {resource} outside 1..{MAX_RESOURCE_ID}"
    if count is None:
        return f"view_count {raw[2]!r} is not an integer"
    if count < 1:
        return f"view_count {count} is below 1" + (" (negative)" if count < 0 else "")
    if count > MAX_CSV_COUNT:
        return f"view_count {count} is above the maximum {MAX_CSV_COUNT}"
    return None


def load_views(path: str | Path, skip_bad_rows: bool = False) -> tuple[pd.DataFrame, LoadReport]:
    """A views extract as a DataFrame plus what was dropped; see the module docstring."""
    p = _check_file(path)
    names = _read_header(p, VIEW_COLUMNS)
    df = _fast_views(p, names)
    report = LoadReport(path=str(p))
    if df is None:
        df = _careful_views(p, names, skip_bad_rows, report)
    dup = df.duplicated(["user_id", "resource_id"], keep="first").to_numpy()
    report.duplicates = int(dup.sum())
    if report.duplicates:
        df = df[~dup].reset_index(drop=True)
    report.rows = len(df)
    return df, report


def _fast_views(p: Path, names: list[str]) -> pd.DataFrame | None:
    """The vectorised read; None if anything looks off (the careful path then finds what).
    The numbers are read as text first: pandas' int64 parser also takes ``5.0`` and ``1e3``,
    which the contract refuses."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                # No usecols: with it the parser ignores rows with extra fields. names:
                # the header's own names, stripped of padding.
                p, index_col=False, engine="c", header=0, names=names,
                dtype={"user_id": str, "resource_id": object, "view_count": object,
                       TIME_COLUMN: object},
                keep_default_na=False, na_filter=False, compression="infer",
                encoding="utf-8-sig",
            )
        rid = _digits_to_int64(df["resource_id"].to_numpy())
        cnt = _digits_to_int64(df["view_count"].to_numpy())
        timed = TIME_COLUMN in names
        ts = _digits_to_int64(df[TIME_COLUMN].to_numpy()) if timed else np.zeros(1, np.int64)
    except (ValueError, OverflowError, TypeError, pd.errors.ParserError,
            pd.errors.ParserWarning, UnicodeDecodeError, OSError, EOFError):
        return None
    if rid is None or cnt is None or ts is None or (ts > MAX_TS).any():
        return None
    df["resource_id"], df["view_count"] = rid, cnt
    lengths = df["user_id"].str.len().to_numpy()
    if ((rid < 1) | (rid > MAX_RESOURCE_ID) | (cnt < 1) | (cnt > MAX_CSV_COUNT) | (lengths == 0)
            | (lengths > MAX_USER_ID_LENGTH)).any():
        return None
    if timed:
        df[TIME_COLUMN] = ts
    df = df.rename(columns={"view_count": "views"})
    return df[["user_id", "resource_id", "views", *([TIME_COLUMN] if timed else [])]]


def _digits_to_int64(values: np.ndarray) -> np.ndarray | None:
    """int64 of fields that are all plain ASCII digits (at most 18: no overflow); else None."""
    if not all(v.isascii() and v.isdigit() and len(v) <= 18 for v in values):
        return None
    return values.astype(np.int64)


def _careful_views(p: Path, names: list[str], skip_bad_rows: bool,
                   report: LoadReport) -> pd.DataFrame:
    """Row-by-row validation with exact line numbers; only runs when the fast read refused."""
    cols = [names.index(c) for c in VIEW_COLUMNS]
    ts_col = names.index(TIME_COLUMN) if TIME_COLUMN in names else None
    width = len(names)
    users: list[str] = []
    resources: list[int] = []
    counts: list[int] = []
    times: list[int] = []
    for line, raw in _data_rows(p):
        ts = 0
        if len(raw) != width:
            problem = f"{len(raw)} fields, expected {width} ({_shown(names)})"
        else:
            fields_ = [raw[i] for i in cols]
            user = fields_[0]
            resource, count = _to_int(fields_[1]), _to_int(fields_[2])
            problem = _view_problem(user, resource, count, fields_)
            if problem is None and ts_col is not None:
                ts, problem = _ts_problem(raw[ts_col])
        if problem is None:
            users.append(user)
            resources.append(resource)
            counts.append(count)
            times.append(ts)
        elif skip_bad_rows:
            report.bad.append(BadRow(line, problem))
        else:
            raise InputError(f"{p}: line {line}: {problem} (--skip-bad-rows skips such rows)")
    df = pd.DataFrame({
        "user_id": pd.array(users, dtype=str),
        "resource_id": np.asarray(resources, dtype=np.int64),
        "views": np.asarray(counts, dtype=np.int64),
    })
    if ts_col is not None:
        df[TIME_COLUMN] = np.asarray(times, dtype=np.int64)
    return df


def _ts_problem(text: str) -> tuple[int, str | None]:
    """(ts, None) for a valid ``ts`` field, else (0, the problem)."""
    ts = _to_int(text)
    if ts is None:
        return 0, f"ts {text!r} is not an integer (epoch milliseconds)"
    if not 0 <= ts <= MAX_TS:
        return 0, f"ts {ts} outside 0..{MAX_TS} (epoch milliseconds)"
    return ts, None


def load_resources(path: str | Path) -> pd.DataFrame:
    """A resources file indexed by id (int64); columns title, folder, subject, tags (str).

    A repeated id keeps its first row. Bad ids raise ``InputError`` with the line.
    """
    p = _check_file(path)
    names = _read_header(p, ("id", "title"))
    idx = {c: names.index(c) for c in RESOURCE_COLUMNS if c in names}
    ids: list[int] = []
    cols: dict[str, list[str]] = {c: [] for c in RESOURCE_COLUMNS[1:]}
    for line, raw in _data_rows(p):
        if len(raw) != len(names):
            raise InputError(f"{p}: line {line}: {len(raw)} fields, expected "
                             f"{len(names)} ({_shown(names)})")
        rid = _to_int(raw[idx["id"]])
        if rid is None or not 1 <= rid <= MAX_RESOURCE_ID:
            raise InputError(f"{p}: line {line}: id {raw[idx['id']]!r} is not "
                             f"an integer in 1..{MAX_RESOURCE_ID}")
        ids.append(rid)
        for c, values in cols.items():
            values.append(raw[idx[c]] if c in idx else "")
    df = pd.DataFrame({c: pd.array(v, dtype=str) for c, v in cols.items()},
                      index=pd.Index(np.asarray(ids, dtype=np.int64), name="id"))
    return df[~df.index.duplicated(keep="first")]
