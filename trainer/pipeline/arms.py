"""A retrain during an A/B experiment: every arm fitted on the same matrix, each user's list
from their arm's model (store/experiments.py for the experiment and the assignment).

Order, so that no user ever sees another arm's list and nothing covered is removed:

1. each non-default arm: its settings over the run's (:func:`arm_config`), held-out metrics
   with ``--evaluate`` (no quality gate: the experiment is the judge), the fit, then ITS
   users' lists and factors at the contract keys (the same whole-list script as every
   publish), its EASE rows, and the switch of its own item side (``Keys.arm``);
2. the default arm (the language's model) publishes as always, writing only its own users'
   lists, and counts the other arms' users as covered, so its removal step keeps them;
3. lists the arms' scripts cut for take-downs during the run are refilled from the arm's
   model (``trainer.pipeline.takedown.refill_lists`` under the arm's keys).

Similar lists are the default arm's only: experiments compare users' lists.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import redis

from store.experiments import Arm, Experiment
from store.keys import Keys
from store.publish import Publisher
from trainer.data.matrix import UtilityMatrix
from trainer.pipeline.publish import model_info, only_users, switch_model
from trainer.pipeline.quality import evaluate_holdout
from trainer.pipeline.takedown import refill_lists
from trainer.quality.choose import fit_model
from trainer.scoring.lists import scorer_for, user_batches
from trainer.settings import RetrainConfig, checked

log = logging.getLogger(__name__)


@dataclass
class ArmPublished:
    arm: str
    version: str
    users: int
    publisher: Publisher


def arm_config(settings: RetrainConfig, arm: Arm) -> RetrainConfig:
    """The run's settings with the arm's model settings over them (they win over flags,
    variables and tuned settings: the experiment decides what each arm fits)."""
    given = checked(arm.settings, f"experiment arm {arm.name!r}")
    if not given:
        return settings
    return replace(settings, spec=settings.spec.with_settings(given))


def in_arm(experiment: Experiment, name: str) -> Callable[[str], bool]:
    return lambda user: experiment.arm_of(user).name == name


def publish_arms(client: redis.Redis, keys: Keys, lang: str, experiment: Experiment,
                 matrix: UtilityMatrix, settings: RetrainConfig, *, lock, seq: int,
                 publish_options: dict) -> list[ArmPublished]:
    """Step 1 of the module docstring for every non-default arm."""
    done = []
    for arm in experiment.arms[1:]:
        config = arm_config(settings, arm)
        metrics = evaluate_holdout(matrix, config, lang) if settings.evaluate else None
        model, _ = fit_model(matrix, config.spec, lang, threads=settings.threads, stats={})
        arm_keys = keys.arm(arm.name)
        lock.check()
        pub = Publisher(client, arm_keys, lang, lock=lock, seq=seq, **publish_options)
        scorer = scorer_for(model, config.scoring)
        pub.write_users(only_users(user_batches(model, config.top_n, scorer),
                             in_arm(experiment, arm.name)))
        info = {**model_info(model, config, seq, metrics), "experiment": experiment.id,
                "arm": arm.name}
        version = switch_model(client, arm_keys, lang, pub, model, matrix, info)
        log.info("experiment arm published", extra={"fields": {
            "lang": lang, "experiment": experiment.id, "arm": arm.name, "version": version,
            "model": model.family, "users": len(pub.users_written)}})
        done.append(ArmPublished(arm.name, version, len(pub.users_written), pub))
    return done


def refill_arms(client: redis.Redis, keys: Keys, lang: str, arms: list[ArmPublished]) -> None:
    """Step 3: lists cut by take-downs while the arms were written, refilled from each arm."""
    for one in arms:
        if one.publisher.cut["recs"]:
            refill_lists(client, keys.arm(one.arm), lang, one.publisher.cut["recs"], ())
