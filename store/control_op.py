"""One control operation (hide, unhide or forget) as both control paths take it:
:class:`store.control.Control` on one Redis and :class:`store.control_cluster.ClusterControl`
on a Redis Cluster.

Invariants:

- ``action`` is one of :data:`ACTIONS`; ``target`` is the resource id (decimal) for a hide
  or unhide, the user id for a forget.
- What ``hidden(lang)`` holds for a hidden resource is :meth:`ControlOp.value`: JSON
  ``{reason, ts}`` with sorted keys (store.control.read_hidden reads it back).
- ``at`` is the event's place on the control topic; None means unguarded (the CLI), and
  such an op is applied whenever it is sent (each op is idempotent).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

ACTIONS = ("hide", "unhide", "forget")


@dataclass(frozen=True)
class ControlOp:
    """One hide, unhide or forget; ``lang`` None means every language in ``recs:langs``."""

    action: str
    target: str
    """The resource id (decimal) for hide/unhide, the user id for forget."""
    lang: str | None = None
    reason: str | None = None
    ts: int | None = None
    """When the platform took the decision (ms since the epoch); now if not given."""
    at: tuple[int, int] | None = None
    """The event's (partition, offset) on the control topic (consumers/control.py): what a
    cluster's per-slot progress guards with. None: unguarded (the CLI)."""

    def value(self) -> str:
        """What ``hidden(lang)`` holds for a hidden resource: JSON {reason, ts}."""
        ts = self.ts if self.ts is not None else int(time.time() * 1000)
        return json.dumps({"reason": self.reason or "", "ts": ts}, sort_keys=True)
