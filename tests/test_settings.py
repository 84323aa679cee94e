"""Settings in one place: the one precedence rule, the model spec's round trip through the
tuned settings (what `recs tune` writes to a file or a hash, as strings there), and the
family registry matching the settings classes. Pure functions, no server."""

from __future__ import annotations

import json

import pytest

from core.errors import InputError
from trainer.config import FAMILY_CONFIGS, AlsConfig, BlendConfig, EaseConfig, ModelSpec
from trainer.models.registry import FAMILIES
from trainer.settings import checked, resolve


def test_resolve_takes_the_flag_then_the_variable_then_tuned_then_the_default():
    defaults = {"a": 1, "b": 1, "c": 1, "d": 1}
    got = resolve(flags={"a": 4}, env={"a": 3, "b": 3}, tuned={"a": 2, "b": 2, "c": 2},
                  defaults=defaults)
    assert got == {"a": 4, "b": 3, "c": 2, "d": 1}


def test_a_spec_round_trips_through_the_tuned_settings_as_a_hash_holds_them():
    spec = ModelSpec("blend", als=AlsConfig(factors=7, alpha=3.5, scaling="log"),
                     ease=EaseConfig(l2=30.0, scaling="log"), blend=BlendConfig(weight=0.3))
    stored = {k: v if isinstance(v, str) else json.dumps(v) for k, v in spec.settings().items()}
    assert ModelSpec().with_settings(checked(stored, "test")) == spec
    # Only the tuned fields travel: the seed and the engine are the run's, not the model's.
    assert "seed" not in spec.settings() and "engine" not in spec.settings()
    assert set(ModelSpec("ease").settings()) == {"model", "ease_l2", "ease_scaling"}


def test_stored_settings_are_checked_and_name_their_source():
    with pytest.raises(InputError, match="recs:en:settings: factors='many' is not a int"):
        checked({"factors": "many"}, "recs:en:settings")
    with pytest.raises(InputError, match="model='svd'"):
        checked({"model": "svd"}, "recs:en:settings")
    assert checked({"validation_ndcg": "0.3", "seed": "4", "alpha": "2"}, "x") == {"alpha": 2.0}


def test_every_family_has_its_settings_class_and_the_interface():
    assert set(FAMILIES) == set(FAMILY_CONFIGS)
    for name, family in FAMILIES.items():
        assert family.family == name
        for method in ("fit", "published", "recommend", "similar_items", "recommend_rows",
                       "similar_rows", "score_rows", "settings_fields"):
            assert callable(getattr(family, method, None)), f"{name} lacks {method}"
