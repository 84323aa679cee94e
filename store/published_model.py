"""Reading the published model: its version and family, and its item side (model hash,
item factors, ids and training totals) for the updater, a take-down refill and the
asyncio reader of ``recs serve``. Nothing is written here.

Invariants:

- The item side is read in one MULTI (:func:`queue_published_items`), so the four keys
  come from one switch (store/publish.py replaces them in one MULTI); sync and asyncio
  readers queue the same reads and decode them with the same :func:`decode_published_items`.
- A model counts as published only when its hash has a ``version`` and the item factors
  and ids exist; when they do not fit together (bytes vs items x factors, totals vs items)
  the read raises ValueError, never hands over a damaged item side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import redis

from store.keys import Keys
from store.read import text


@dataclass(frozen=True)
class PublishedItems:
    """The item side of a published model, read in one transaction (the trainer replaces these
    keys in one MULTI, so they always belong together)."""

    meta: dict[str, str]
    item_factors: np.ndarray
    """float32, items x factors."""
    item_ids: np.ndarray
    """uint32 resource ids, one per row."""
    item_totals: np.ndarray | None = None
    """float32 training views per row, when the publish carries them (bm25 needs them)."""

    @property
    def version(self) -> str:
        return self.meta["version"]


def model_version(client: redis.Redis, keys: Keys, lang: str, pipeline=None) -> str | None:
    """The published model's version for ``lang`` (None: nothing published)."""
    target = pipeline if pipeline is not None else client
    value = target.hget(keys.model(lang), "version")
    return None if pipeline is not None or value is None else text(value)


def read_model_kind(client: redis.Redis, keys: Keys, lang: str) -> str | None:
    """The published model's family (its hash's ``model`` field; None: not recorded)."""
    value = client.hget(keys.model(lang), "model")
    return None if value is None else text(value)


def read_published_items(client: redis.Redis, keys: Keys, lang: str) -> PublishedItems | None:
    """The model hash, item factors and item ids of ``lang``; None when not published.

    Raises ValueError when the three do not fit together (a damaged or foreign publish)."""
    pipe = client.pipeline(transaction=True)
    queue_published_items(pipe, keys, lang)
    return decode_published_items(lang, *pipe.execute())


def queue_published_items(pipe, keys: Keys, lang: str) -> None:
    """Queue the reads :func:`decode_published_items` decodes, in its order, on a MULTI
    pipeline (sync or asyncio: queuing is the same), so the four come from one switch."""
    pipe.hgetall(keys.model(lang))
    pipe.get(keys.item_factors(lang))
    pipe.get(keys.item_ids(lang))
    pipe.get(keys.item_totals(lang))


def decode_published_items(lang: str, meta_raw, factors_raw, ids_raw, totals_raw
                           ) -> PublishedItems | None:
    """The replies of HGETALL model, GET item_factors, GET item_ids, GET item_totals as
    :class:`PublishedItems` (shared with the asyncio reader of ``recs serve``)."""
    if not meta_raw or b"version" not in meta_raw or factors_raw is None or ids_raw is None:
        return None
    meta = {text(k): text(v) for k, v in meta_raw.items()}
    factors = int(meta.get("factors", 0))
    ids = np.frombuffer(ids_raw, dtype="<u4")
    no_factors = meta.get("model") in ("ease", "rp3beta")  # none: 0 factors, 0 bytes
    if (factors <= 0 and not no_factors) or len(factors_raw) != 4 * factors * ids.size:
        raise ValueError(
            f"published model {meta.get('version')!r} of {lang!r}: {len(factors_raw)} bytes of "
            f"item factors for {ids.size} items x {factors} factors"
        )
    item_factors = np.frombuffer(factors_raw, dtype="<f4").reshape(ids.size, factors)
    totals = None
    if totals_raw is not None:
        totals = np.frombuffer(totals_raw, dtype="<f4").astype(np.float32)
        if totals.size != ids.size:
            raise ValueError(f"published model of {lang!r}: {totals.size} item totals for "
                             f"{ids.size} items")
    return PublishedItems(meta, item_factors.astype(np.float32), ids.astype(np.uint32), totals)
