"""The quality steps of a retrain from Redis (``--evaluate``): held-out metrics, the gate
against the language's history, and the run's history record (``store.quality``).

The gate (``trainer.quality.gate``) refuses a model whose held-out NDCG@10 is below
popularity's, or more than ``--gate-margin`` below the last published model's. A refusal is
logged at WARNING, counted as the run's outcome (``recs_train_runs_total{outcome="gated"}``
on the trainer's metrics endpoint) and recorded in the history as not published; ``--force``
publishes anyway, with a WARNING.
"""

from __future__ import annotations

import logging

import redis

from store.keys import Keys
from store.quality import append_history, read_history
from trainer.config import ModelSpec
from trainer.data.matrix import UtilityMatrix
from trainer.models.base import utc_now
from trainer.quality.choose import holdout_metrics
from trainer.quality.gate import gate, history_entry
from trainer.settings import EvaluateConfig, RetrainConfig

log = logging.getLogger(__name__)


def evaluate_holdout(matrix: UtilityMatrix, settings: RetrainConfig, lang: str) -> dict:
    """Held-out metrics of these settings on this data (a fit on a seeded split)."""
    result, _ = holdout_metrics(matrix, settings.spec, settings.test_fraction,
                                k=EvaluateConfig.k, lang=lang, threads=settings.threads)
    result["test_fraction"] = settings.test_fraction
    result["fitted_on"] = "holdout split"
    log.info("held-out metrics", extra={"fields": {"lang": lang, **result}})
    return result


def gate_refuses(client: redis.Redis, keys: Keys, lang: str, settings: RetrainConfig,
                 metrics: dict) -> str | None:
    """Why the gate keeps the live model (logged, recorded in the history), or None when
    the new model may be published."""
    reason = gate(metrics, read_history(client, keys, lang), settings.gate_margin)
    if reason is None:
        return None
    if settings.force:
        log.warning("%s: %s; publishing anyway (--force)", lang, reason)
        return None
    log.warning("%s: not published, the live model stays: %s (--force publishes anyway)",
                lang, reason)
    record_history(client, keys, lang, metrics, {"trained_at": utc_now()}, settings.spec,
                   published=False)
    return reason


def record_history(client: redis.Redis, keys: Keys, lang: str, metrics: dict, info: dict,
                   spec: ModelSpec, published: bool = True) -> None:
    """Append the run to the language's capped history (``store.quality``)."""
    settings = spec.settings(metrics.get("model_kind", "als"))
    if "blend_weight" in metrics:
        settings["blend_weight"] = metrics["blend_weight"]
    append_history(client, keys, lang, history_entry(metrics, info, settings, published))
