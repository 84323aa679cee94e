"""A retrain of one language from the Redis counts, step by step, under its trainer lock.

:func:`train_language` runs these steps (``trainer.pipeline.run.under_lock``), each a function
returning one result, each timed by ``trainer.pipeline.timing.timed``:

1. :func:`read_snapshot`: ``seq(lang)`` = S, the users the updater has pending, then the
   counts (``store.snapshot``) as a views table, hidden resources left out;
2. :func:`prepare`: the platform's filters and the utility matrix, the same path as ``recs
   train --views`` (``trainer.data.matrix.filtered_matrix``);
3. ``--evaluate``: held-out metrics from a fit on a split, then the quality gate
   (``trainer.pipeline.quality``);
4. the fit on everything (``trainer.quality.choose.fit_model``: any family, or the choice
   among them) and the model file in ``--model-dir`` (``trainer.models.file``);
5. the publish (``trainer.pipeline.publish``): lists, the switch, the removal of what the new
   model no longer covers, the history record; during an A/B experiment every other arm is
   fitted and publishes its users' lists first (``trainer.pipeline.arms``), and the default
   arm's settings are the run's;
6. :func:`hand_over`: users with views newer than S go to the updater, the users it had
   pending are settled (``store.handover``), and lists cut by take-downs during the publish
   are refilled (``trainer.pipeline.takedown``);
7. the ``published`` :class:`~trainer.pipeline.run.RunResult` with every step's figures.

``--engine spark --spark-io executors`` runs the same steps with the read and the user lists
on Spark executors (``trainer.pipeline.executors``), on one Redis or a Redis Cluster.

Take-downs: hidden resources are left out of the counts read in 1; one hidden during the run
is dropped by the publish scripts themselves, and the lists they cut are recomputed after the
switch, so they stay --top-n long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import redis

from core.errors import InputError
from store.control import read_hidden
from store.experiments import running_synced
from store.groups import GroupSeqs
from store.handover import hand_over_groups, queue_groups
from store.keys import Keys
from store.publish import Publisher
from store.snapshot import read_counts
from store.train_lock import TrainLock
from trainer.data.matrix import (
    FilterReport,
    UtilityMatrix,
    drop_hidden,
    filtered_matrix,
    uncovered_users,
)
from trainer.models.file import save_model
from trainer.models.rp3beta import refuse_spark
from trainer.pipeline import executors
from trainer.pipeline.arms import arm_config, in_arm, publish_arms, refill_arms
from trainer.pipeline.publish import Published, publish
from trainer.pipeline.quality import evaluate_holdout, gate_refuses
from trainer.pipeline.run import RunResult, under_lock
from trainer.pipeline.takedown import refill_lists
from trainer.pipeline.timing import timed
from trainer.quality.choose import fit_model
from trainer.settings import RetrainConfig

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """Step 1's result: what was read from Redis, in this order."""

    seq: int
    """``seq(lang)`` before the counts were read: views up to it are in the model (on a
    cluster the sum of the groups' seqs, what the model hash records)."""
    seqs: GroupSeqs
    """Each slot group's seq read before its counts (one entry, ``seq``, on one Redis): what
    the publish and the hand-over of each group compare against."""
    pending: set
    """Users the updater had pending (settled by the hand-over)."""
    views: pd.DataFrame | None
    """The counts as a views table, hidden resources left out (None once the matrix is
    built)."""


@dataclass
class Prepared:
    """Step 2's result: the filtered utility matrix and what the filters did."""

    matrix: UtilityMatrix
    report: FilterReport
    outside: list[str]
    """Filtered-out users who viewed a resource of ``matrix`` (handed to the updater)."""


def train_language(client: redis.Redis, keys: Keys, lang: str, settings: RetrainConfig, *,
                   publish_options: dict | None = None) -> RunResult:
    """Read, train, save and publish one language under its lock; see the module docstring.
    ``publish_options`` go to :class:`store.publish.Publisher` (chunk sizes, test hooks).

    ``--evaluate``: the metrics come from a model fitted on the training part of a seeded
    hold-out split (``trainer.quality.choose.holdout_metrics``); the published model is then
    fitted on all pairs, because held-out views are real views the published lists should
    learn from. The metrics therefore describe these hyperparameters on this data, not the
    exact factors published (the ``metrics`` JSON says so with ``"fitted_on": "holdout
    split"``)."""
    if settings.spec.model == "rp3beta":
        refuse_spark(settings.spec)  # before the lock: the executors path fits ALS only
    if settings.spec.als.engine == "spark" and settings.spark_io == "executors":
        if running_synced(client, keys, lang) is not None:
            raise InputError(f"{lang}: an experiment is running; its arms are fitted on the "
                             "driver: use --spark-io driver (or stop the experiment)")
        return under_lock(client, keys, lang, settings, lambda lock: executors.steps(
            client, keys, lang, settings, lock))
    return under_lock(client, keys, lang, settings, lambda lock: _steps(
        client, keys, lang, settings, lock, publish_options or {}))


