"""How each command runs, and which value wins.

**Precedence**, for every option of every command, in ONE function (:func:`resolve`): the
flag given on the command line, else its ``RECS_*`` variable, else the tuned settings (for
the training commands: ``--settings FILE`` offline, the language's settings hash online),
else the built-in default. A flag given with the default's value still wins. The command
line (``recs/cli.py``) keeps each value's source (:class:`SettingSources`), so the tuned
layer can be added later, when a language's settings hash is read
(:func:`for_language`).

The settings classes of the commands' runs live here (the model's, the filters' and the
scoring's are in ``trainer.config``), each field with its default and a docstring, checked
in ``__post_init__``. Tuned settings are a flat dict keyed as
``trainer.config.ModelSpec.settings`` writes them; :func:`checked` converts and checks
what a file or a hash holds.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from core.errors import InputError
from trainer.config import (
    EASE_SCALINGS,
    FAMILY_CONFIGS,
    MODEL_DEST,
    SCALINGS,
    FilterConfig,
    ModelSpec,
    one_of,
)
from trainer.scoring_config import ScoringConfig

SPARK_IO: tuple[str, ...] = ("driver", "executors")
SPLITS: tuple[str, ...] = ("random", "time")
"""``recs evaluate --split``: how the test pairs are held out."""
MAX_TOP_N = 1000
"""Longest published list: these are short lists for apps, not whole rankings."""


def resolve(flags: Mapping, env: Mapping, tuned: Mapping, defaults: Mapping) -> dict:
    """Every setting's value by the one precedence rule (module docstring); each argument
    maps an option's dest to its value from that source."""
    return {**defaults, **tuned, **env, **flags}


@dataclass(frozen=True)
class SparkConfig:
    """Where and how Spark runs (``--engine spark``)."""

    master: str = "local[*]"
    """Spark master URL: ``local[*]`` (every core of this machine), ``spark://host:7077``,
    ``yarn``, ``k8s://...``."""
    conf: Mapping[str, str] = field(default_factory=dict)
    """Any Spark setting, ``--spark-conf KEY=VALUE`` (repeatable)."""

    @classmethod
    def from_args(cls, args) -> SparkConfig:
        conf = {}
        for item in getattr(args, "spark_conf", None) or []:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise InputError(f"--spark-conf {item!r}: expected KEY=VALUE")
            conf[key.strip()] = value.strip()
        return cls(master=getattr(args, "spark_master", None) or cls.master, conf=conf)


# -- the commands' runs -------------------------------------------------------------------------


SEARCH_SPACE: dict[str, dict[str, tuple]] = {
    "als": {"factors": ("int", 4, 512, True), "regularization": ("float", 1e-3, 500.0, True),
            "iterations": ("int", 3, 60, True), "alpha": ("float", 1.0, 200.0, True),
            "scaling": ("choice", SCALINGS)},
    "ease": {"l2": ("float", 5.0, 20000.0, True), "scaling": ("choice", EASE_SCALINGS)},
    "blend": {"weight": ("float", 0.05, 0.95, False)},
    "rp3beta": {"alpha": ("float", 0.05, 1.5, False), "beta": ("float", 0.0, 1.0, False),
                "neighbours": ("int", 10, 500, True), "scaling": ("choice", EASE_SCALINGS)},
}
"""``recs tune``'s ranges, by settings part (``trainer.config.SETTINGS_PARTS``) and field:
("int"|"float", low, high, log scale) or ("choice", values). A model kind searches the
parts it uses (``MODEL_PARTS``); a part or field that does not exist (yet) is skipped, and a
family without a range is tried at its given settings only. Wide on purpose: strong ALS
settings on real data sit at regularization in the tens to hundreds and hundreds of factors,
EASE's lambda in the thousands on log counts (Rendle et al. 2022; Steck 2019)."""


