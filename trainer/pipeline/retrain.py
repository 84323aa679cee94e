"""The online commands: retrain from the Redis counts and publish; read what was published.

``recs train [--lang L] [--every SECONDS]`` (:func:`train_online`): for each language, under
the language's trainer lock (:class:`store.publish.TrainLock`), :func:`train_language` runs
these steps, each a function returning one result, each timed by ``trainer.pipeline.timing.timed``:

1. :func:`read_snapshot`: ``seq(lang)`` = S, the users the updater has pending, then the
   counts (:mod:`store.snapshot`) into the offline path's views table;
2. :func:`prepare`: the platform's filters and the utility matrix, the same path as ``recs
   train --views`` (``trainer.data.matrix.filtered_matrix``);
3. :func:`evaluate_online` (``--evaluate``): held-out metrics from a fit on a split
   (``trainer.quality.choose.holdout_metrics``), then the quality gate;
4. the fit on everything (``trainer.quality.choose.fit_model``: ALS, EASE or the blend) and the
   model file in ``--model-dir``, as the offline path does;
5. :func:`publish` (:class:`store.publish.Publisher`): similar lists, then every user's recs
   and factors (the publisher draws the scored batches in a background thread while it
   waits on Redis, so the scoring and the Redis writes overlap), then the switch of the
   model hash and item factors, then removal of what the new model no longer covers;
6. :func:`hand_over`: users with views newer than S go to the updater, and the users it
   had pending are settled (``requeue_touched``);
7. the ``published`` :class:`RunResult` with every step's figures.

``--engine spark --spark-io executors`` runs the same steps with the read and the user lists
on Spark executors (``trainer.pipeline.executors``).

Take-downs (trainer/takedown.py): hidden resources are left out of the counts read in 1;
one hidden during the run is dropped by the publish scripts themselves, and the lists they
cut are recomputed after the switch, so they stay --top-n long.

A second trainer for the same language waits ``--lock-wait`` seconds (default 0) for the
lock, then skips the language with a log line; a skip is not an error (exit code 0), since
the other trainer is publishing the same counts. ``--every`` repeats with +-10% jitter (so
replicas drift apart); a failed run is logged and retried next round, and a round that
trained nothing (no counts yet) is retried within a minute. The first SIGTERM or
SIGINT lets the language in progress finish (its publish is the unit that must complete)
and starts nothing new; a second one stops at once (the lock is released, and a publish cut
short leaves every list whole and the old model live).

``recs similar ID --lang L`` / ``recs recommend USER --lang L`` read the published lists
(:class:`store.client.RecsClient`) and print them like the ``--model`` path.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import redis

from core.errors import InputError, NotPublishedError, RecsError
from core.signals import StopFlag, on_stop_signals
from store.client import RecsClient
from store.connection import connect
from store.control import drop_hidden, read_hidden
from store.keys import Keys
from store.publish import (
    Lists,
    LockLost,
    Publisher,
    TrainLock,
    queue_for_updater,
    requeue_touched,
)
from store.snapshot import read_languages, read_pending, read_seq, read_views
from trainer.config import FilterConfig, TrainConfig, check_lang
from trainer.data.matrix import FilterReport, UtilityMatrix, filtered_matrix, uncovered_users
from trainer.models.als import ALSModel
from trainer.pipeline import publish as online_models
from trainer.pipeline.takedown import refill_lists
from trainer.pipeline.timing import timed
from trainer.quality.choose import ModelSpec, fit_model, holdout_metrics
from trainer.quality.gate import gate_refuses, online_spec, record_history, with_tuned
from trainer.scoring.search import ScoringConfig

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

MAX_TOP_N = 1000
"""Longest published list: these are short lists for apps, not whole rankings."""
NOTHING_YET_RETRY = 60.0
"""Seconds ``--every`` waits after a round that trained nothing, if shorter than --every."""


@dataclass(frozen=True)
class OnlineSettings:
    """Everything one ``recs train`` (online) run needs, checked once at the boundary."""

    filters: FilterConfig = field(default_factory=FilterConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    top_n: int = 20
    """Length of the published similar and recommendation lists."""
    model_dir: str = "models"
    """Where the model file of each run is written."""
    evaluate: bool = False
    """Fit on a hold-out split first and store the metrics in the model hash."""
    test_fraction: float = 0.2
    """Share of (user, resource) pairs held out for ``evaluate``."""
    threads: int = 0
    """implicit's training threads (0 = all cores)."""
    lock_wait: float = 0.0
    """Seconds to wait for another trainer's lock before skipping the language."""
    lock_ttl: float = 60.0
    """Lock expiry; renewed every third of it while this trainer works."""
    spec: ModelSpec = field(default_factory=ModelSpec)
    """Which model (``--model``) and each model's settings; ``spec.als`` is ``train``."""
    explicit: frozenset = frozenset()
    """Options the user gave (flag or RECS_* variable): tuned settings never override them."""
    gate_margin: float = 0.05
    """With ``evaluate``: refuse a model more than this fraction below the live one."""
    force: bool = False
    """Publish even when the quality gate refuses."""

    @property
    def model_spec(self) -> ModelSpec:
        """``spec`` with ``train`` as its ALS settings (``train`` is the one home of those)."""
        return replace(self.spec, als=self.train)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    """Exact or approximate scoring of the published lists (``trainer.scoring.search``)."""
    metrics_port: int = 9102
    """Prometheus port while repeating (``--every``); 0 = off."""
    metrics_address: str = "0.0.0.0"
    """Address the metrics server listens on (the consumer's and updater's default, and why,
    is in the README)."""
    spark_io: str = "driver"
    """``--engine spark`` only: ``executors`` reads the counts and writes the user lists on
    Spark executors (``trainer.pipeline.executors``); ``driver`` does both here."""
    redis_url: str = field(default="", repr=False)
    """For Spark executors, which connect to Redis themselves (may hold a password)."""

    @classmethod
    def from_args(cls, args) -> OnlineSettings:
        top_n = int(args.top_n)
        if not 1 <= top_n <= MAX_TOP_N:
            raise InputError(f"--top-n must be between 1 and {MAX_TOP_N}")
        if args.evaluate and not 0.0 < args.test_fraction < 1.0:
            raise InputError("--test-fraction must be between 0 and 1")
        lock_wait, lock_ttl = float(args.lock_wait), float(args.lock_ttl)
        if lock_wait < 0 or lock_ttl < 1:
            raise InputError("--lock-wait must be >= 0 and --lock-ttl >= 1 second")
        spec = online_spec(args)
        return cls(filters=FilterConfig.from_args(args), train=spec.als,
                   top_n=top_n, model_dir=args.model_dir, evaluate=bool(args.evaluate),
                   test_fraction=float(args.test_fraction),
                   threads=int(args.threads), lock_wait=lock_wait,
                   lock_ttl=lock_ttl, spec=spec, explicit=getattr(args, "explicit", frozenset()),
                   gate_margin=float(args.gate_margin), force=bool(args.force),
                   scoring=ScoringConfig.from_args(args),
                   metrics_port=int(args.metrics_port), metrics_address=args.metrics_address,
                   spark_io=getattr(args, "spark_io", "driver"),
                   redis_url=getattr(args, "redis_url", ""))


