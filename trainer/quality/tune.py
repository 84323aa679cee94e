"""``recs tune``: a seeded Optuna TPE search over the models and their settings.

The objective is NDCG@10 on ``trainer.quality.choose.validation_split`` of the matrix it is
given,
and callers give it the TRAINING data only: ``recs evaluate --tune`` passes the training side
of its test split, so the search never sees a test pair. The first trials are the given
settings of each searched model (``enqueue``), so the best found is never worse on
validation than where the search started. A run is repeatable: the sampler and every fit
are seeded (Optuna's timeout is the one thing that can cut a run shorter).

Settings are a flat dict keyed like the command line's options
(``trainer.config.ModelSpec.settings``): what ``recs train --settings FILE`` reads, and what
a language's settings hash holds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from core.errors import InputError
from trainer.config import EASE_SCALINGS, SCALINGS, ModelSpec
from trainer.data.matrix import UtilityMatrix
from trainer.models import ease as ease_module
from trainer.models.als import fit
from trainer.models.base import utc_now
from trainer.models.blend import mix
from trainer.models.ease import fit_ease
from trainer.quality.choose import validation_ndcg, validation_split
from trainer.settings import SearchConfig

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

    def document(self, seed: int) -> dict:
        """The settings JSON / hash content: settings plus how they were found."""
        return {**self.settings, "validation_ndcg": round(self.ndcg, 5), "trials": self.trials,
                "seed": seed, "tuned_at": utc_now()}


def first_trial(spec: ModelSpec, model: str) -> dict:
    """The given settings of ``spec`` for one model kind, as an enqueued first trial (a
    blend weight left to choose starts at 0.5)."""
    out = spec.settings(model)
    if out.get("blend_weight", 0.5) is None:
        out["blend_weight"] = 0.5
    return out


def _suggest(trial, models: tuple[str, ...]) -> dict:
    model = trial.suggest_categorical("model", list(models))
    out: dict = {"model": model}
    if model in ("als", "blend"):
        out.update(factors=trial.suggest_int("factors", 4, 200, log=True),
                   regularization=trial.suggest_float("regularization", 1e-3, 10.0, log=True),
                   iterations=trial.suggest_int("iterations", 3, 60, log=True),
                   alpha=trial.suggest_float("alpha", 1.0, 200.0, log=True),
                   scaling=trial.suggest_categorical("scaling", list(SCALINGS)))
    if model in ("ease", "blend"):
        out.update(ease_l2=trial.suggest_float("ease_l2", 5.0, 5000.0, log=True),
                   ease_scaling=trial.suggest_categorical("ease_scaling", list(EASE_SCALINGS)))
    if model == "blend":
        out["blend_weight"] = trial.suggest_float("blend_weight", 0.05, 0.95)
    return out


def validation_score(matrix: UtilityMatrix, settings: dict, base: ModelSpec, lang: str = "xx",
                     threads: int = 0) -> float:
    """NDCG@10 on the validation split of ``matrix`` of one trial's settings."""
    spec = base.with_settings(settings)
    split = validation_split(matrix, base.als.seed)
    kind = spec.model
    als = fit(split.train, spec.als, lang, num_threads=threads) if kind != "ease" else None
    ease = fit_ease(split.train, spec.ease, lang) if kind != "als" else None
    if kind == "als":
        return validation_ndcg(als.score_rows, split)
    if kind == "ease":
        return validation_ndcg(ease.score_rows, split)
    return validation_ndcg(lambda rows: mix(als.score_rows(rows), ease.score_rows(rows),
                                            spec.blend.weight), split)


def tune(matrix: UtilityMatrix, base: ModelSpec, models: tuple[str, ...] = SearchConfig.models,
         trials: int = SearchConfig.trials, timeout: float | None = None, lang: str = "xx",
         threads: int = 0, say=print) -> TuneResult:
    """Search ``models``' settings on ``matrix`` (training data only); ``say`` gets a line
    per trial."""
    import optuna

    if not ease_module.fits(matrix.shape[1], base.memory_limit) and set(models) - {"als"}:
        say(f"EASE on {matrix.shape[1]} resources would not fit in memory (at most "
            f"{ease_module.max_resources(base.memory_limit)}): searching ALS only")
        models = ("als",)
    if not models:
        raise InputError("nothing to tune: no model to search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=base.als.seed))
    for model in models:
        study.enqueue_trial(first_trial(base, model))
    started = time.perf_counter()

    def objective(trial) -> float:
        t = time.perf_counter()
        settings = _suggest(trial, models)
        try:
            value = validation_score(matrix, settings, base, lang, threads)
        except InputError as exc:  # e.g. ALS diverged at these settings: a bad trial
            say(f"trial {trial.number + 1}: failed ({exc})")
            raise optuna.TrialPruned() from None
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
    return TuneResult(settings=settings, ndcg=float(best.value), trials=len(study.trials),
                      seconds=time.perf_counter() - started)


def _best(study) -> float:
    values = [t.value for t in study.trials if t.value is not None]
    return max(values) if values else float("-inf")


def _describe(settings: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in settings.items())
