"""Quality around training: ``recs tune``, ``evaluate --tune``, the history, the gate.

- ``recs tune --views FILE [--out FILE]``: a search (``trainer.quality.tune``) on the extract, which
  is all training data (the search carves its validation split out of it); the best settings
  go to a JSON file that ``recs train|evaluate --settings FILE`` read.
- ``recs tune --lang L``: the same on the Redis counts; the settings go to the language's
  settings hash, which ``recs train`` applies from then on (``tuned_for``).
- ``history_entry``/``gate``: what ``recs train --evaluate`` records and checks. The gate
  refuses a model whose held-out NDCG@10 is below popularity's, or more than ``margin`` (a
  fraction) below the NDCG@10 of the last model that was published.
- ``recs history --lang L [--plot FILE]``: the recorded entries as a table, or a PNG.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace

from core.errors import InputError
from trainer.config import check_lang
from trainer.quality.choose import ModelSpec, evaluate_spec
from trainer.quality.tune import SEARCHABLE, spec_of, tune
from trainer.settings import apply_settings, checked, read_settings_file, spec_from_args

log = logging.getLogger(__name__)


def with_settings_file(args):
    """``args`` with ``--settings FILE`` applied under the flags and variables given."""
    if not getattr(args, "settings", None):
        return args
    return apply_settings(args, read_settings_file(args.settings))


def describe_spec(spec: ModelSpec, kind: str, model=None) -> str:
    """One line naming what was (or will be) fitted."""
    ease = f"EASE(l2={spec.ease.l2:g}, scaling={spec.ease.scaling})"
    if kind == "als":
        return str(spec.als)
    if kind == "ease":
        return ease
    weight = getattr(model, "weight", spec.blend_weight)
    chosen = "chosen on validation" if weight is None else f"{weight:g}"
    return f"blend (ALS weight {chosen}) of {spec.als} and {ease}"


def score_meaning(model) -> str:
    """What a similar list's score is for this kind of model (as in docs/CONTRACT.md)."""
    from trainer.models.blend import BlendModel
    from trainer.models.ease import EASEModel

    if isinstance(model, EASEModel):
        return "EASE weight"
    if isinstance(model, BlendModel):
        return "cosine, ALS part"
    return "cosine"


def search_models(args) -> tuple[str, ...]:
    models = tuple(m.strip() for m in str(args.search).split(",") if m.strip())
    bad = [m for m in models if m not in SEARCHABLE]
    if bad or not models:
        raise InputError(f"--search {args.search!r}: give some of {', '.join(SEARCHABLE)}")
    if args.trials < 1 or (args.timeout is not None and args.timeout <= 0):
        raise InputError("--trials must be at least 1 and --timeout above 0")
    return models


def run_search(args, matrix, spec: ModelSpec, lang: str, out):
    return tune(matrix, spec, search_models(args), trials=args.trials, timeout=args.timeout,
                lang=lang, threads=args.threads, say=lambda line: print(line, file=out,
                                                                          flush=True))


def tuned_evaluation(args, train, test, spec: ModelSpec, out) -> dict:
    """``recs evaluate --tune``: search on ``train`` only, then score the best on ``test``."""
    result = run_search(args, train, spec, "xx", out)
    tuned = spec_of(result.settings, spec)
    metrics = evaluate_spec(train, test, tuned, k=args.k, threads=args.threads)
    print(f"tuned in {result.seconds:.1f} s ({result.trials} trials): {result.settings}",
          file=out)
    return {"settings": result.settings, "validation_ndcg": round(result.ndcg, 5),
            "trials": result.trials, "seconds": round(result.seconds, 1),
            "model": metrics["model"], "model_kind": metrics.get("model_kind", "als")}


def tune_command(args) -> int:
    """``recs tune --views FILE [--out FILE]`` or ``recs tune --lang L``."""
    if not args.views and not args.lang:
        raise InputError("say what to tune on: --views FILE (offline) or --lang L (Redis)")
    search_models(args)  # a bad --search/--trials is reported before any data is read
    args = with_settings_file(args)
    spec = spec_from_args(args)
    if args.views:
        from trainer.commands.evaluate import _prepared

        matrix, _ = _prepared(args, sys.stderr)
        result = run_search(args, matrix, spec, args.lang or "xx", sys.stderr)
        doc = result.document(spec.als.seed)
        text = json.dumps(doc, indent=2, sort_keys=True)
        if args.out:
            from pathlib import Path

            Path(args.out).write_text(text + "\n")
            print(f"best validation NDCG@10 {result.ndcg:.4f} after {result.trials} trials "
                  f"({result.seconds:.1f} s): settings written to {args.out}")
        else:
            print(text)
        return 0
    return _tune_online(args, spec)