@dataclass
class RunResult:
    """What happened to one language in one run."""

    lang: str
    outcome: str
    """``published``, ``locked`` (another trainer holds the lock) or ``empty`` (nothing to
    train on after the filters; the old model, if any, stays)."""
    fields: dict = field(default_factory=dict)
    message: str = ""


# -- one language ---------------------------------------------------------------------------


@dataclass
class Snapshot:
    """Step 1's result: what was read from Redis, in this order."""

    seq: int
    """``seq(lang)`` before the counts were read: views up to it are in the model."""
    pending: set
    """Users the updater had pending (settled by the hand-over)."""
    views: pd.DataFrame | None
    """The counts as the offline path's views table, hidden resources left out (None once
    the matrix is built)."""


@dataclass
class Prepared:
    """Step 2's result: the filtered utility matrix and what the filters did."""

    matrix: UtilityMatrix
    report: FilterReport
    outside: list[str]
    """Filtered-out users who viewed a resource of ``matrix`` (handed to the updater)."""


@dataclass
class Published:
    """Step 5's result: the live version and the publisher's account of the run."""

    version: str
    kind: str
    publisher: Publisher
    removed: tuple[int, int]
    """(resources, users) whose lists the new model no longer covers, removed."""


def train_language(client: redis.Redis, keys: Keys, lang: str, settings: OnlineSettings, *,
                   publish_options: dict | None = None) -> RunResult:
    """Read, train, save and publish one language under its lock; see the module docstring.
    ``publish_options`` go to :class:`store.publish.Publisher` (chunk sizes, test hooks).

    ``--evaluate``: the metrics come from a model fitted on the training part of a seeded
    hold-out split (``trainer.quality.choose.holdout_metrics``); the published model is then fitted
    on all pairs, because held-out views are real views the published lists should learn
    from. The metrics therefore describe these hyperparameters on this data, not the exact
    factors published (the ``metrics`` JSON says so with ``"fitted_on": "holdout split"``)."""
    if settings.train.engine == "spark" and settings.spark_io == "executors":
        from trainer.pipeline.executors import train_language_executors

        return train_language_executors(client, keys, lang, settings)
    lock = TrainLock(client, keys.train_lock(lang), ttl=settings.lock_ttl)
    if not lock.acquire(wait=settings.lock_wait):
        return locked_result(lock, lang)
    try:
        with lock.kept_alive():
            return _steps(client, keys, lang, settings, lock, publish_options or {})
    except LockLost as exc:
        log.error("%s: %s", lang, exc)
        raise
    finally:
        lock.release()


