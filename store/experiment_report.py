"""The readout of a language's experiment (``recs experiment report``, the operator page and
the serve metrics all show this one dict).

Per arm: the click-through rate of its users' lists with a 95 % interval BY USER
(core/abstats.py: the delta method over per-user impression and click counts, which
store/ctr.py reads), the difference to the default (first) arm with its interval and
p-value, coverage (distinct resources shown to the arm / the catalogue) and the offline
held-out quality of the arm's published model (its model hash's ``metrics``, present when
``recs train --evaluate`` fitted it). Read-only; safe on a running experiment.
"""

from __future__ import annotations

import json
import time

import redis

from core import abstats
from store.experiments import Experiment, read_experiment
from store.keys import Keys
from store.read import text

OFFLINE = ("ndcg", "map", "precision", "auc")


def build_report(client: redis.Redis, keys: Keys, lang: str,
                 experiment: Experiment | None = None) -> dict | None:
    """The report of ``experiment`` (default: the language's latest); None when none."""
    from store import ctr  # the impressions side (issue 19, part 1)

    experiment = experiment or read_experiment(client, keys, lang)
    if experiment is None:
        return None
    catalogue = catalogue_size(client, keys, lang)
    shown = shown_items(client, keys, lang, experiment.id)
    arms, rates = [], []
    for i, arm in enumerate(experiment.arms):
        impressions, clicks = ctr.read_user_counts(client, keys, lang, experiment.id, arm.name)
        rate = abstats.ratio(impressions, clicks)
        rates.append(rate)
        model = _model(client, keys.arm(arm.name) if i else keys, lang)
        # A HyperLogLog estimate: near a full catalogue it may overshoot by its error.
        items = min(int(shown.get(arm.name, 0)), catalogue) if catalogue else 0
        arms.append({"name": arm.name, "spec": arm.spec, "weight": arm.weight,
                     "default": i == 0, **rate.as_dict(),
                     "model": model.get("model", "als" if model else None),
                     "model_version": model.get("version"),
                     "items_shown": items, "catalogue": catalogue,
                     "coverage": items / catalogue if catalogue else None,
                     "offline": _offline(model.get("metrics"))})
    differences = [{"arm": a["name"], "vs": arms[0]["name"],
                    **abstats.difference(rates[0], rate).as_dict()}
                   for a, rate in zip(arms[1:], rates[1:], strict=True)]
    return {"lang": lang, "experiment": experiment.as_dict(), "arms": arms,
            "differences": differences, "generated_at": int(time.time() * 1000),
            "method": "delta method over users, 95 % intervals"}


def shown_items(client: redis.Redis, keys: Keys, lang: str, experiment_id: str
                ) -> dict[str, int]:
    """Arm -> distinct resources shown in the impressions tagged with the experiment, over
    its whole run: one PFCOUNT over the union of the arm's cells (0.81 % standard error)."""
    cells: dict[str, list[str]] = {}
    for raw in client.smembers(keys.ctr_cells(lang)):
        cell = text(raw)
        parts = cell.split("|")
        if len(parts) == 5 and parts[4] == experiment_id:
            cells.setdefault(parts[3], []).append(keys.ctr_items(lang, cell))
    return {arm: int(client.pfcount(*names)) for arm, names in cells.items()}


def catalogue_size(client: redis.Redis, keys: Keys, lang: str) -> int:
    """Resources with details loaded (``recs resources load``), else with counted views."""
    return int(client.hlen(keys.resources(lang)) or client.hlen(keys.item_views(lang)))


def _model(client: redis.Redis, keys: Keys, lang: str) -> dict:
    return {text(k): text(v) for k, v in client.hgetall(keys.model(lang)).items()}


def _offline(raw: str | None) -> dict | None:
    """The held-out figures of a model hash's ``metrics`` JSON (model and popularity)."""
    if not raw:
        return None
    try:
        metrics = json.loads(raw)
        model = metrics.get("model", {})
        out = {name: float(model[name]) for name in OFFLINE if name in model}
        popularity = metrics.get("popularity", {})
        if "ndcg" in popularity:
            out["popularity_ndcg"] = float(popularity["ndcg"])
        if "k" in metrics:
            out["k"] = int(metrics["k"])
        return out
    except (ValueError, TypeError, AttributeError):
        return None


def text_table(report: dict) -> str:
    """The report as lines for a terminal."""
    e = report["experiment"]
    lines = [f"experiment {e['id']} ({report['lang']}): {e['status']}"
             + (f", promoted {e['promoted']}" if e.get("promoted") else ""),
             f"{'arm':<12} {'users':>7} {'impr.':>8} {'clicks':>7} {'CTR':>8} "
             f"{'95% interval':>19} {'coverage':>9} {'ndcg@10':>8}  model"]
    for a in report["arms"]:
        cov = "-" if a["coverage"] is None else f"{a['coverage']:.1%}"
        ndcg = (a["offline"] or {}).get("ndcg")
        lines.append(
            f"{a['name']:<12} {a['users']:>7} {a['impressions']:>8} {a['clicks']:>7} "
            f"{a['ctr']:>8.4f} [{a['low']:.4f}, {a['high']:.4f}]".ljust(64)
            + f" {cov:>9} {'-' if ndcg is None else f'{ndcg:.4f}':>8}  "
            f"{a['model'] or '-'} {a['model_version'] or '(not published)'}")
    for d in report["differences"]:
        verdict = "significant" if d["significant"] else "not significant"
        rel = "" if d["relative"] is None else f" ({d['relative']:+.1%})"
        lines.append(f"{d['arm']} - {d['vs']}: {d['diff']:+.4f}{rel} "
                     f"[{d['low']:+.4f}, {d['high']:+.4f}], p = {d['p']:.3g}: {verdict}")
    lines.append(report["method"])
    return "\n".join(lines)