def _tune_online(args, spec: ModelSpec) -> int:
    from store.connection import connect
    from store.keys import Keys
    from store.quality import write_settings
    from store.snapshot import read_views
    from trainer.config import FilterConfig
    from trainer.data.matrix import apply_filters, build_matrix

    lang = check_lang(args.lang)
    keys = Keys(args.prefix)
    client = connect(args.redis_url)
    try:
        df, _ = apply_filters(read_views(client, keys, lang), FilterConfig.from_args(args))
        if df.empty:
            raise InputError(f"{lang}: nothing to tune on after the filters")
        result = run_search(args, build_matrix(df), spec, lang, sys.stdout)
        write_settings(client, keys, lang, result.document(spec.als.seed))
    finally:
        client.close()
    print(f"{lang}: best validation NDCG@10 {result.ndcg:.4f} after {result.trials} trials "
          f"({result.seconds:.1f} s); settings stored in {keys.settings(lang)}")
    return 0


def tuned_for(settings, stored: dict, source: str):
    """Online settings with a language's stored tuned settings applied under the options the
    user gave (``settings.explicit``)."""
    tuned = {k: v for k, v in checked(stored, source).items()
             if ("model_kind" if k == "model" else k) not in settings.explicit}
    if not tuned:
        return settings
    spec = spec_of(tuned, settings.model_spec)
    return replace(settings, spec=spec, train=spec.als)


# -- history and the gate -----------------------------------------------------------------


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


# -- the online trainer's hooks (trainer/online.py) ----------------------------------------

def online_spec(args) -> ModelSpec:
    """The ModelSpec of ``recs train`` (online); ``--settings FILE`` is for ``--views``."""
    if getattr(args, "settings", None):
        raise InputError("--settings FILE is for offline runs (--views); online, `recs tune "
                         "--lang L` stores the settings that `recs train` applies")
    return spec_from_args(args)


def with_tuned(client, keys, lang: str, settings):
    """``settings`` with the language's tuned settings hash applied (see ``tuned_for``)."""
    from store.quality import read_settings

    stored = read_settings(client, keys, lang)
    if not stored:
        return settings
    tuned = tuned_for(settings, stored, keys.settings(lang))
    if tuned is not settings:
        log.info("%s: tuned settings from %s: %s", lang, keys.settings(lang),
                 describe_spec(tuned.spec, tuned.spec.model))
    return tuned


def gate_refuses(client, keys, lang: str, settings, metrics: dict):
    """A ``RunResult`` ("gated") when the gate keeps the live model, else None. A refusal is
    logged at WARNING, counted (the run's outcome: ``recs_train_runs_total{outcome="gated"}``
    on the trainer's metrics endpoint), and recorded in the history as not published."""
    from store.quality import read_history
    from trainer.pipeline.retrain import RunResult

    reason = gate(metrics, read_history(client, keys, lang), settings.gate_margin)
    if reason is None:
        return None
    if settings.force:
        log.warning("%s: %s; publishing anyway (--force)", lang, reason)
        return None
    log.warning("%s: not published, the live model stays: %s (--force publishes anyway)",
                lang, reason)
    record_history(client, keys, lang, metrics, {"trained_at": _now()}, settings.model_spec,
                   published=False)
    return RunResult(lang, "gated", {"reason": reason, "metrics": metrics},
                     f"{lang}: not published: {reason}")


def record_history(client, keys, lang: str, metrics: dict, info: dict, spec: ModelSpec,
                   published: bool = True) -> None:
    """Append the run to the language's capped history (``store.quality``)."""
    from store.quality import append_history
    from trainer.quality.tune import spec_settings

    kind = metrics.get("model_kind", "als")
    settings = spec_settings(spec, kind)
    if "blend_weight" in metrics:
        settings["blend_weight"] = metrics["blend_weight"]
    append_history(client, keys, lang, history_entry(metrics, info, settings, published))


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