def locked_result(lock: TrainLock, lang: str) -> RunResult:
    """The ``locked`` outcome: another trainer holds ``lock``."""
    holder = lock.holder()
    log.info("skipped: another trainer is publishing this language",
             extra={"fields": {"lang": lang, "holder": holder}})
    return RunResult(lang, "locked", {"holder": holder},
                     f"{lang}: skipped, another trainer ({holder}) holds the lock")


def _steps(client: redis.Redis, keys: Keys, lang: str, settings: OnlineSettings,
           lock: TrainLock, publish_options: dict) -> RunResult:
    """The steps in order, each returning one result; an early ``RunResult`` (empty, gated)
    ends the run with the live model untouched."""
    times: dict[str, float] = {}
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
        metrics = stats["metrics"] = evaluate_online(matrix, settings, lang)
        refused = gate_refuses(client, keys, lang, settings, metrics)
        if refused is not None:
            return refused
    with timed(times, "fit"):
        model, kind = fit_model(matrix, settings.model_spec, lang, threads=settings.threads,
                                stats=stats)
    with timed(times, "save"):
        path = model.save(settings.model_dir)
    lock.check()
    with timed(times, "publish"):
        publisher = Publisher(client, keys, lang, lock=lock, seq=snap.seq, **publish_options)
        done = publish(client, keys, lang, publisher, model, kind, matrix, settings, snap.seq,
                       metrics)
        handover = hand_over(client, keys, lang, snap, prepared.outside, publisher)
    return _published_result(lang, snap, prepared, done, handover, path, times, metrics)


