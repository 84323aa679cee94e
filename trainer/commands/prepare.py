"""What the commands do before any work: check that an output file can be written and that
the chosen engine can run here, and read an extract as the matrix they fit on (``recs train
--views``, ``recs evaluate``, ``recs tune --views``), printing what each step did: the rows
loaded and skipped, each filter's removals, the matrix's size."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TextIO

import pandas as pd

from core.errors import InputError
from core.options import writable_file
from trainer.config import FilterConfig, ModelSpec
from trainer.data import spark
from trainer.data.extracts import LoadReport, load_views
from trainer.data.folders import load_views_any
from trainer.data.matrix import UtilityMatrix, filtered_matrix
from trainer.models.als import GPU_HINT
from trainer.models.rp3beta import refuse_spark
from trainer.settings import SparkConfig


def check_output_file(flag: str, path: str | None) -> None:
    """Refuse an output path that cannot be written before any work is done (a search or a
    plot must not run for minutes only to fail at the end)."""
    if path:
        try:
            writable_file(path)
        except argparse.ArgumentTypeError as exc:
            raise InputError(f"{flag}: {exc}") from None


def check_engine(args) -> None:
    """Fail early, in one line, when the chosen engine cannot run here; configure Spark."""
    engine = getattr(args, "engine", "implicit")
    if getattr(args, "model_kind", None) == "rp3beta":
        refuse_spark(ModelSpec.from_values(vars(args)))
    if engine == "spark":
        spark.require_spark()
        spark.configure(SparkConfig.from_args(args))
    elif engine == "implicit-gpu":
        import implicit.gpu

        if not implicit.gpu.HAS_CUDA:
            raise InputError(GPU_HINT)


def load_extract(path, skip_bad_rows: bool) -> tuple[pd.DataFrame, LoadReport]:
    """One CSV extract (``load_views``), or a folder / Parquet file (``load_views_any``)."""
    p = Path(path)
    if p.is_dir() or p.suffix == ".parquet":
        return load_views_any(p, skip_bad_rows)
    return load_views(p, skip_bad_rows=skip_bad_rows)


def prepared_matrix(args, out: TextIO) -> tuple[UtilityMatrix, dict]:
    """Load ``--views``, filter and build the matrix, printing what each step did; returns
    the matrix and the facts the model file keeps about its source."""
    df, load_report = load_extract(args.views, args.skip_bad_rows)
    for line in load_report.lines():
        print(line, file=out)
    matrix, filter_report = filtered_matrix(df, FilterConfig.from_args(args),
                                            lambda line: print(line, file=out))
    print(f"matrix: {matrix.shape[0]} users x {matrix.shape[1]} resources, {matrix.nnz} "
          f"non-zeros, sparsity {100 * matrix.sparsity:.3f}%", file=out)
    stats = {"source": str(args.views), "filters": filter_report.as_dict(),
             "bad_rows": len(load_report.bad), "duplicates": load_report.duplicates}
    return matrix, stats
