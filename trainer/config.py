"""Every setting of the trainer and its default, typed and checked where it is built.

The command line reads its defaults from these classes (``recs/cli_options.py``) and which
value wins (flag, ``RECS_*`` variable, tuned settings, default) is decided in one function,
``trainer.settings.resolve``; library callers build the classes directly. Each class checks
its values in ``__post_init__`` with one clear line (``InputError``), so a value is checked
the same way whoever gives it.

A model family's settings class names its keys in the tuned settings (the file ``recs tune
--out`` writes and the language's settings hash): ``KEY_PREFIX`` + field, for the fields in
``TUNED``. :class:`ModelSpec`, a model and the settings of every family, round-trips to those
flat settings (:meth:`ModelSpec.settings`, :meth:`ModelSpec.with_settings`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import ClassVar, Literal

from core.errors import InputError
from core.options import lang as lang_option

Scaling = Literal["linear", "log", "bm25", "logshare"]
SCALINGS: tuple[str, ...] = ("linear", "log", "bm25", "logshare")
ENGINES: tuple[str, ...] = ("implicit", "spark", "implicit-gpu")
"""Who fits ALS: ``implicit`` on the CPU, Spark MLlib (``trainer.models.spark_als``), or
``implicit``'s CUDA build."""
EASE_SCALINGS: tuple[str, ...] = ("binary", "log")


