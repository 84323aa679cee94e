"""Memory rules: what a fit needs, what the machine has, and the one-line refusal.

Each family states the peak bytes of its fit from the matrix's shape and non-zeros
(``fit_bytes`` on the family class; EASE 12 n^2, RP3beta O(block x n + n x k), ALS the
matrix copies plus the factors). A fit is refused with one line (``InputError``) before
anything is allocated when that exceeds the limit: ``ModelSpec.memory_limit`` when given
(``--memory-limit``), else the machine's ``MemAvailable`` (``/proc/meminfo``) when the fit
starts. Where the limit cannot be read (not Linux), nothing is refused.
"""

from __future__ import annotations

from core.errors import InputError

MEMINFO = "/proc/meminfo"


def available_bytes(path: str = MEMINFO) -> int | None:
    """``MemAvailable`` in bytes; None where the file or the line is missing."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def limit_bytes(limit: int | None) -> tuple[int | None, str]:
    """(bytes a fit may use, where that figure comes from)."""
    if limit is not None:
        return limit, "--memory-limit"
    return available_bytes(), "available (MemAvailable)"


def size(n: int) -> str:
    """``n`` bytes for a person: 1.2 GB, 35 MB, 2 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if unit == "GB" else f"{n / scale:.0f} {unit}"
    return f"{n} bytes"


def fits(need: int, limit: int | None = None) -> bool:
    have, _ = limit_bytes(limit)
    return have is None or need <= have


def check_fits(what: str, need: int, limit: int | None = None, hint: str = "") -> None:
    """One clear line when ``need`` bytes exceed the limit (see the module docstring)."""
    have, source = limit_bytes(limit)
    if have is not None and need > have:
        raise InputError(f"{what} needs about {size(need)} to fit, more than the "
                         f"{size(have)} {source}{'; ' + hint if hint else ''}")