def read_snapshot(client: redis.Redis, keys: Keys, lang: str) -> Snapshot:
    """Step 1: ``seq``, the updater's pending users, then the counts (in that order, so every
    view up to ``seq`` is in the counts read)."""
    seq = read_seq(client, keys, lang)
    pending = read_pending(client, keys, lang)
    # Hidden resources stay out of the model (their views stay counted for a restore); one
    # hidden later is dropped by the publish scripts themselves.
    views = drop_hidden(read_views(client, keys, lang), read_hidden(client, keys, lang))
    return Snapshot(seq=seq, pending=pending, views=views)


def prepare(views: pd.DataFrame, settings: OnlineSettings, lang: str) -> Prepared | RunResult:
    """Step 2: the filters and the utility matrix (``trainer.data.matrix.filtered_matrix``, as
    offline), or the ``empty`` outcome when the filters leave nothing."""
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


def evaluate_online(matrix: UtilityMatrix, settings: OnlineSettings, lang: str) -> dict:
    """Step 3 (``--evaluate``): held-out metrics of these settings on this data."""
    result, _ = holdout_metrics(matrix, settings.model_spec, settings.test_fraction, k=10,
                                lang=lang, threads=settings.threads)
    result["test_fraction"] = settings.test_fraction
    result["fitted_on"] = "holdout split"
    log.info("held-out metrics", extra={"fields": {"lang": lang, **result}})
    return result


def publish(client: redis.Redis, keys: Keys, lang: str, publisher: Publisher, model,
            kind: str, matrix: UtilityMatrix, settings: OnlineSettings, seq: int,
            metrics: dict | None) -> Published:
    """Step 5: the lists, the switch, the removal of what the model no longer covers, and
    the quality history. ALS here; EASE and the blend in ``trainer.pipeline.publish``."""
    if kind == "als":
        _write_lists(publisher, model, settings)
        info = model_info(model, settings, seq, metrics)
        version = publisher.switch(info, model.items.ids, model.item_factors,
                                   matrix.item_totals())
    else:
        info, version = online_models.publish(client, keys, lang, publisher, model, kind,
                                              settings, seq, metrics, matrix.item_totals())
    online_models.after_switch(client, keys, lang, version)
    removed = publisher.remove_uncovered(seq)
    if metrics is not None:
        record_history(client, keys, lang, metrics, {**info, "version": version},
                       settings.model_spec)
    return Published(version=version, kind=kind, publisher=publisher, removed=removed)


