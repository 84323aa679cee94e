"""A/B experiments: the experiment hash, and which arm a user is in.

Invariants:

- One experiment per language is ``running`` at a time: :func:`start` refuses while one is
  (WATCH/MULTI on the hash, so two starts racing cannot both win).
- Assignment needs no per-user state: :func:`assign` is a pure function of the experiment
  id, the user id and the arms' integer weights, the same in every process and language
  (docs/CONTRACT.md "Experiments" spells out the formula for apps)::

      bucket = int(sha1_hex(experiment_id + ":" + user_id)[:8], 16) % sum(weights)
      arm    = the first arm whose running total of weights exceeds bucket

- The first arm is the *default* arm: its model is the language's own (``model(lang)``,
  the similar lists, everything outside experiments). Every other arm's model has its own
  item side (``Keys.arm``); users' lists and factors stay at the contract keys whichever
  arm wrote them.
- An experiment that ends keeps its hash (``status`` stopped or promoted, ``ended_at``) so
  its report can still be read; the other arms' item sides are freed when it ends.
- On a Redis Cluster the experiment hash is on the language's item side (start and end are
  one MULTI on its primary, with the tuned settings), and each slot group holds a copy
  (``group_experiment``) so a reader's one script in the user's group decides the arm, as
  it reads the list and the arm's model version (the group's copy of the arm's model
  hash). Copies are written after the item side by start, end and each retrain
  (:func:`running_synced`, before any arm's list is written), and a copy never goes back to
  an older state (:data:`COPY_EXPERIMENT` compares the hashes' stamps); an end drops the
  arms' group copies after the group copies say it ended.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from store.keys import Keys
from store.read import text
from store.switch import copy_to_groups, item_primary

ARM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
"""Arm names: what impression events carry in ``arm`` (``default`` is taken: no experiment)."""
MAX_ARMS = 8
MAX_WEIGHT = 10_000


@dataclass(frozen=True)
class Arm:
    name: str
    """As in impression events' ``arm``."""
    spec: str
    """The SPEC as given to ``recs experiment start`` (for reports)."""
    weight: int
    """Share of users: weight / sum of the arms' weights."""
    settings: dict = field(default_factory=dict)
    """The model settings, keyed as ``recs tune`` stores them, resolved at start."""


@dataclass(frozen=True)
class Experiment:
    id: str
    lang: str
    status: str
    """``running``, ``stopped`` or ``promoted``."""
    arms: tuple[Arm, ...]
    started_at: int
    """ms since the epoch."""
    ended_at: int = 0
    promoted: str = ""
    """The arm promoted (status ``promoted``)."""

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def default(self) -> Arm:
        return self.arms[0]

    def arm_of(self, user_id: str) -> Arm:
        return self.arms[assign(self.id, user_id, [a.weight for a in self.arms])]

    def rows_by_model(self, users, published: Callable[[str], bool]) -> dict[str, list[int]]:
        """Row numbers of ``users`` by the model that serves them: their arm's name where that
        arm is not the default and ``published(arm)`` (asked once per such arm), else ""
        (the language's own model); "" first."""
        live = {a.name for a in self.arms[1:] if published(a.name)}
        groups: dict[str, list[int]] = {"": []}
        for i, user in enumerate(users):
            arm = self.arm_of(user).name
            groups.setdefault(arm if arm in live else "", []).append(i)
        return groups

    def by_name(self, name: str) -> Arm | None:
        return next((a for a in self.arms if a.name == name), None)

    def as_dict(self) -> dict:
        return {"id": self.id, "lang": self.lang, "status": self.status,
                "started_at": self.started_at, "ended_at": self.ended_at,
                "promoted": self.promoted,
                "arms": [{"name": a.name, "spec": a.spec, "weight": a.weight,
                          "settings": a.settings} for a in self.arms]}


def assign(experiment_id: str, user_id: str, weights: list[int]) -> int:
    """The index of the arm ``user_id`` is in (see the module docstring for the formula)."""
    digest = hashlib.sha1(f"{experiment_id}:{user_id}".encode()).hexdigest()
    bucket = int(digest[:8], 16) % sum(weights)
    total = 0
    for i, w in enumerate(weights):
        total += w
        if bucket < total:
            return i
    raise AssertionError("unreachable: bucket < sum(weights)")


def new_id(lang: str) -> str:
    return f"{lang}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"


def read_experiment(client: redis.Redis, keys: Keys, lang: str) -> Experiment | None:
    """The language's experiment (running or ended), None when there never was one."""
    return decode(lang, client.hgetall(keys.experiment(lang)))


def running(client: redis.Redis, keys: Keys, lang: str) -> Experiment | None:
    """The running experiment of ``lang``, None when none runs."""
    found = read_experiment(client, keys, lang)
    return found if found is not None and found.running else None


def decode(lang: str, raw: dict) -> Experiment | None:
    """An experiment hash's fields (bytes or str) as an :class:`Experiment`; None when empty
    or not one of ours."""
    h = {text(k): text(v) for k, v in (raw or {}).items()}
    try:
        arms = tuple(Arm(a["name"], a["spec"], int(a["weight"]), dict(a.get("settings", {})))
                     for a in json.loads(h["arms"]))
        return Experiment(h["id"], lang, h["status"], arms, int(h.get("started_at", 0)),
                          int(h.get("ended_at", 0) or 0), h.get("promoted", ""))
    except (KeyError, ValueError, TypeError):
        return None


def _fields(e: Experiment) -> dict:
    return {"id": e.id, "status": e.status, "started_at": e.started_at,
            "ended_at": e.ended_at, "promoted": e.promoted,
            "arms": json.dumps([{"name": a.name, "spec": a.spec, "weight": a.weight,
                                 "settings": a.settings} for a in e.arms], sort_keys=True)}


