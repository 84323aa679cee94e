"""Redis's longest command while a benchmark step ran (SLOWLOG), named: a script call is
shown by the name of its script."""

from __future__ import annotations

import hashlib
import statistics


def start(client, threshold_us: int = 100) -> None:
    """Log every command slower than ``threshold_us`` from now on (and forget older ones)."""
    client.config_set("slowlog-log-slower-than", threshold_us)
    client.config_set("slowlog-max-len", 100000)
    client.slowlog_reset()


def longest(client, scripts: dict[str, str] | None = None) -> str:
    """The slowest command since :func:`start`, e.g. ``2.1 ms (REFILL; 40 commands over
    0.5 ms, their median 0.8 ms)``; ``scripts``: name -> Lua source, to name EVALSHA."""
    names = {hashlib.sha1(v.encode()).hexdigest(): k for k, v in (scripts or {}).items()}
    entries = [e for e in client.slowlog_get(100000)
               if not e["command"].upper().startswith((b"SLOWLOG", b"CONFIG"))]
    threshold = int(client.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"])
    if not entries:
        return f"none over {threshold / 1000:g} ms"
    top = max(entries, key=lambda e: e["duration"])
    words = top["command"].split(b" ")
    name = words[0].decode()
    if name.upper() == "EVALSHA" and len(words) > 1:
        name = names.get(words[1].decode(), name)
    median = statistics.median(e["duration"] for e in entries) / 1000
    return (f"{top['duration'] / 1000:.2f} ms ({name}; {len(entries)} commands over "
            f"{threshold / 1000:g} ms, their median {median:.2f} ms)")
