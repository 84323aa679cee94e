"""Turning scored resources into what people and programs read.

Independent of where scores come from (a model file or Redis): the input is a list of
``(resource_id, score)`` best first, plus optionally the resources table from
``trainer.data.extracts.load_resources`` (indexed by id; title, folder, subject, tags).

- ``render(rows, resources=None, as_json=False, n=None, heading=None) -> str``:
  JSON: an array of ``{"resource_id", "score"}`` objects, plus ``title``, ``subject``,
  ``tags`` (null for a resource missing from the file) when ``resources`` is given.
  Text: numbered lines ``Title — Subject  0.873  [id]``, control characters escaped
  (``core.text.for_terminal``).
- ``describe(resource_id, resources)``: one line naming a resource, for headings.
- ``list_length(args)``: the ``-n`` of ``recs similar`` / ``recs recommend``, checked.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
import pandas as pd

from core.errors import InputError
from core.text import for_terminal

DETAIL_COLUMNS = ("title", "subject", "tags")


def list_length(args) -> int:
    """``args.n`` (how many rows to show, whether read from a model file or Redis), at least 1."""
    if args.n < 1:
        raise InputError("-n must be at least 1")
    return args.n


def _details(resources: pd.DataFrame | None, resource_id: int) -> dict | None:
    if resources is None or resource_id not in resources.index:
        return None
    row = resources.loc[resource_id]
    return {c: str(row[c]) if c in row.index else "" for c in DETAIL_COLUMNS}


def describe(resource_id: int, resources: pd.DataFrame | None) -> str:
    """'Title — Subject [id]', or 'resource id' when the resources table lacks it."""
    d = _details(resources, int(resource_id))
    if d is None:
        return f"resource {resource_id}"
    return for_terminal(f"{d['title']} — {d['subject']} [{resource_id}]" if d["subject"]
                        else f"{d['title']} [{resource_id}]")


def render(rows: Iterable[tuple[int, float]], resources: pd.DataFrame | None = None,
           as_json: bool = False, n: int | None = None, heading: str | None = None) -> str:
    """See the module docstring; ``n`` cuts the list, ``heading`` tops the text form only."""
    rows = list(rows)[:n] if n is not None else list(rows)
    if as_json:
        out = []
        for rid, score in rows:
            obj = {"resource_id": int(rid), "score": round(float(score), 6)}
            if resources is not None:
                obj.update(_details(resources, int(rid)) or dict.fromkeys(DETAIL_COLUMNS))
            out.append(obj)
        return orjson.dumps(out).decode()
    lines = [heading] if heading else []
    if not rows:
        lines.append("  (nothing to show)")
    width = len(str(len(rows)))
    for rank, (rid, score) in enumerate(rows, 1):
        d = _details(resources, int(rid))
        if d is None:
            name = f"resource {rid}" + (" (not in the resources file)"
                                        if resources is not None else "")
        else:
            name = f"{d['title']} — {d['subject']}" if d["subject"] else d["title"]
        lines.append(f"{rank:>{width}}. {for_terminal(name)}  {score:.3f}  [{rid}]")
    return "\n".join(lines)
