"""``recs control``: the control topic (default ``resource-changes``) -> hides, unhides and
forgets, each applied exactly once.

It is the views consumer (consumers/consume.py) with two things swapped, so every rule of
that loop holds here unchanged: the partition offsets live in Redis and are written by the
same script as the effect (store/control.py CONTROL_LUA, guarded like the view counts), a
crash or SIGKILL at any point resumes from what Redis holds, invalid events go to the
dead-letter topic (default ``resource-changes.dlq``) with an ``error`` header. Events of
one batch are applied in offset order per partition (a hide then an unhide of the same
resource ends unhidden); use the resource id (or user id) as the message key so one
resource's events share a partition.

After each batch, and when idle, the lists of queued hides are cleaned and refilled
(trainer/pipeline/takedown.py ``settle``); the queue lives in Redis, so a crash between the two is
finished by the restart.

On a Redis Cluster the batch is one call per slot (store/control.py): each event carries
its (partition, offset) (:class:`ControlBatch`) and each slot applies it once by its own
progress per partition; the consumer's partition offsets are checked before and set after.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import redis

from consumers.batch import DeadLetter, OrderedBatch
from consumers.config import ConsumerConfig
from consumers.consume import StreamConsumer
from consumers.consume_command import run_until_signalled
from consumers.events import InvalidEvent, json_object
from consumers.flavour import Flavour
from core.contract import CONTROL_CHARACTERS, MAX_RESOURCE_ID, MAX_USER_ID_LENGTH, valid_lang
from store.cluster_keys import layout
from store.control import Control
from store.control_cluster import finish_forgets
from store.control_op import ControlOp
from store.keys import Keys
from store.settle import read_work
from store.snapshot import read_languages
from trainer.pipeline.takedown import settle

log = logging.getLogger("recs.control")


@dataclass(frozen=True)
class ControlDefaults:
    """Where ``recs control`` differs from ``recs consume`` (every other setting, and what
    each means, is :class:`consumers.config.ConsumerConfig`'s)."""

    topic: str = "resource-changes"
    """Topic of control events (docs/CONTRACT.md)."""
    dlq_topic: str = "resource-changes.dlq"
    """Dead-letter topic for invalid control events."""
    group: str = "recs-control"
    """Consumer group id (not the views consumers' group: one rebalance never stalls both)."""
    batch_size: int = 100
    """Events per batch at most (control events are rare; a batch's hides are settled
    right after it). A batch is one guarded script call, so this bounds how long it holds
    Redis: 100 hides are ~600 writes; a forget costs two writes per resource the user
    viewed."""
    metrics_port: int = 9103
    """Prometheus port; 0 = no HTTP server (not 9102: ``recs train --every`` has that one)."""

# Every reason code parse_control can give (the dead-letter ``error`` header).
REASONS = ("no_value", "too_large", "not_json", "not_object", "invalid_action",
           "invalid_resource_id", "invalid_user_id", "invalid_lang", "invalid_reason",
           "invalid_ts")
MAX_REASON = 1000
"""Longest ``reason`` text accepted, in characters."""


def parse_control(value: bytes | None) -> ControlOp:
    """The operation of one control event (docs/CONTRACT.md); raises InvalidEvent."""
    doc = json_object(value)
    action = doc.get("action")
    if action not in ("hide", "unhide", "forget"):
        raise InvalidEvent("invalid_action")
    lang = doc.get("lang")
    if lang is not None and not valid_lang(lang):
        raise InvalidEvent("invalid_lang")
    reason = doc.get("reason")
    if reason is not None and (type(reason) is not str or len(reason) > MAX_REASON):
        raise InvalidEvent("invalid_reason")
    ts = doc.get("ts")
    if ts is not None and (type(ts) is not int or ts < 0):
        raise InvalidEvent("invalid_ts")
    if action == "forget":
        user = doc.get("user_id")
        if type(user) is not str or not 0 < len(user) <= MAX_USER_ID_LENGTH or \
                CONTROL_CHARACTERS.search(user):
            raise InvalidEvent("invalid_user_id")
        return ControlOp("forget", user, lang)
    rid = doc.get("resource_id")
    if type(rid) is str and rid.isascii() and rid.isdigit() and len(rid) <= 20:
        rid = int(rid)
    if type(rid) is not int or not 0 < rid <= MAX_RESOURCE_ID:
        raise InvalidEvent("invalid_resource_id")
    return ControlOp(action, str(rid), lang, reason, ts)


class ControlBatch(OrderedBatch):
    """The control events of a batch, each tagged with its (partition, offset): on a Redis
    Cluster each slot's script applies an event once by its own progress per partition
    (store/control.py)."""

    def __init__(self) -> None:
        super().__init__(parse_control)

    def add(self, msgs: list) -> list[DeadLetter]:
        dead: list[DeadLetter] = []
        for m in msgs:  # one at a time: the op it added (if any) is the last one
            before = len(self.items)
            dead += super().add([m])
            if len(self.items) > before:
                op = self.items[before]
                self.items[before] = dataclasses.replace(op, at=(m.partition(), m.offset()))
        return dead


def settle_all(client: redis.Redis, keys: Keys, forgets: bool = False) -> None:
    """Clean and refill the lists of queued hides, every language (errors are logged and
    retried at the next idle check: the queue stays in Redis); ``forgets``: on a cluster,
    finish the forgets a crash left half done too (at start)."""
    keys = keys if keys.cluster else layout(client, keys.prefix)
    try:
        for lang in read_languages(client, keys):
            if forgets:
                finish_forgets(client, keys, lang)
            if read_work(client, keys, lang):
                settle(client, keys, lang)
    except (redis.RedisError, ValueError) as exc:
        log.warning("settling take-downs failed; retrying when idle",
                    extra={"fields": {"error": str(exc)}})


CONTROL = Flavour(new_batch=ControlBatch, store=Control, cluster_writer=None,
                  settle=lambda consumer: settle_all(consumer.redis, consumer.keys))
"""The views consumer's loop with control events in place of views (module docstring): each
operation kept in order, written by the control script (guarded like the view counts)."""


def cmd_control(args) -> int:
    """``recs control``: run one member of the control group until SIGTERM/SIGINT."""
    args.topic, args.dlq_topic, args.group = args.control_topic, args.control_dlq_topic, \
        args.control_group
    consumer = StreamConsumer(ConsumerConfig.from_args(args), flavour=CONTROL)
    # What a previous run (or a killed `recs hide`) left queued.
    settle_all(consumer.redis, consumer.keys, forgets=True)
    return run_until_signalled(consumer)
