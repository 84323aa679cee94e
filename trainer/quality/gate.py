"""The quality gate of ``recs train --evaluate`` and the history record of a run.

The gate refuses a model whose held-out NDCG@10 is below popularity's, or more than
``margin`` (a fraction) below the NDCG@10 of the last model that was published; the history
record is the run's identity, settings and held-out metrics (``store.quality`` keeps them).
Pure functions: the Redis side is ``trainer.pipeline.quality``'s.
"""

from __future__ import annotations


def history_entry(metrics: dict, info: dict, settings: dict, published: bool) -> dict:
    """One history record: the run's identity, settings and held-out metrics."""
    model, pop = metrics["model"], metrics["popularity"]
    return {"version": info.get("version", ""), "trained_at": info.get("trained_at", ""),
            "model": metrics.get("model_kind", "als"), "settings": settings,
            "ndcg": model["ndcg"], "map": model["map"], "precision": model["precision"],
            "auc": model["auc"], "popularity_ndcg": pop["ndcg"], "popularity": pop,
            "k": metrics.get("k", 10), "published": published}


def last_published(history: list[dict]) -> dict | None:
    """The newest entry whose model went live."""
    for entry in reversed(history):
        if entry.get("published"):
            return entry
    return None


def gate(metrics: dict, history: list[dict], margin: float) -> str | None:
    """Why the new model must not be published, or None when it may be."""
    ndcg, pop = metrics["model"]["ndcg"], metrics["popularity"]["ndcg"]
    if ndcg < pop:
        return f"held-out NDCG@10 {ndcg:.4f} is below popularity's {pop:.4f}"
    live = last_published(history)
    if live is not None and ndcg < live["ndcg"] * (1.0 - margin):
        return (f"held-out NDCG@10 {ndcg:.4f} is more than {margin:.0%} below the live "
                f"model's {live['ndcg']:.4f} ({live.get('version')})")
    return None