def start(client: redis.Redis, keys: Keys, experiment: Experiment) -> Experiment | None:
    """Record ``experiment`` as the language's running one; returns the experiment already
    running instead (nothing written) when there is one."""
    key = keys.experiment(experiment.lang)
    with item_primary(client, keys, experiment.lang).pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                current = decode(experiment.lang, pipe.hgetall(key))
                if current is not None and current.running:
                    return current
                pipe.multi()
                pipe.delete(key)
                pipe.hset(key, mapping=_fields(experiment))
                pipe.execute()
                break
            except redis.WatchError:
                continue
    copy_experiment(client, keys, experiment.lang, _fields(experiment))
    return None


def end(client: redis.Redis, keys: Keys, lang: str, status: str, promoted: str = "",
        settings: dict | None = None) -> Experiment | None:
    """End the running experiment (``stopped`` or ``promoted``); with ``settings`` they
    replace the language's tuned settings in the same MULTI. Returns the ended experiment,
    None when none was running. The non-default arms' item sides are then freed."""
    key = keys.experiment(lang)
    with item_primary(client, keys, lang).pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                current = decode(lang, pipe.hgetall(key))
                if current is None or not current.running:
                    return None
                ended = Experiment(current.id, lang, status, current.arms, current.started_at,
                                   int(time.time() * 1000), promoted)
                pipe.multi()
                pipe.hset(key, mapping=_fields(ended))
                if settings is not None:
                    pipe.delete(keys.settings(lang))
                    pipe.hset(keys.settings(lang), mapping={
                        k: v if isinstance(v, str) else json.dumps(v)
                        for k, v in settings.items()})
                pipe.execute()
                break
            except redis.WatchError:
                continue
    copy_experiment(client, keys, lang, _fields(ended))
    for arm in ended.arms[1:]:
        drop_arm(client, keys.arm(arm.name), lang)
    return ended


def drop_arm(client: redis.Redis, arm_keys, lang: str) -> None:
    """UNLINK an arm's item side (its model hash, factors, ids, totals, EASE rows), then on
    a cluster each slot group's copy of its model hash."""
    versions = client.smembers(arm_keys.ease_versions(lang))
    client.unlink(*arm_keys.arm_keys_of(lang),
                  *(arm_keys.ease_rows(lang, text(v)) for v in versions))
    if arm_keys.cluster:
        client.unlink(*(g.group_model(lang) for g in arm_keys.slot_groups()))


COPY_EXPERIMENT = """
-- KEYS[1]: one slot group's copy of the experiment hash (group_experiment).
-- ARGV[1]: the stamp of the state copied (max of started_at and ended_at, ms);
-- ARGV[2..]: field, value, ... of the experiment hash. Replaced whole, and only when the
-- copy held is not newer: a retrain's copy read before a stop never undoes the stop's.
local held = redis.call('HMGET', KEYS[1], 'started_at', 'ended_at')
local stamp = math.max(tonumber(held[1]) or -1, tonumber(held[2]) or -1)
if stamp > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"""


def copy_experiment(client: redis.Redis, keys: Keys, lang: str, fields: dict) -> None:
    """On a cluster, the experiment hash ``fields`` into every slot group's copy (module
    docstring); on one Redis the copy is the hash itself: nothing to do."""
    if not keys.cluster or not fields:
        return
    stamp = max(int(fields.get("started_at") or 0), int(fields.get("ended_at") or 0))
    copy_to_groups(client, [g.group_experiment(lang) for g in keys.slot_groups()],
                   [stamp, *(x for pair in fields.items() for x in pair)], COPY_EXPERIMENT)


def running_synced(client: redis.Redis, keys: Keys, lang: str) -> Experiment | None:
    """:func:`running`, after copying the experiment hash into every slot group on a
    cluster (so a start or end that died before its copies is finished by the next
    retrain, before it writes any arm's list)."""
    found = read_experiment(client, keys, lang)
    if found is not None:
        copy_experiment(client, keys, lang, _fields(found))
    return found if found is not None and found.running else None


@dataclass(frozen=True)
class Tag:
    """Which model version, arm and experiment a user's list came from (the fields an
    impression event carries)."""

    model_version: str
    arm: str
    experiment: str | None


def queue_tag_reads(pipe, keys: Keys, lang: str, arm_names: list[str]) -> None:
    """Queue, on a MULTI pipeline after the list read, what :func:`tag_of` decodes: the
    experiment hash, the language's model version, each named arm's model version."""
    pipe.hgetall(keys.experiment(lang))
    pipe.hget(keys.model(lang), "version")
    for name in arm_names:
        pipe.hget(keys.arm(name).model(lang), "version")


def tag_of(lang: str, user_id: str, arm_names: list[str], replies: list, source: str
           ) -> tuple[Tag | None, Experiment | None]:
    """The :class:`Tag` of a list read in the same MULTI as ``replies`` (from
    :func:`queue_tag_reads` with ``arm_names``); (None, experiment) when the running
    experiment's arms are not ``arm_names`` (read again with its arms). A user whose arm has
    no model published yet gets the default arm's list, and is tagged so; a trending list
    has no model version."""
    experiment = decode(lang, replies[0])
    version = text(replies[1]) if replies[1] is not None else ""
    if experiment is None or not experiment.running:
        return Tag(version if source == "personal" else "", "default", None), experiment
    if [a.name for a in experiment.arms[1:]] != arm_names:
        return None, experiment
    arm = experiment.arm_of(user_id)
    if arm is not experiment.default:
        arm_version = replies[2 + arm_names.index(arm.name)]
        if arm_version is None:
            arm = experiment.default
        else:
            version = text(arm_version)
    return Tag(version if source == "personal" else "", arm.name, experiment.id), experiment
