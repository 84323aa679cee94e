"""The model families by name: what ``--model``, the model hash's ``model`` field and the
tuned settings name (their settings classes: ``trainer.config.FAMILY_CONFIGS``, under the
same names). A new family is one file in this folder with the interface of
``trainer.models.base``, its settings class in ``trainer.config``, and one entry here."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from trainer.models.als import ALSModel
from trainer.models.base import FoldIn
from trainer.models.blend import BlendModel
from trainer.models.ease import EASEModel
from trainer.models.rp3beta import RP3betaModel

FAMILIES: dict[str, type] = {family.family: family for family in (ALSModel, EASEModel,
                                                                  BlendModel, RP3betaModel)}


def published_model(meta: Mapping[str, str], items, fetch: Callable) -> FoldIn:
    """What ``recs update`` folds users into for the published model ``meta`` (its hash),
    ``items`` (its item side, ``store.published_model.PublishedItems``) and ``fetch`` (reads rows of
    its item-item weights, for the families that publish them)."""
    kind = meta.get("model", "als")
    if kind not in FAMILIES:
        raise ValueError(f"unknown model kind {kind!r}")
    return FAMILIES[kind].published(meta, items, fetch)