@dataclass(frozen=True)
class FilterConfig:
    """The platform's data filters, applied in this order. 0 turns a filter off."""

    min_item_views: int = 150
    """Drop resources with fewer total views than this (over all users)."""
    max_item_views: int = 20000
    """Then drop resources with this many total views or more (bots, pinned resources)."""
    min_user_views: int = 5
    """Then drop users with fewer total views than this over the remaining resources."""

    def __post_init__(self) -> None:
        for name in ("min_item_views", "max_item_views", "min_user_views"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be 0 (off) or positive")
        if 0 < self.max_item_views <= self.min_item_views:
            raise InputError("--max-item-views must be above --min-item-views (or 0 for off)")

    @classmethod
    def from_args(cls, args) -> FilterConfig:
        """From parsed ``recs`` flags (``--min-item-views`` ...)."""
        return cls(min_item_views=args.min_item_views, max_item_views=args.max_item_views,
                   min_user_views=args.min_user_views)


# -- the model families' settings -------------------------------------------------------------


@dataclass(frozen=True)
class AlsConfig:
    """ALS hyperparameters (Hu, Koren and Volinsky 2008) and the confidence scaling."""

    KEY_PREFIX: ClassVar[str] = ""
    TUNED: ClassVar[dict[str, type]] = {"factors": int, "regularization": float,
                                        "iterations": int, "alpha": float, "scaling": str}
    CHOICES: ClassVar[dict[str, tuple]] = {"scaling": SCALINGS}

    factors: int = 40
    """Latent dimensions per user and per resource."""
    regularization: float = 0.01
    """L2 penalty on the factors."""
    iterations: int = 50
    """Alternating least-squares sweeps."""
    alpha: float = 50.0
    """Confidence weight of a view: c = 1 + alpha * f(views)."""
    scaling: Scaling = "logshare"
    """f in c = 1 + alpha * f(views): ``linear`` (f = views, the seed's setting), ``log``
    (f = log(1 + views)), ``bm25`` (BM25-weighted views, implicit's K1=100, B=0.8) or
    ``logshare`` (the user's share of log-views: f = log(1 + views) / the sum of
    log(1 + views) over the user's resources, so each user adds alpha of confidence in all).

    ``logshare`` is the default by measurement (held-out NDCG@10, 20% split, alpha 50): on
    MovieLens-100k it is 1.8x the popularity baseline where linear, log and bm25 reach only
    1.0-1.3x (every one of them over-weights a view at alpha 50 on that data), and on the
    synthetic extracts it is the best of the four too; its quality barely moves between
    alpha 10 and 200. Like linear and log it depends on the user's own row only, so folding
    in one user gives the same confidences as training."""
    seed: int = 42
    """Seeds the factor initialisation and the splits, so a run can be repeated."""
    engine: str = "implicit"
    """One of ``ENGINES``. Spark's implicit ALS scales the regularization by each user's
    (and resource's) number of views, so the engine is part of the objective: the fold-in
    and the model hash carry it."""

    def __post_init__(self) -> None:
        if self.factors < 1 or self.iterations < 1:
            raise InputError("--factors and --iterations must be at least 1")
        if not (self.regularization >= 0 and self.alpha > 0):  # also rejects NaN
            raise InputError("--regularization must be >= 0 and --alpha > 0")
        one_of("scaling", self.scaling, SCALINGS)
        one_of("engine", self.engine, ENGINES)


@dataclass(frozen=True)
class EaseConfig:
    """EASE's two settings (``trainer.models.ease``)."""

    KEY_PREFIX: ClassVar[str] = "ease_"
    TUNED: ClassVar[dict[str, type]] = {"l2": float, "scaling": str}
    CHOICES: ClassVar[dict[str, tuple]] = {"scaling": EASE_SCALINGS}

    l2: float = 200.0
    """lambda in P = (X^T X + lambda I)^-1; larger shrinks B toward 0 (measured: 200 is the
    best of 50/200/500/1000 on MovieLens-small, binary)."""
    scaling: Literal["binary", "log"] = "binary"
    """What X holds per viewed resource: ``binary`` 1, ``log`` log(1 + views)."""

    def __post_init__(self) -> None:
        if not self.l2 > 0:  # also rejects NaN
            raise InputError("--ease-l2 must be above 0")
        one_of("EASE scaling", self.scaling, EASE_SCALINGS)


BLEND_PARTNERS: tuple[str, ...] = ("ease", "rp3beta")
"""The item-item models ALS can be blended with."""


@dataclass(frozen=True)
class BlendConfig:
    """The blend of ALS and an item-item model (``trainer.models.blend``)."""

    KEY_PREFIX: ClassVar[str] = "blend_"
    TUNED: ClassVar[dict[str, type]] = {"weight": float, "partner": str}
    CHOICES: ClassVar[dict[str, tuple]] = {"partner": BLEND_PARTNERS}

    weight: float | None = 0.5
    """ALS's weight in the mix (the partner's is 1 - weight); None: chosen on a validation
    split of the training data (two more fits a retrain; ``auto`` and ``recs tune`` choose
    too). 0.5 by measurement: ALS + RP3beta at 0.5 is 1.66x plain ALS's NDCG@10 on the
    generator's 16,660-resource catalogue (README, "Models past 10,000 resources")."""
    partner: Literal["ease", "rp3beta"] = "rp3beta"
    """The item-item model mixed with ALS: dense ``ease`` (O(resources^2) memory) or sparse
    ``rp3beta`` (scales past EASE's catalogues)."""

    def __post_init__(self) -> None:
        if self.weight is not None and not 0.0 <= self.weight <= 1.0:
            raise InputError("--blend-weight must be between 0 and 1")
        one_of("blend partner", self.partner, BLEND_PARTNERS)


@dataclass(frozen=True)
class Rp3betaConfig:
    """RP3beta's settings (``trainer.models.rp3beta``). The defaults come from a search on a
    synthetic catalogue of 18,525 resources (log input); README "Models past 10,000
    resources" has what they give on the generator (``benchmarks/models.py``)."""

    KEY_PREFIX: ClassVar[str] = "rp3_"
    TUNED: ClassVar[dict[str, type]] = {"alpha": float, "beta": float, "neighbours": int,
                                        "scaling": str}
    CHOICES: ClassVar[dict[str, tuple]] = {"scaling": EASE_SCALINGS}

    alpha: float = 0.32
    """Exponent of the walk's transition probabilities (P = row-normalised X, then P^alpha):
    below 1 it flattens them, so one heavy view weighs less against many light ones."""
    beta: float = 0.19
    """Popularity penalty: column j of W is divided by (users who viewed j)^beta; 0 is plain
    P3alpha, larger pushes the lists toward the long tail."""
    neighbours: int = 76
    """Weights kept per row of W (its k largest): the model's size, 12 x resources x k
    bytes, and what one view can recommend."""
    scaling: Literal["binary", "log"] = "log"
    """What X holds per viewed resource: ``binary`` 1, ``log`` log(1 + views)."""
    normalize: bool = False
    """Rescale each kept row of W to sum 1 (off: the measured settings leave them raw)."""

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta >= 0):  # also rejects NaN
            raise InputError("--rp3-alpha must be above 0 and --rp3-beta at least 0")
        if self.neighbours < 1:
            raise InputError("--rp3-neighbours must be at least 1")
        one_of("RP3beta scaling", self.scaling, EASE_SCALINGS)
        object.__setattr__(self, "normalize", bool(self.normalize))  # 0/1 from the CLI


FAMILY_CONFIGS: dict[str, type] = {"als": AlsConfig, "ease": EaseConfig, "blend": BlendConfig,
                                   "rp3beta": Rp3betaConfig}
"""Each model family's settings class, by the family's name (``trainer.models.registry``
holds the families themselves, under the same names)."""


@dataclass(frozen=True)
class AutoConfig:
    """``--model auto``'s decision, taken by ``recs tune`` (``trainer.quality.tune``)."""

    KEY_PREFIX: ClassVar[str] = "auto_"
    TUNED: ClassVar[dict[str, type]] = {"choice": str}
    CHOICES: ClassVar[dict[str, tuple]] = {"choice": tuple(FAMILY_CONFIGS)}

    choice: str | None = None
    """The family that won on ``recs tune``'s validation split: ``auto`` then fits only it,
    with the tuned settings. None (never tuned): ``auto`` chooses at each fit
    (``trainer.quality.choose``)."""

    def __post_init__(self) -> None:
        if self.choice is not None:
            one_of("auto choice", self.choice, tuple(FAMILY_CONFIGS))


