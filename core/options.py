"""Argument types for the ``recs`` command line: each checks one value and explains a bad one.

argparse converts a string default (which is how ``RECS_*`` variables arrive) through the
same ``type`` as a flag, so a variable is checked exactly like the flag it stands for, and a
bad one is one clear line and exit 2 at start-up, never a crash later. Every numeric option
goes through one of these: finite, in range, or refused.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.contract import valid_lang
from core.errors import InputError


def _number(kind: type, lo: float | None, hi: float | None, what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(str(text).strip())
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text!r}: {_range(lo, hi)}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def _range(lo: float | None, hi: float | None) -> str:
    if hi is None:
        return f"must be at least {lo}"
    if lo is None:
        return f"must be at most {hi}"
    return f"must be between {lo} and {hi}"


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


_BYTE_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def byte_size(text: str) -> int:
    """A positive number of bytes: ``2000000000``, or with a unit ``500M``, ``2G``, ``1.5T``
    (powers of 1000)."""
    t = str(text).strip().upper().removesuffix("B")
    unit = t[-1:] if t[-1:] in _BYTE_UNITS else ""
    try:
        value = float(t[:len(t) - len(unit)]) * _BYTE_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 2G, 500M)") from None
    if not (math.isfinite(value) and value >= 1):
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1 byte")
    return int(value)


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


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """A logging level name (any case): DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    level = str(text).strip().upper()
    if level not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level "
                                         f"(choose from {', '.join(_LOG_LEVELS)})")
    return level


_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9-]{1,63})*")


def host(text: str) -> str:
    """An address to listen on: an IPv4/IPv6 literal or a host name (``0.0.0.0``, ``::``,
    ``127.0.0.1``, ``localhost``)."""
    value = str(text).strip()
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or host name")
    return value


def writable_dir(text: str) -> str:
    """A folder that exists and is writable, or that can be created (its nearest existing
    parent is a writable folder). ``recs train`` checks it before any work, so a long run
    never fails at the end for want of a place to write; nothing is created here. (Not an
    argparse type: parsing stays free of file-system checks.)"""
    path = Path(str(text)).expanduser()
    if not str(text).strip():
        raise argparse.ArgumentTypeError("an empty path is not a folder")
    probe = path.absolute()
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe != path.absolute() and not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} cannot be created: {str(probe)!r} "
                                         "is not a folder")
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    _probe_folder(probe, text)
    return str(text)


def _probe_folder(folder: Path, text: str) -> None:
    """A real probe: os.access says yes to root on a read-only or virtual filesystem."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write in {str(folder)!r} "
                                         f"({exc.strerror or exc})") from None


def writable_file(text: str) -> str:
    """A file that can be written: not a folder, in a folder that exists and takes a new
    file (or an existing file that opens for writing). Checked before a long command's work
    (``recs tune --out``, ``recs history --plot``); nothing is created or changed here."""
    path = Path(str(text)).expanduser()
    if not str(text).strip():
        raise argparse.ArgumentTypeError("an empty path is not a file")
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {str(parent)!r} is not a folder")
    if not path.exists():
        _probe_folder(parent, text)
        return str(text)
    try:  # appending nothing changes an existing file
        with path.open("ab"):
            pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot write it "
                                         f"({exc.strerror or exc})") from None
    return str(text)


# -- KEY=VALUE passthrough options (--kafka-config, and any later --*-conf) ---------------------


def key_value(text: str) -> str:
    """One ``KEY=VALUE`` setting for a passthrough option; the value may hold anything
    (``=``, commas). Returned unchanged. Errors never quote the text: it may be a password."""
    key, sep, _value = str(text).partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("expected KEY=VALUE (the value is not shown)")
    if not key.strip() or any(c.isspace() or c in ",{}\"'" for c in key.strip()):
        raise argparse.ArgumentTypeError("expected KEY=VALUE with a setting name as KEY "
                                         "(the value is not shown)")
    return str(text)


def key_value_items(text: str) -> list[str]:
    """The ``KEY=VALUE`` items a ``RECS_*`` variable of a passthrough option carries.

    Three forms, tried in this order:

    - a JSON object, ``{"sasl.password": "a,b", "security.protocol": "SASL_SSL"}``: carries
      any value (commas, newlines, quotes); values may be strings, numbers or booleans;
    - one ``KEY=VALUE`` per line (when the text holds a newline): any value without a newline
      (surrounding spaces are stripped, as in the comma form);
    - the old comma-separated form, ``k1=v1,k2=v2``; a piece without ``=`` continues the value
      before it, so ``sasl.password=a,b`` still reads as one setting.

    Raises ``ValueError`` with a message that quotes no value."""
    text = str(text).strip()
    if text.startswith("{"):
        return _json_items(text)
    if "\n" in text:
        # split("\n"), not splitlines(): that also splits on \x1c-\x1e, \x85, \u2028 ...
        return [line.strip() for line in text.split("\n") if line.strip()]
    items: list[str] = []
    for piece in text.split(","):
        if "=" not in piece and items:
            items[-1] += "," + piece
        elif piece.strip():
            items.append(piece.strip())
    return items


def _json_items(text: str) -> list[str]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object of settings")
    items = []
    for key, value in doc.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif not isinstance(value, (str, int, float)):
            raise ValueError(f"setting {key!r}: expected a string, number or boolean value")
        items.append(f"{key}={value}")
    return items


def lang_list(text: str) -> str:
    """Comma-separated language codes (``en,es``), each by the rule of ``lang``."""
    codes = [c.strip() for c in str(text).split(",")]
    for code in codes:
        lang(code)
    return ",".join(codes)


def redis_url(text: str) -> str:
    """A Redis URL (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
    ``redis+cluster://``); errors show it masked. Which commands take a cluster is
    ``core.redis_urls.CLUSTER_COMMANDS`` (recs/cli.py refuses the others)."""
    from redis.connection import parse_url

    from core.redact import mask_url
    from core.redis_urls import special

    value = str(text).strip()
    try:
        target = special(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{mask_url(value)!r} is not a valid Redis URL "
                                         f"({exc})") from None
    if target is not None:
        return value
    if not value.lower().startswith(("redis://", "rediss://", "unix://")):
        raise argparse.ArgumentTypeError(f"{mask_url(value)!r} is not a Redis URL "
                                         "(redis://, rediss://, unix://, redis+sentinel:// or "
                                         "redis+cluster://)")
    try:  # redis-py's own parser: what it refuses later would be a traceback
        settings = parse_url(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{mask_url(value)!r} is not a valid Redis URL "
                                         f"({mask_url(str(exc))})") from None
    if not value.lower().startswith("rediss://") and any(k.startswith("ssl") for k in settings):
        raise argparse.ArgumentTypeError(f"{mask_url(value)!r}: ssl_* settings need a "
                                         "rediss:// URL")
    return value


def parse_kafka_config(items: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; a value may itself contain ``=``."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError("--kafka-config: expected KEY=VALUE (the value is not shown)")
        out[key.strip()] = value.strip()
    return out
