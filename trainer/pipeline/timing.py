"""Step timing: one helper that every multi-step command (the online trainer, the Spark
executors path) records its step durations with, so each step's figure means the same thing
(wall seconds, rounded to milliseconds) wherever it is reported."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def timed(into: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall seconds of the ``with`` block as ``into[name]`` (rounded to 3 places),
    also when the block raises (a partial figure is still the time spent)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[name] = round(time.perf_counter() - started, 3)
