"""Step 5 of a retrain: one fitted model, any family, published to Redis.

With ``store.publish.Publisher``: the similar lists, then every user's list (and factors,
when the family has them), scored in a background thread while the publisher waits on Redis
(``trainer.scoring.lists``); the family's item-item weights, when it publishes them, go to
``store.item_rows`` BEFORE the switch; then the switch of the model hash and item side; then
the removal of what the new model no longer covers; and with ``--evaluate`` the run's
history record. The model hash holds the fields every family shares (:func:`model_info`)
plus the family's own settings (``settings_fields``); what each contract key holds under each
family is in docs/CONTRACT.md:

- ``als``: similar lists are cosines of item factors, users' lists dot products;
- ``ease``: similar lists are rows of B (score: the weight B[j, i]); no user factors, so the
  hash says ``factors`` 0 and the users' ``factors`` keys are deleted;
- ``blend``: similar lists are the ALS part's; the factors key holds the ALS part's factors,
  and both the item factors and B's rows are published.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import redis

from core.progress import Progress
from store.groups import GroupSeqs
from store.item_rows import drop_factors, drop_stale, write_rows
from store.keys import Keys
from store.publish import Lists, Publisher
from trainer.data.matrix import UtilityMatrix
from trainer.models.base import Model
from trainer.pipeline.quality import record_history
from trainer.scoring.lists import scorer_for, similar_batches, user_batches
from trainer.settings import RetrainConfig

log = logging.getLogger(__name__)


@dataclass
class Published:
    """Step 5's result: the live version and the publisher's account of the run."""

    version: str
    kind: str
    publisher: Publisher
    removed: tuple[int, int]
    """(resources, users) whose lists the new model no longer covers, removed."""


def publish(client: redis.Redis, keys: Keys, lang: str, publisher: Publisher, model: Model,
            matrix: UtilityMatrix, settings: RetrainConfig, seq: int | GroupSeqs,
            metrics: dict | None, keep: Callable[[str], bool] | None = None,
            extra: dict | None = None) -> Published:
    """Lists, item rows, the switch, the removal of what the model no longer covers, and
    the quality history (see the module docstring). ``keep`` (an experiment): only the users
    it accepts get a list from this model; ``extra``: more model hash fields. ``seq``: the
    seq read before the counts, or each slot group's (``store.groups.GroupSeqs``)."""
    write_lists(publisher, model, settings, keep)
    total = seq.total if isinstance(seq, GroupSeqs) else seq
    info = {**model_info(model, settings, total, metrics), **(extra or {})}
    version = switch_model(client, keys, lang, publisher, model, matrix, info)
    removed = publisher.remove_uncovered(seq)
    if metrics is not None:
        record_history(client, keys, lang, metrics, {**info, "version": version},
                       settings.spec)
    return Published(version=version, kind=model.family, publisher=publisher,
                     removed=removed)


def switch_model(client: redis.Redis, keys: Keys, lang: str, publisher: Publisher,
                 model: Model, matrix: UtilityMatrix, info: dict) -> str:
    """The lists written: the item rows, the switch to ``info``, then the users' factors
    keys (left from an earlier model with factors, they mislead) and every other version's
    item rows dropped. Returns the live version."""
    if model.item_rows is not None:
        write_rows(client, keys, lang, publisher.version, model.items.ids, model.item_rows)
    has_factors = model.item_factors.shape[1] > 0
    version = publisher.switch(info, model.items.ids, model.item_factors,
                               matrix.item_totals() if has_factors else None)
    if model.user_factors is None:
        drop_factors(client, keys, lang, sorted(publisher.users_written))
    drop_stale(client, keys, lang, version)
    return version


def write_lists(publisher: Publisher, model: Model, settings: RetrainConfig,
                keep: Callable[[str], bool] | None = None) -> None:
    """Similar lists then user lists, scored as ``settings.scoring`` says, with progress."""
    scorer = scorer_for(model, settings.scoring)
    log.info("scoring", extra={"fields": {
        "lang": model.lang, "similar": scorer.similar_method if scorer else "model",
        "recs": scorer.recs_method if scorer and model.scores_by_factors else "model"}})
    items = Progress(f"{model.lang} similar lists", len(model.items))
    publisher.write_similar(_counted(similar_batches(model, settings.top_n, scorer), items))
    items.close()
    users = Progress(f"{model.lang} user lists", len(model.users))
    batches = user_batches(model, settings.top_n, scorer)
    if keep is not None:
        batches = only_users(batches, keep)
    publisher.write_users(_counted(batches, users))
    users.close()


def only_users(batches: Iterator[Lists], keep: Callable[[str], bool]) -> Iterator[Lists]:
    """The rows of ``batches`` whose id ``keep`` accepts."""
    for batch in batches:
        mask = np.fromiter((keep(str(i)) for i in batch.ids), dtype=bool, count=len(batch.ids))
        if mask.any():
            yield Lists(ids=[i for i, m in zip(batch.ids, mask, strict=True) if m],
                        members=np.asarray(batch.members)[mask],
                        scores=np.asarray(batch.scores)[mask],
                        factors=None if batch.factors is None else np.asarray(batch.factors)[mask])


def _counted(batches: Iterator[Lists], progress) -> Iterator[Lists]:
    done = 0
    for batch in batches:
        yield batch
        done += len(batch.ids)
        progress(done)


def model_info(model: Model, settings: RetrainConfig, seq: int,
               metrics: dict | None) -> dict:
    """The model hash fields (CONTRACT.md section 2), ``version`` added by the publisher."""
    f = settings.filters
    info = {
        "model": model.family, "trained_at": model.trained_at, "users": len(model.users),
        "items": len(model.items), "nnz": int(model.seen.nnz), "top_n": settings.top_n,
        "seq": seq, "min_item_views": f.min_item_views, "max_item_views": f.max_item_views,
        "min_user_views": f.min_user_views,
        "train_seconds": model.stats.get("train_seconds", 0.0), **model.settings_fields(),
    }
    if metrics is not None:
        info["metrics"] = json.dumps(metrics, sort_keys=True)
    return info
