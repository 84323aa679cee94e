"""``recs tune``: a seeded Optuna TPE search over the models and their settings.

The objective is NDCG@10 on ``trainer.quality.choose.validation_split`` of the matrix it is
given (by time where the matrix carries times), and callers give it the TRAINING data only:
``recs evaluate --tune`` passes the training side of its test split, so the search never
sees a test pair. The first trials are the given settings of each searched model
(``enqueue``), so the best found is never worse on validation than where the search started.
A run is repeatable: the sampler and every fit are seeded (Optuna's timeout is the one
thing that can cut a run shorter).

The search is also ``--model auto``'s decision: the best trial's family is stored as
``auto_choice`` with each searched kind's best validation NDCG@10 and fit seconds
(``auto_evidence``), so a retrain with ``--model auto`` fits that family only. The kinds
and ranges come from the registry and ``trainer.settings.SEARCH_SPACE``: a new family joins
the search by having a settings class (and, for a real search, a range).

Settings are a flat dict keyed like the command line's options
(``trainer.config.ModelSpec.settings``): what ``recs train --settings FILE`` reads, and what
a language's settings hash holds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from core.errors import InputError
from trainer.config import MODEL_PARTS, SETTINGS_PARTS, ModelSpec
from trainer.data.matrix import Split, UtilityMatrix
from trainer.models import ease as ease_module
from trainer.models.base import utc_now
from trainer.models.registry import FAMILIES
from trainer.quality.choose import validation_ndcg, validation_split
from trainer.settings import SEARCH_SPACE, SearchConfig

log = logging.getLogger(__name__)

TUNABLE: tuple[str, ...] = tuple(ModelSpec.tuned_keys())
"""Settings keys, each named as the option's dest (``model`` is ``--model``)."""


@dataclass
class TuneResult:
    settings: dict
    """The best trial's settings (TUNABLE keys only)."""
    ndcg: float
    """Its validation NDCG@10."""
    trials: int
    seconds: float
    evidence: dict = field(default_factory=dict)
    """Per model kind searched: its best validation NDCG@10, that fit's seconds, its trials."""

    def document(self, seed: int) -> dict:
        """The settings JSON / hash content: settings plus how they were found, with the
        ``auto`` decision's evidence (``auto_evidence``, a JSON object in the hash)."""
        return {**self.settings, "validation_ndcg": round(self.ndcg, 5), "trials": self.trials,
                "seed": seed, "tuned_at": utc_now(), "auto_evidence": self.evidence}


def first_trial(spec: ModelSpec, model: str) -> dict:
    """The given settings of ``spec`` for one model kind, as an enqueued first trial (a
    blend weight left to choose starts at 0.5)."""
    out = spec.settings(model)
    if out.get("blend_weight", 0.5) is None:
        out["blend_weight"] = 0.5
    return out


def _suggest(trial, models: tuple[str, ...]) -> dict:
    """One trial's settings: a model kind, then every range of the parts it uses."""
    model = trial.suggest_categorical("model", list(models))
    out: dict = {"model": model}
    for part in MODEL_PARTS.get(model, (model,)):
        config = SETTINGS_PARTS.get(part)
        for name, space in SEARCH_SPACE.get(part, {}).items():
            if config is None or name not in config.TUNED:
                continue
            key = config.KEY_PREFIX + name
            if space[0] == "choice":
                out[key] = trial.suggest_categorical(key, list(space[1]))
            elif space[0] == "int":
                out[key] = trial.suggest_int(key, space[1], space[2], log=space[3])
            else:
                out[key] = trial.suggest_float(key, space[1], space[2], log=space[3])
    return out


def fit_family(kind: str, matrix: UtilityMatrix, spec: ModelSpec, lang: str, threads: int):
    """One family fitted at ``spec``'s settings (``trainer.models.registry``)."""
    return FAMILIES[kind].fit(matrix, spec, lang, threads=threads)


def validation_score(split: Split, settings: dict, base: ModelSpec, lang: str = "xx",
                     threads: int = 0) -> tuple[float, float]:
    """(NDCG@10 on ``split``, the validation split of the data tuned on, fit seconds) of one
    trial's settings."""
    spec = base.with_settings(settings)
    started = time.perf_counter()
    model = fit_family(spec.model, split.train, spec, lang, threads)
    seconds = time.perf_counter() - started
    return validation_ndcg(model.score_rows, split), seconds


def evidence(trials) -> dict:
    """Per model kind, its best finished trial: validation NDCG@10, the fit's seconds and
    how many trials it had (what the ``auto`` decision was taken on)."""
    out: dict = {}
    for t in trials:
        if t.value is None:
            continue
        kind = t.params["model"]
        entry = out.setdefault(kind, {"validation_ndcg": float("-inf"), "trials": 0})
        entry["trials"] += 1
        if t.value > entry["validation_ndcg"]:
            entry.update(validation_ndcg=round(t.value, 5),
                         fit_seconds=round(t.user_attrs.get("fit_seconds", 0.0), 3))
    return out


def searchable(models: tuple[str, ...], resources: int, say,
               memory_limit: int | None = None) -> tuple[str, ...]:
    """``models`` less those that use EASE where its fit would not fit in memory."""
    if ease_module.fits(resources, memory_limit):
        return models
    kept = tuple(m for m in models if "ease" not in MODEL_PARTS.get(m, (m,)))
    if kept != models:
        say(f"EASE on {resources} resources would not fit in memory (at most "
            f"{ease_module.max_resources(memory_limit)}): searching {', '.join(kept) or 'nothing'}")
    return kept


def tune(matrix: UtilityMatrix, base: ModelSpec, models: tuple[str, ...] = SearchConfig.models,
         trials: int = SearchConfig.trials, timeout: float | None = None, lang: str = "xx",
         threads: int = 0, say=print) -> TuneResult:
    """Search ``models``' settings on ``matrix`` (training data only); ``say`` gets a line
    per trial."""
    import optuna

    models = searchable(tuple(models), matrix.shape[1], say, base.memory_limit)
    if not models:
        raise InputError("nothing to tune: no model to search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=base.als.seed))
    for model in models:
        study.enqueue_trial(first_trial(base, model))
    started = time.perf_counter()
    split = validation_split(matrix, base.als.seed)  # the same for every trial

    def objective(trial) -> float:
        t = time.perf_counter()
        settings = _suggest(trial, models)
        try:
            value, seconds = validation_score(split, settings, base, lang, threads)
        except InputError as exc:  # e.g. ALS diverged at these settings: a bad trial
            say(f"trial {trial.number + 1}: failed ({exc})")
            raise optuna.TrialPruned() from None
        trial.set_user_attr("fit_seconds", seconds)
        best = max(value, _best(study))
        say(f"trial {trial.number + 1}/{trials}: ndcg@10 {value:.4f} (best {best:.4f}) "
            f"{_describe(settings)} [{time.perf_counter() - t:.1f} s]")
        return value

    study.optimize(objective, n_trials=trials, timeout=timeout)
    done = [t for t in study.trials if t.value is not None]
    if not done:
        raise InputError("no trial finished: raise --timeout or --trials")
    best = max(done, key=lambda t: t.value)
    settings = {k: v for k, v in best.params.items() if k in TUNABLE}
    settings["auto_choice"] = settings["model"]
    return TuneResult(settings=settings, ndcg=float(best.value), trials=len(study.trials),
                      seconds=time.perf_counter() - started, evidence=evidence(study.trials))


def _best(study) -> float:
    values = [t.value for t in study.trials if t.value is not None]
    return max(values) if values else float("-inf")


def _describe(settings: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in settings.items())
