"""Text from data (titles, reasons, ids) made safe to print on an operator's terminal."""

from __future__ import annotations

from core.contract import CONTROL_CHARACTERS


def for_terminal(text: object) -> str:
    """``text`` with every control character (C0, DEL, C1: ESC sequences, carriage returns,
    bells) shown as a ``\\xNN`` escape instead of acting on the terminal."""
    return CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))