def hand_over(client: redis.Redis, keys: Keys, lang: str, snap: Snapshot, outside: list,
              publisher: Publisher):
    """Step 6: the updater gets the uncovered users and those with views newer than
    ``seq``; its pending users are settled. Then the lists cut by take-downs during the run
    are refilled to --top-n from what was just published."""
    queue_for_updater(client, keys, lang, outside, snap.seq)
    with timed(publisher.report.seconds, "requeue"):
        handover = requeue_touched(client, keys, lang, snap.seq, snap.pending,
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


def _write_lists(publisher: Publisher, model: ALSModel, settings: OnlineSettings) -> None:
    """Similar lists then user lists, scored as ``settings.scoring`` says, with progress."""
    from core.progress import Progress
    from trainer.scoring import search as scoring

    scorer = scoring.Scorer(model.item_factors, settings.scoring)
    log.info("scoring", extra={"fields": {"lang": model.lang, "similar": scorer.similar_method,
                                          "recs": scorer.recs_method}})
    items = Progress(f"{model.lang} similar lists", len(model.items))
    publisher.write_similar(_counted(scoring.similar_batches(model, settings.top_n, scorer),
                                     items))
    items.close()
    users = Progress(f"{model.lang} user lists", len(model.users))
    publisher.write_users(_counted(scoring.user_batches(model, settings.top_n, scorer), users))
    users.close()


def _counted(batches: Iterator[Lists], progress) -> Iterator[Lists]:
    done = 0
    for batch in batches:
        yield batch
        done += len(batch.ids)
        progress(done)


def model_info(model: ALSModel, settings: OnlineSettings, seq: int,
               metrics: dict | None) -> dict:
    """The model hash fields (CONTRACT.md section 2), ``version`` added by the publisher."""
    c, f = model.config, settings.filters
    info = {
        "model": "als", "trained_at": model.trained_at, "factors": c.factors,
        "regularization": c.regularization, "iterations": c.iterations, "alpha": c.alpha,
        "scaling": c.scaling, "seed": c.seed, "users": model.user_factors.shape[0],
        "items": model.item_factors.shape[0], "nnz": int(model.seen.nnz),
        "top_n": settings.top_n, "seq": seq, "min_item_views": f.min_item_views,
        "max_item_views": f.max_item_views, "min_user_views": f.min_user_views,
        "train_seconds": model.stats.get("train_seconds", 0.0), "engine": c.engine,
    }
    if metrics is not None:
        info["metrics"] = json.dumps(metrics, sort_keys=True)
    return info


# -- the command ------------------------------------------------------------------------------


def _second_signal(signum: int) -> None:
    # Unwinds through the lock's ``finally``: a second signal stops now and frees the lock.
    raise KeyboardInterrupt


def _run(client: redis.Redis, keys: Keys, lang: str | None, settings: OnlineSettings,
         strict: bool, stop: StopFlag, metrics=None) -> tuple[int, int]:
    """One pass over the languages; returns (exit code, languages published or skipped for
    another trainer). ``strict`` (a single run): a language asked for by name with nothing
    to train on is an error. ``stop`` set (a signal) ends the pass after the language in
    progress."""
    langs = [lang] if lang else read_languages(client, keys)
    if not langs:
        message = (f"no counts in Redis ({keys.langs} is empty): run `recs consume` or "
                   "`recs backfill` first")
        if strict:
            raise InputError(message)
        log.warning(message)
        return 0, 0
    failed = busy = 0
    for one in langs:
        if stop.is_set():
            log.info("stopping before %s", one)
            break
        try:
            result = train_language(client, keys, one, with_tuned(client, keys, one, settings))
        except InputError as exc:  # e.g. nothing left to train on
            if strict and lang:
                raise
            log.error("%s: %s", one, exc)
            failed += 1
            _record(metrics, one, "failed", {})
            continue
        except LockLost:
            failed += 1
            _record(metrics, one, "failed", {})
            continue
        _record(metrics, one, result.outcome, result.fields)
        if result.outcome == "empty":
            if strict and lang:
                raise InputError(result.message)
            log.warning(result.message)
        else:
            busy += 1
        print(result.message, flush=True)
    return (1 if failed else 0), busy


def _record(metrics, lang: str, outcome: str, fields: dict) -> None:
    if metrics is not None:
        metrics.record(lang, outcome, fields, time.time())


def train_online(args) -> int:
    """``recs train [--lang L] [--every SECONDS]``: retrain from Redis and publish."""
    if args.lang:
        check_lang(args.lang)
    if args.every < 0:
        raise InputError("--every must be 0 (run once) or a number of seconds")
    settings = OnlineSettings.from_args(args)
    keys = Keys(args.prefix)
    client = connect(args.redis_url)
    stop = StopFlag()

    def first(name: str) -> None:
        log.info("%s: stopping after the current run (again to stop now)", name)
        stop.set()

    restore = on_stop_signals(first, _second_signal)
    try:
        if not args.every:
            return _run(client, keys, args.lang, settings, True, stop)[0]
        return _repeat(client, keys, args.lang, settings, float(args.every), stop)
    except redis.ConnectionError as exc:
        raise RecsError(f"cannot reach Redis at {args.redis_url}: {exc}") from None
    finally:
        restore()
        client.close()


def _repeat(client: redis.Redis, keys: Keys, lang: str | None, settings: OnlineSettings,
            every: float, stop: StopFlag) -> int:
    from trainer.pipeline.metrics import TrainMetrics

    metrics = TrainMetrics()
    metrics.serve(settings.metrics_port, settings.metrics_address)
    rng = random.Random()
    runs = 0
    while not stop.is_set():
        started = time.monotonic()
        busy = 0
        try:
            _, busy = _run(client, keys, lang, settings, False, stop, metrics)
        except Exception:  # a long-running service logs and tries again next round
            log.exception("run failed; trying again in about %s s", every)
        runs += 1
        pause = every * rng.uniform(0.9, 1.1)
        if not busy:
            # Nothing trained (no counts yet, Redis away): a fresh deployment should not
            # wait a whole period for its first model.
            pause = min(pause, NOTHING_YET_RETRY)
        pause -= time.monotonic() - started
        if pause > 0:
            stop.wait(pause)
    log.info("stopped", extra={"fields": {"runs": runs}})
    return 0


# -- reading what was published ----------------------------------------------------------------


def _published(reader: RecsClient, lang: str) -> dict:
    info = reader.model_info(check_lang(lang))
    if info is None:
        raise NotPublishedError(f"no model published for {lang!r} in Redis yet: run "
                                f"`recs train --lang {lang}` first")
    return info


def _show(args, lookup, heading, also: tuple[int, ...] = ()) -> int:
    """Run ``lookup(reader, info, n)`` against the published model and print its rows,
    with titles when ``--resources`` is given. ``heading(resources)`` titles the list."""
    from trainer.commands.present import list_length, render
    from trainer.data.extracts import load_resources

    n = list_length(args)
    reader = RecsClient(connect(args.redis_url), prefix=args.prefix)
    try:
        rows = lookup(reader, _published(reader, args.lang), n)
        # Without --resources, the details `recs resources load` put in Redis (if any).
        resources = (load_resources(args.resources) if args.resources
                     else _details_table(reader, args.lang, [*also, *(r[0] for r in rows)]))
    finally:
        reader.redis.close()
    print(render(rows, resources, as_json=args.json, heading=heading(resources)))
    return 0


def _details_table(reader: RecsClient, lang: str, ids: list[int]):
    """The loaded details of ``ids`` as ``load_resources`` would give them; None when none
    are loaded, so the list shows ids as it does without a resources file."""
    import pandas as pd

    details = reader.details(lang, ids)
    if not details:
        return None
    return pd.DataFrame.from_dict(details, orient="index").rename_axis("id")


def similar_online(args) -> int:
    """``recs similar RESOURCE_ID --lang L``."""
    from trainer.commands.present import describe

    try:
        rid = int(str(args.resource_id).strip())
    except ValueError:
        raise InputError(f"resource id {args.resource_id!r} is not an integer") from None

    meaning = {"ease": "EASE weight", "blend": "cosine, ALS part"}
    kind = ["cosine"]

    def lookup(reader: RecsClient, info: dict, n: int) -> list:
        kind[0] = meaning.get(info.get("model", "als"), "cosine")
        rows = reader.similar(args.lang, rid, n)
        if not rows:
            raise InputError(f"unknown resource {rid}: not among the {info.get('items')} "
                             f"resources of the published {args.lang!r} model (filtered out, "
                             "or never seen)")
        return rows

    return _show(args, lookup,
                 lambda resources: f"Similar to {describe(rid, resources)} ({kind[0]}):",
                 (rid,))


def recommend_online(args) -> int:
    """``recs recommend USER_ID --lang L``."""

    def lookup(reader: RecsClient, info: dict, n: int) -> list:
        rows = reader.recommend(args.lang, args.user_id, n)
        if not rows and not reader.redis.exists(reader.keys.factors(args.lang, args.user_id)):
            raise InputError(f"unknown user {args.user_id}: not among the {info.get('users')} "
                             f"users of the published {args.lang!r} model (filtered out, or "
                             "never seen)")
        return rows

    return _show(args, lookup, lambda resources: f"For user {args.user_id} (not yet viewed):")