@dataclass(frozen=True)
class SearchConfig:
    """``recs tune`` (and ``evaluate --tune``): Optuna's TPE search (``trainer.quality.tune``)."""

    trials: int = 30
    """Trials at most."""
    timeout: float | None = None
    """Stop starting trials after this many seconds (None: no limit)."""
    models: tuple[str, ...] = tuple(FAMILY_CONFIGS)
    """The model families searched (``--search``, comma-separated): every family by
    default, so the tuned ``auto`` decision weighs each of them."""

    def __post_init__(self) -> None:
        bad = [m for m in self.models if m not in FAMILY_CONFIGS]
        if bad or not self.models:
            raise InputError(f"--search {','.join(self.models)!r}: give some of "
                             f"{', '.join(FAMILY_CONFIGS)}")
        if self.trials < 1 or (self.timeout is not None and not self.timeout > 0):
            raise InputError("--trials must be at least 1 and --timeout above 0")

    @classmethod
    def from_args(cls, args) -> SearchConfig:
        models = tuple(m.strip() for m in str(args.search).split(",") if m.strip())
        return cls(trials=args.trials, timeout=args.timeout, models=models)


@dataclass(frozen=True)
class EvaluateConfig:
    """Held-out quality: ``recs evaluate`` and ``recs train --evaluate``."""

    k: int = 10
    """Cut-off of the ranking metrics (``recs train --evaluate`` and the gate use 10)."""
    test_fraction: float = 0.2
    """Share of (user, resource) pairs held out when no test extract is given."""
    threads: int = 0
    """implicit's training threads (0 = all cores)."""
    split: str = "random"
    """``random``: a seeded random share of all pairs; ``time``: each user's latest share
    (``trainer.data.matrix.time_split``; the extract needs a ``ts`` column)."""


@dataclass(frozen=True)
class LookupConfig:
    """``recs similar`` and ``recs recommend``."""

    n: int = 10
    """Rows shown (``-n``)."""


