"""Argument types for the ``recs`` command line: each checks one value and explains a bad one.

argparse converts a string default (which is how ``RECS_*`` variables arrive) through the
same ``type`` as a flag, so a variable is checked exactly like the flag it stands for, and a
bad one is one clear line and exit 2 at start-up, never a crash later. Every numeric option
goes through one of these: finite, in range, or refused.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from recs.contract import valid_lang


def _number(kind: type, lo: float | None, hi: float | None, what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(str(text).strip())
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range {_range(lo, hi)}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def _range(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


def int_range(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An integer in [lo, hi] (either bound may be None)."""
    return _number(int, lo, hi, "an integer")


def float_range(lo: float | None = None, hi: float | None = None) -> Callable[[str], float]:
    """A finite number in [lo, hi] (either bound may be None); nan and inf are refused."""
    return _number(float, lo, hi, "a number")


positive_int = int_range(1)
non_negative_int = int_range(0)
non_negative_float = float_range(0.0)
port = int_range(0, 65535)
"""A TCP port; 0 means off where an option says so."""


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = float_range(0.0)(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be above 0")
    return value


def lang(text: str) -> str:
    """A language code as the contract defines it: 2 or 3 lowercase ASCII letters."""
    if not valid_lang(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a language code "
                                         "(2 or 3 lowercase letters, e.g. en)")
    return text