def _steps(client: redis.Redis, keys: Keys, lang: str, settings: RetrainConfig,
           lock: TrainLock, publish_options: dict) -> RunResult:
    """The steps in order, each returning one result; an early ``RunResult`` (empty, gated)
    ends the run with the live model untouched."""
    times: dict[str, float] = {}
    # On a cluster the groups' copies of the experiment first, before any arm's list.
    experiment = running_synced(client, keys, lang)
    if experiment is not None:  # the default arm is the language's model
        settings = arm_config(settings, experiment.default)
    with timed(times, "read"):
        snap = read_snapshot(client, keys, lang)
    if snap.views.empty:
        return RunResult(lang, "empty", {}, f"{lang}: no counts in Redis for this "
                         "language (run `recs consume` or `recs backfill` first)")
    with timed(times, "matrix"):
        prepared = prepare(snap.views, settings, lang)
    snap.views = None  # the matrix holds what is needed; free the table before the fit
    if isinstance(prepared, RunResult):
        return prepared
    matrix = prepared.matrix
    stats: dict = {"source": "redis", "seq": snap.seq, "filters": prepared.report.as_dict()}
    metrics = None
    if settings.evaluate:
        metrics = stats["metrics"] = evaluate_holdout(matrix, settings, lang)
        refused = gate_refuses(client, keys, lang, settings, metrics)
        if refused is not None:
            return RunResult(lang, "gated", {"reason": refused, "metrics": metrics},
                             f"{lang}: not published: {refused}")
    with timed(times, "fit"):
        model, kind = fit_model(matrix, settings.spec, lang, threads=settings.threads,
                                stats=stats)
    with timed(times, "save"):
        path = save_model(model, settings.model_dir)
    lock.check()
    with timed(times, "publish"):
        publisher = Publisher(client, keys, lang, lock=lock, seq=snap.seqs, **publish_options)
        arms, keep, extra = [], None, None
        if experiment is not None:
            arms = publish_arms(client, keys, lang, experiment, matrix, settings, lock=lock,
                                seq=snap.seq, publish_options=publish_options)
            for one in arms:  # covered by their arm: the default's removal keeps them
                publisher.add_users_written(one.publisher.users_written)
            keep = in_arm(experiment, experiment.default.name)
            extra = {"experiment": experiment.id, "arm": experiment.default.name}
        done = publish(client, keys, lang, publisher, model, matrix, settings, snap.seqs,
                       metrics, keep=keep, extra=extra)
        handover = hand_over(client, keys, lang, snap, prepared.outside, publisher)
        refill_arms(client, keys, lang, arms)
    return _published_result(lang, snap, prepared, done, handover, path, times, metrics)


def read_snapshot(client: redis.Redis, keys: Keys, lang: str) -> Snapshot:
    """Step 1: ``seq``, the updater's pending users, then the counts (in that order, so every
    view up to ``seq`` is in the counts read); on a cluster that order per slot group, the
    primaries read in parallel (``store.snapshot.read_counts``)."""
    counts = read_counts(client, keys, lang, with_seq=True, with_pending=True)
    # Hidden resources stay out of the model (their views stay counted for a restore); one
    # hidden later is dropped by the publish scripts themselves.
    views = drop_hidden(counts.views, read_hidden(client, keys, lang))
    return Snapshot(seq=counts.seqs.total, seqs=counts.seqs, pending=counts.pending,
                    views=views)


def prepare(views: pd.DataFrame, settings: RetrainConfig, lang: str) -> Prepared | RunResult:
    """Step 2: the filters and the utility matrix (``trainer.data.matrix.filtered_matrix``,
    as from an extract), or the ``empty`` outcome when the filters leave nothing."""
    matrix, report = filtered_matrix(views, settings.filters,
                                     lambda line: log.info("%s: %s", lang, line))
    if matrix.shape[0] == 0:
        return RunResult(lang, "empty", {"filters": report.as_dict()},
                         f"{lang}: nothing to train on after the filters "
                         f"({report.before['interactions']} user-resource pairs read); "
                         "the published model, if any, stays")
    # Filtered-out users who viewed a resource this model knows: the updater folds them in
    # once it is live (else they get no list until their next view).
    return Prepared(matrix=matrix, report=report, outside=uncovered_users(views, matrix))


def hand_over(client: redis.Redis, keys: Keys, lang: str, snap: Snapshot, outside: list,
              publisher: Publisher):
    """Step 6: the updater gets the uncovered users and those with views newer than
    ``seq``; its pending users are settled. Then the lists cut by take-downs during the run
    are refilled to --top-n from what was just published."""
    queue_groups(client, keys, lang, outside, snap.seqs)
    with timed(publisher.report.seconds, "requeue"):
        handover = hand_over_groups(client, keys, lang, snap.seqs, snap.pending,
                                    publisher.users_written)
    refill_lists(client, keys, lang, publisher.cut["recs"], publisher.cut["similar"])
    return handover


def _published_result(lang: str, snap: Snapshot, prepared: Prepared, done: Published,
                      handover, path, times: dict, metrics: dict | None) -> RunResult:
    """Step 7: the ``published`` outcome, logged."""
    matrix, report, report_of = prepared.matrix, prepared.report, done.publisher.report
    fields = {
        "lang": lang, "version": done.version, "seq": snap.seq,
        "model": done.kind, "users": matrix.shape[0], "resources": matrix.shape[1],
        "nnz": matrix.nnz,
        "views_kept": report.after["views"],
        "views_dropped": {s.name: s.views for s in report.steps},
        "removed_resources": done.removed[0], "removed_users": done.removed[1],
        "spared_users": report_of.spared_users,
        "refolded_users": report_of.refolded_users, "requeued": handover.newer,
        "uncovered_queued": len(prepared.outside),
        "pending": len(snap.pending), "pending_requeued": handover.again,
        "pending_dropped": handover.dropped, "model_file": str(path),
        "publish_steps": report_of.seconds,
        **{f"{k}_seconds": v for k, v in times.items()},
    }
    if metrics is not None:
        fields["metrics"] = metrics
    log.info("trained and published", extra={"fields": fields})
    return RunResult(lang, "published", fields,
                     f"{lang}: published {done.version}: {matrix.shape[0]} users, "
                     f"{matrix.shape[1]} resources, {matrix.nnz} pairs "
                     f"(fit {times['fit']:.1f} s, publish {times['publish']:.1f} s)")