@dataclass(frozen=True)
class SettingSources:
    """Where one command's option values came from, by option dest: the command line, the
    ``RECS_*`` variables and the built-in defaults. Kept so that a language's tuned settings
    can be applied under the first two later (``trainer.settings.resolve``)."""

    flags: Mapping[str, object] = field(default_factory=dict)
    env: Mapping[str, object] = field(default_factory=dict)
    defaults: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RetrainConfig:
    """Everything one ``recs train`` from the Redis counts needs, checked once."""

    filters: FilterConfig = field(default_factory=FilterConfig)
    """The platform's filters, applied to the counts before the matrix is built."""
    spec: ModelSpec = field(default_factory=ModelSpec)
    """Which model (``--model``) and each family's settings."""
    top_n: int = 20
    """Length of the published similar and recommendation lists."""
    model_dir: str = "models"
    """Where the model file of each run is written."""
    every: float = 0.0
    """Repeat every this many seconds (with +-10% jitter); 0 runs once."""
    evaluate: bool = False
    """Fit on a hold-out split first and store the metrics in the model hash."""
    test_fraction: float = EvaluateConfig.test_fraction
    """Share of (user, resource) pairs held out for ``evaluate``."""
    threads: int = EvaluateConfig.threads
    """implicit's training threads (0 = all cores)."""
    lock_wait: float = 0.0
    """Seconds to wait for another trainer's lock before skipping the language."""
    lock_ttl: float = 60.0
    """Lock expiry; renewed every third of it while this trainer works."""
    gate_margin: float = 0.05
    """With ``evaluate``: refuse a model more than this fraction below the live one."""
    force: bool = False
    """Publish even when the quality gate refuses."""
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    """Exact or approximate scoring of the published lists (``trainer.scoring``)."""
    metrics_port: int = 9102
    """Prometheus port while repeating (``every``); 0 = off."""
    metrics_address: str = "0.0.0.0"
    """Address the metrics server listens on (the consumer's and updater's default, and why,
    is in the README)."""
    spark_io: str = "driver"
    """``--engine spark`` only: ``executors`` reads the counts and writes the user lists on
    Spark executors (``trainer.pipeline.executors``); ``driver`` does both here."""
    redis_url: str = field(default="", repr=False)
    """For Spark executors, which connect to Redis themselves (may hold a password)."""
    sources: SettingSources | None = None
    """Where the command line's values came from, so a language's tuned settings apply
    under the flags and variables given; None (library callers): they apply over ``spec``."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_n <= MAX_TOP_N:
            raise InputError(f"--top-n must be between 1 and {MAX_TOP_N}")
        if self.evaluate and not 0.0 < self.test_fraction < 1.0:
            raise InputError("--test-fraction must be between 0 and 1")
        if not (self.lock_wait >= 0 and self.lock_ttl >= 1):
            raise InputError("--lock-wait must be >= 0 and --lock-ttl >= 1 second")
        if not self.every >= 0:
            raise InputError("--every must be 0 (run once) or a number of seconds")
        one_of("--spark-io", self.spark_io, SPARK_IO)

    @classmethod
    def from_args(cls, args) -> RetrainConfig:
        """From parsed ``recs train`` options (their sources kept for the tuned layer)."""
        if getattr(args, "settings", None):
            raise InputError("--settings FILE is for offline runs (--views); online, `recs tune "
                             "--lang L` stores the settings that `recs train` applies")
        return cls(filters=FilterConfig.from_args(args), spec=ModelSpec.from_values(vars(args)),
                   top_n=int(args.top_n), model_dir=args.model_dir, every=float(args.every),
                   evaluate=bool(args.evaluate), test_fraction=float(args.test_fraction),
                   threads=int(args.threads), lock_wait=float(args.lock_wait),
                   lock_ttl=float(args.lock_ttl), gate_margin=float(args.gate_margin),
                   force=bool(args.force), scoring=ScoringConfig.from_args(args),
                   metrics_port=int(args.metrics_port), metrics_address=args.metrics_address,
                   spark_io=args.spark_io, redis_url=args.redis_url,
                   sources=getattr(args, "sources", None))


# -- tuned settings -----------------------------------------------------------------------------


def checked(raw: Mapping, source: str) -> dict:
    """The tuned-settings entries of ``raw`` (``ModelSpec.tuned_keys``) converted to their
    types; anything else is ignored (e.g. ``validation_ndcg``, ``tuned_at``, ``seed``). A
    bad value is one InputError naming ``source``."""
    out = {}
    for key, (kind, choices) in ModelSpec.tuned_keys().items():
        if key not in raw or raw[key] in (None, ""):
            continue
        try:
            value = kind(raw[key])
        except (TypeError, ValueError):
            raise InputError(f"{source}: {key}={raw[key]!r} is not a {kind.__name__}") from None
        if choices and value not in choices:
            raise InputError(f"{source}: {key}={value!r}; expected one of {', '.join(choices)}")
        out[key] = value
    return out


def as_dests(settings: Mapping) -> dict:
    """Tuned settings keyed as the options' dests (``model`` is ``--model``'s ``model_kind``)."""
    return {(MODEL_DEST if key == "model" else key): value for key, value in settings.items()}


def read_settings_file(path: str) -> dict:
    """A settings JSON written by ``recs tune --views FILE --out FILE``, checked."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"--settings {p}: no such file") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"--settings {p}: not a settings JSON file ({exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"--settings {p}: expected a JSON object")
    return checked(raw, f"--settings {p}")


def apply_tuned(args: argparse.Namespace, tuned: Mapping) -> argparse.Namespace:
    """``args`` with tuned settings (keyed as ``recs tune`` writes them) applied under the
    flags and variables given (``args.sources``; without it, over every value)."""
    sources = getattr(args, "sources", None) or SettingSources(defaults=vars(args))
    values = resolve(sources.flags, sources.env, as_dests(tuned), sources.defaults)
    return argparse.Namespace(**{**vars(args), **values})


def with_settings_file(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with ``--settings FILE`` applied under the flags and variables given."""
    if not getattr(args, "settings", None):
        return args
    return apply_tuned(args, read_settings_file(args.settings))


def for_language(config: RetrainConfig, stored: Mapping, source: str) -> RetrainConfig:
    """``config`` with a language's stored tuned settings applied under the options given
    (flags and variables; ``config.sources``)."""
    tuned = as_dests(checked(stored, source))
    if not tuned:
        return config
    sources = config.sources or SettingSources(defaults=as_dests(
        config.spec.settings("auto", tuned_only=False) | {"model": config.spec.model}))
    spec = ModelSpec.from_values(resolve(sources.flags, sources.env, tuned, sources.defaults))
    spec = replace(spec, memory_limit=config.spec.memory_limit)  # not a tuned setting
    return config if spec == config.spec else replace(config, spec=spec)
