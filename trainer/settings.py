"""Tuned settings and the command line: which value wins.

Precedence, highest first: an option given on the command line, then its ``RECS_*``
variable, then the tuned settings (``--settings FILE`` offline, the language's settings hash
online), then the built-in default. ``recs.cli`` records in ``args.explicit`` the dests the
user gave (flag or variable); :func:`apply_settings` fills only the others.

The settings themselves are a flat dict keyed as ``trainer.quality.tune.TUNABLE`` (``model`` stands
for ``--model``, whose dest is ``model_kind``).
"""

from __future__ import annotations

import json
from pathlib import Path

from core.errors import InputError
from trainer.config import EASE_SCALINGS, MODELS, SCALINGS, EaseConfig, TrainConfig
from trainer.quality.choose import ModelSpec
from trainer.quality.tune import TUNABLE

_TYPES = {"model": str, "factors": int, "regularization": float, "iterations": int,
          "alpha": float, "scaling": str, "ease_l2": float, "ease_scaling": str,
          "blend_weight": float}
_CHOICES = {"scaling": SCALINGS, "ease_scaling": EASE_SCALINGS,
            "model": MODELS}


def _dest(key: str) -> str:
    return "model_kind" if key == "model" else key


def checked(raw: dict, source: str) -> dict:
    """The TUNABLE entries of ``raw`` converted to their types; anything else is ignored
    (e.g. ``validation_ndcg``, ``tuned_at``). A bad value is one InputError naming ``source``."""
    out = {}
    for key in TUNABLE:
        if key not in raw or raw[key] in (None, ""):
            continue
        try:
            value = _TYPES[key](raw[key])
        except (TypeError, ValueError):
            raise InputError(f"{source}: {key}={raw[key]!r} is not a {_TYPES[key].__name__}"
                             ) from None
        if key in _CHOICES and value not in _CHOICES[key]:
            raise InputError(f"{source}: {key}={value!r}; expected one of "
                             f"{', '.join(_CHOICES[key])}")
        out[key] = value
    return out


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


def apply_settings(args, settings: dict):
    """A copy of ``args`` with ``settings`` filling every dest the user did not give."""
    import argparse

    merged = argparse.Namespace(**vars(args))
    explicit = getattr(args, "explicit", frozenset())
    for key, value in settings.items():
        if _dest(key) not in explicit:
            setattr(merged, _dest(key), value)
    return merged


def spec_from_args(args) -> ModelSpec:
    """The ModelSpec of parsed ``recs train``/``evaluate``/``tune`` options."""
    return ModelSpec(model=getattr(args, "model_kind", "als"), als=TrainConfig.from_args(args),
                     ease=EaseConfig(l2=args.ease_l2, scaling=args.ease_scaling),
                     blend_weight=getattr(args, "blend_weight", None))