SETTINGS_PARTS: dict[str, type] = {**FAMILY_CONFIGS, "auto": AutoConfig}
"""Every settings class that the tuned settings hold keys of, by the ModelSpec field."""
MODEL_PARTS: dict[str, tuple[str, ...]] = {"als": ("als",), "ease": ("ease",),
                                           "blend": ("als", "ease", "rp3beta", "blend"),
                                           "rp3beta": ("rp3beta",),
                                           "auto": ("als", "ease", "rp3beta", "blend", "auto")}
"""The families whose settings a model uses: a blend fits ALS and its partner (EASE or
RP3beta); ``auto`` may fit any of them."""
MODELS: tuple[str, ...] = (*FAMILY_CONFIGS, "auto")
"""``--model``: a family, or ``auto``: the best of ALS, EASE and their blend on a validation
split of the training data (``trainer.quality.choose``)."""
MODEL_DEST = "model_kind"
"""The option ``--model`` of the training commands keeps its value here (``--model FILE``
of ``recs similar`` holds a path); its variable is ``RECS_MODEL_KIND``."""


@dataclass(frozen=True)
class ModelSpec:
    """A model and the settings of every family, as ``recs tune`` stores them."""

    model: str = "blend"
    """``als``, ``ease``, ``blend``, ``rp3beta`` or ``auto``. The shipped default is the blend
    of ALS and RP3beta: better than plain ALS past 10,000 resources at about an ALS
    retrain's cost, and it keeps every user's ALS factors (the contract's ``factors`` key)."""
    als: AlsConfig = field(default_factory=AlsConfig)
    ease: EaseConfig = field(default_factory=EaseConfig)
    blend: BlendConfig = field(default_factory=BlendConfig)
    rp3beta: Rp3betaConfig = field(default_factory=Rp3betaConfig)
    auto: AutoConfig = field(default_factory=AutoConfig)
    memory_limit: int | None = None
    """Bytes a fit may use (``--memory-limit``); None: the machine's available memory
    (``MemAvailable``) when the fit starts. A family whose fit would need more is refused
    in one line before it allocates (``trainer.models.memory``). Not a tuned setting."""

    def __post_init__(self) -> None:
        one_of("model", self.model, MODELS)
        if self.memory_limit is not None and self.memory_limit < 1:
            raise InputError("--memory-limit must be a positive number of bytes")

    def settings(self, kind: str | None = None, *, tuned_only: bool = True) -> dict:
        """The flat settings of ``kind`` (default: this spec's model): ``model`` and each
        used family's fields by key (only the tuned ones unless ``tuned_only`` is off)."""
        kind = kind or self.model
        out: dict = {"model": kind}
        for family in MODEL_PARTS[kind]:
            config = getattr(self, family)
            names = config.TUNED if tuned_only else [f.name for f in fields(config)]
            out.update({config.KEY_PREFIX + name: getattr(config, name) for name in names})
        return out

    def with_settings(self, flat: Mapping) -> ModelSpec:
        """This spec with every known key of ``flat`` applied (typed values; other keys are
        ignored)."""
        parts = {}
        for family in SETTINGS_PARTS:
            config = getattr(self, family)
            given = {f.name: flat[config.KEY_PREFIX + f.name] for f in fields(config)
                     if config.KEY_PREFIX + f.name in flat}
            if given:
                parts[family] = replace(config, **given)
        return replace(self, model=flat.get("model", self.model),
                       memory_limit=flat.get("memory_limit", self.memory_limit), **parts)

    @classmethod
    def from_values(cls, values: Mapping) -> ModelSpec:
        """The spec of parsed options (keys as the options' dests: ``model_kind`` for
        ``--model``)."""
        flat = {("model" if k == MODEL_DEST else k): v for k, v in values.items()}
        return cls().with_settings(flat)

    @staticmethod
    def tuned_keys() -> dict[str, tuple[type, tuple]]:
        """Every key the tuned settings may hold: (type, choices or ())."""
        out: dict[str, tuple[type, tuple]] = {"model": (str, MODELS)}
        for config in SETTINGS_PARTS.values():
            for name, kind in config.TUNED.items():
                out[config.KEY_PREFIX + name] = (kind, config.CHOICES.get(name, ()))
        return out

    def describe(self, kind: str | None = None, weight: float | None = None) -> str:
        """One line naming what is fitted (``weight``: the blend's, once chosen)."""
        kind = kind or self.model
        ease = f"EASE(l2={self.ease.l2:g}, scaling={self.ease.scaling})"
        if kind == "als":
            return str(self.als)
        if kind == "ease":
            return ease
        if kind == "rp3beta":
            return str(self.rp3beta)
        weight = self.blend.weight if weight is None else weight
        chosen = "chosen on validation" if weight is None else f"{weight:g}"
        partner = ease if self.blend.partner == "ease" else str(self.rp3beta)
        return f"blend (ALS weight {chosen}) of {self.als} and {partner}"


def one_of(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")


def check_lang(lang: str) -> str:
    """``lang`` if it is a valid language code, else an InputError: the command line's own
    check (``core.options.lang``, the contract's rule and its one message) for a value that
    reached a library function without going through the parser."""
    try:
        return lang_option(lang)
    except argparse.ArgumentTypeError as exc:
        raise InputError(f"--lang: {exc}") from None
