"""``recs experiment start|status|stop|promote|report``: A/B experiments of model settings.

``start --lang L --arms NAME=SPEC:WEIGHT,...`` records the experiment (store/experiments.py);
the next ``recs train`` fits and publishes every arm and ``recs update`` folds each user into
their arm's model. SPEC, resolved once at start into the settings stored with the arm (so a
later ``recs tune`` or an edited file does not change a running arm):

- ``tuned``: the language's tuned settings (``recs:{lang}:settings``) as they are;
- ``als``, ``ease``, ``blend``, ``auto``: that model, with the language's tuned settings for
  the rest (the defaults when never tuned);
- anything else: a settings JSON file as ``recs tune --out`` writes it.

The first arm is the default arm (the language's own model). ``promote ARM`` makes the arm's
settings the language's tuned settings and ends the experiment; ``stop`` ends it. Every bad
input is one line, exit 2, nothing written.
"""

from __future__ import annotations

import json

from core.errors import InputError, NotPublishedError
from store.cluster_keys import layout
from store.connection import connect
from store.experiment_report import build_report, text_table
from store.experiments import (
    ARM_NAME,
    MAX_ARMS,
    MAX_WEIGHT,
    Arm,
    Experiment,
    end,
    new_id,
    read_experiment,
    start,
)
from store.keys import Keys
from store.quality import read_settings
from trainer.config import MODELS, check_lang
from trainer.settings import checked, read_settings_file

EXPERIMENT_ID = ARM_NAME
"""Experiment ids: what impression events carry in ``experiment`` (1..32 of [a-z0-9_-])."""


def parse_arms(text: str, tuned: dict) -> list[Arm]:
    """``NAME=SPEC:WEIGHT,...`` as arms (see the module docstring); ``tuned``: the
    language's tuned settings, checked. Raises InputError naming the bad part."""
    if not text or not text.strip():
        raise InputError("--arms: expected NAME=SPEC:WEIGHT,... (at least two arms)")
    arms: list[Arm] = []
    for part in (p.strip() for p in text.split(",")):
        name, eq, rest = part.partition("=")
        spec, colon, weight = rest.rpartition(":")
        if not eq or not colon or not spec:
            raise InputError(f"--arms: {part!r} is not NAME=SPEC:WEIGHT")
        if not ARM_NAME.fullmatch(name) or name == "default":
            raise InputError(f"--arms: arm name {name!r}: 1..32 of a-z, 0-9, _ and -, "
                             "starting with a letter or digit, not 'default'")
        if not weight.isdigit() or not 1 <= int(weight) <= MAX_WEIGHT:
            raise InputError(f"--arms: arm {name!r}: weight {weight!r} is not an integer "
                             f"in 1..{MAX_WEIGHT}")
        if any(a.name == name for a in arms):
            raise InputError(f"--arms: arm {name!r} given twice")
        arms.append(Arm(name, spec, int(weight), resolve_spec(name, spec, tuned)))
    if not 2 <= len(arms) <= MAX_ARMS:
        raise InputError(f"--arms: {len(arms)} arm(s); an experiment has 2..{MAX_ARMS}")
    return arms


def resolve_spec(name: str, spec: str, tuned: dict) -> dict:
    """The settings an arm fits (keyed as ``recs tune`` stores them)."""
    if spec == "tuned":
        if not tuned:
            raise InputError(f"--arms: arm {name!r}: SPEC 'tuned' but the language has no "
                             "tuned settings (run `recs tune --lang L` first)")
        return dict(tuned)
    if spec in MODELS:
        return {**{k: v for k, v in tuned.items() if k != "model"}, "model": spec}
    try:
        return read_settings_file(spec)
    except InputError as exc:
        raise InputError(f"--arms: arm {name!r}: SPEC {spec!r} is not tuned, "
                         f"{', '.join(MODELS)} or a settings file ({exc})") from None


def cmd_experiment(args) -> int:
    lang = check_lang(args.lang)
    client = connect(args.redis_url)
    keys = layout(client, args.prefix)
    try:
        return ACTIONS[args.action](client, keys, lang, args)
    finally:
        client.close()


def _start(client, keys: Keys, lang: str, args) -> int:
    if args.arm:
        raise InputError("recs experiment start takes no ARM (give --arms)")
    tuned = checked(read_settings(client, keys, lang), keys.settings(lang))
    arms = parse_arms(args.arms or "", tuned)
    exp_id = args.id or new_id(lang)
    if not EXPERIMENT_ID.fullmatch(exp_id):
        raise InputError(f"--id {exp_id!r}: 1..32 of a-z, 0-9, _ and -")
    experiment = Experiment(exp_id, lang, "running", tuple(arms), _now_ms())
    current = start(client, keys, experiment)
    if current is not None:
        raise InputError(f"{lang}: experiment {current.id} is running; stop or promote it "
                         "first (one experiment per language)")
    _say(args, experiment.as_dict(), f"{lang}: experiment {exp_id} started: " + ", ".join(
        f"{a.name}={a.spec} ({a.settings.get('model', 'als')}, weight {a.weight})"
        for a in arms) + f"; arm {arms[0].name} is the default. Run `recs train --lang "
        f"{lang}` to publish every arm.")
    return 0


def _status(client, keys: Keys, lang: str, args) -> int:
    experiment = read_experiment(client, keys, lang)
    if experiment is None:
        raise NotPublishedError(f"{lang}: no experiment (start one with `recs experiment "
                                "start`)")
    total = sum(a.weight for a in experiment.arms)
    lines = [f"experiment {experiment.id} ({lang}): {experiment.status}"]
    lines += [f"  {a.name:<12} {a.weight / total:6.1%}  {a.spec} -> {json.dumps(a.settings)}"
              for a in experiment.arms]
    _say(args, experiment.as_dict(), "\n".join(lines))
    return 0


def _stop(client, keys: Keys, lang: str, args) -> int:
    ended = end(client, keys, lang, "stopped")
    if ended is None:
        raise InputError(f"{lang}: no experiment is running")
    _say(args, ended.as_dict(), f"{lang}: experiment {ended.id} stopped; the next retrain "
         "gives every user the default arm's model")
    return 0


def _promote(client, keys: Keys, lang: str, args) -> int:
    experiment = read_experiment(client, keys, lang)
    if experiment is None or not experiment.running:
        raise InputError(f"{lang}: no experiment is running")
    arm = experiment.by_name(args.arm or "")
    if arm is None:
        raise InputError(f"promote: no arm {args.arm!r} in experiment {experiment.id} "
                         f"(arms: {', '.join(a.name for a in experiment.arms)})")
    settings = {**arm.settings, "promoted_from": f"{experiment.id}/{arm.name}"}
    ended = end(client, keys, lang, "promoted", arm.name, settings=settings)
    if ended is None:
        raise InputError(f"{lang}: no experiment is running")
    _say(args, ended.as_dict(), f"{lang}: arm {arm.name} promoted: its settings are now "
         f"{keys.settings(lang)}; experiment {ended.id} ended")
    return 0


def _report(client, keys: Keys, lang: str, args) -> int:
    report = build_report(client, keys, lang)
    if report is None:
        raise NotPublishedError(f"{lang}: no experiment to report on")
    print(json.dumps(report) if args.json else text_table(report))
    return 0


def _say(args, data: dict, line: str) -> None:
    print(json.dumps(data) if getattr(args, "json", False) else line)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


ACTIONS = {"start": _start, "status": _status, "stop": _stop, "promote": _promote,
           "report": _report}
