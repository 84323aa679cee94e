"""``make demo``: the whole pipeline on this machine in a minute or two, nothing installed but
Python.

It starts the embedded stack (a real redis-server and a Kafka-protocol broker on loopback,
recs/localstack.py), writes a synthetic GoConqr-like extract (trainer/synth.py), streams its
views as events through Kafka into the real ``recs consume``, checks that Redis holds every
view exactly once, runs ``recs train``, shows similar lists and one learner's
recommendations, then sends that learner a few views in a subject new to them and shows
``recs update`` refreshing their recommendations within seconds; then an A/B experiment
(recs/demo_experiment.py): two arms, simulated impressions and clicks, the report. Every
``recs`` command runs as its own process, configured through ``RECS_*`` variables, exactly
as in production.

Everything it writes goes under ``out/demo/`` (data CSVs, model files, each process's log,
the servers' folders); the next run clears those sub-folders. Whatever it started is stopped
on the way out, on an error or Ctrl-C too.

    python -m recs.demo [--users 5000] [--resources 800] [--out out/demo]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from recs.demo_experiment import IMPRESSIONS_TOPIC, experiment_step
from recs.demo_run import (
    FILTER_FLAGS,
    KAFKA_FLAGS,
    LANGS,
    NEW_VIEWS,
    SHOWN,
    TOPIC,
    DemoRun,
    DemoSettings,
    shown,
)
from recs.localstack import LocalStack
from recs.localstack_process import wait_until
from store.client import RecsClient


class Demo(DemoRun):
    """The steps of the demo, in order (the module docstring says what each shows)."""

    # -- the run -------------------------------------------------------------------------

    def run(self) -> None:
        for sub in ("data", "models", "logs", "stack"):
            shutil.rmtree(self.out / sub, ignore_errors=True)
        (self.out / "logs").mkdir(parents=True)
        try:
            self._run()
        finally:
            for proc in self.processes:
                with contextlib.suppress(Exception):
                    proc.stop(timeout=10)
            if self.stack is not None:
                self.stack.stop()
        print(f"\nDone in {time.monotonic() - self.progress.started:.0f} s. Data, model files "
              f"and every process's log are in {shown(self.out)}/.", flush=True)

    def _run(self) -> None:
        step = self.progress.step
        with step("Starting Redis and a Kafka-protocol broker on loopback"):
            # Assigned before start(), so the finally block also stops a half-started stack.
            self.stack = LocalStack(workdir=self.out / "stack")
            self.stack.start()
            self.stack.broker.create_topics({TOPIC: 4, f"{TOPIC}.dlq": 1,
                                             IMPRESSIONS_TOPIC: 4, f"{IMPRESSIONS_TOPIC}.dlq": 1})
            self.say(f"redis-server at {self.stack.redis.url} (AOF on), broker at "
                     f"{self.stack.broker.bootstrap}, topic {TOPIC} with 4 partitions")
        self.redis = self.stack.redis.client()
        self.reader = RecsClient(self.redis)

        with step("Generating a synthetic library and its learners' views"):
            data = self.generate()
        with step("Streaming the views through Kafka into `recs consume`"):
            self.stream(data)
        with step("Training from the counts in Redis: `recs train`"):
            self.train()
        with step(f"Similar resources ({SHOWN}), read from Redis: `recs similar`"):
            self.show_similar(data)
        with step("One learner's recommendations, read from Redis"):
            user, before = self.show_user(data)
        with step("`recs update` keeps learners fresh between retrains"):
            self.update(data, user, before)
        with step("An A/B experiment: ALS against EASE on simulated learners' clicks"):
            experiment_step(self)
        with step("Stopping everything"):
            for proc in self.processes:
                code = proc.stop()
                self.say(f"recs {proc.args[0]}: SIGTERM -> exit code {code}")
            self.processes.clear()

    def generate(self):
        from trainer.data.synth import generate

        data = generate(self.s.users, self.s.resources, langs=LANGS, seed=self.s.seed)
        self.paths = data.write(self.out / "data")
        for lang in LANGS:
            v = data.views[data.views["lang"] == lang]
            self.say(f"{lang}: {v['user_id'].nunique():,} learners, "
                     f"{self.s.resources:,} resources, {len(v):,} (learner, resource) pairs, "
                     f"{int(v['views'].sum()):,} views")
        self.say(f"CSV extracts in {shown(self.out / 'data')}/")
        return data

    def stream(self, data) -> None:
        from consumers.produce import events_from_views, produce_events

        consumer = self.start("consume", *KAFKA_FLAGS)
        t = time.monotonic()
        sent = sum(produce_events(self.stack.broker.bootstrap, TOPIC,
                                  events_from_views(data.views_for(lang), lang))
                   for lang in LANGS)
        self.say(f"produced {sent:,} events (key = user_id) in {time.monotonic() - t:.1f} s; "
                 "recs consume joins its group (a few seconds), then applies them")

        expected = {lang: int(data.views_for(lang)["views"].sum()) for lang in LANGS}
        total = sum(expected.values())
        last_print = [0.0]

        def in_redis() -> bool:
            consumer.check_alive()
            have = {lang: sum(map(int, self.redis.hvals(self.keys.item_views(lang))))
                    for lang in LANGS}
            now = time.monotonic()
            if now - last_print[0] > 2:
                last_print[0] = now
                done = sum(have.values())
                self.say(f"{done:,} / {total:,} views in Redis ({100 * done / total:.0f}%)")
            return have == expected

        wait_until(in_redis, self.s.timeout, "all views counted in Redis", interval=0.25)
        self.say(f"all {total:,} views counted in {time.monotonic() - t:.1f} s")
        self.check_exact(data)
        code = consumer.stop()
        self.processes.remove(consumer)
        self.say(f"stopped recs consume with SIGTERM (exit code {code})")

    def check_exact(self, data) -> None:
        """Every learner's views hash equals the extract: each view counted exactly once."""
        wrong = checked = 0
        for lang in LANGS:
            df = data.views_for(lang)
            users = df["user_id"].unique()
            pipe = self.redis.pipeline(transaction=False)
            for user in users:
                pipe.hgetall(self.keys.views(lang, user))
            got = dict(zip(users, pipe.execute(), strict=True))
            for user, rows in df.groupby("user_id"):
                want = dict(zip(rows["resource_id"].astype(int), rows["views"].astype(int),
                                strict=True))
                have = {int(k): int(v) for k, v in got[user].items()}
                wrong += have != want
                checked += 1
        if wrong:
            raise RuntimeError(f"{wrong} of {checked} learners' counts differ from the extract")
        self.say(f"checked: all {checked:,} learners' hashes "
                 f"({self.keys.views(SHOWN, '<user_id>')}) equal the extract exactly")

    def train(self) -> None:
        out = self.recs("train", "--model-dir", str(self.out / "models"), *FILTER_FLAGS)
        self.say("recs train " + " ".join(FILTER_FLAGS))
        self.say(out.strip())
        info = self.reader.model_info(SHOWN)
        self.say(f"{self.keys.model(SHOWN)}: version {info['version']}, {info['factors']} "
                 f"factors, {info['users']:,} users x {info['items']:,} resources")

    def resources(self, lang: str) -> pd.DataFrame:
        """The resources CSV as ``recs --resources`` reads it (indexed by id)."""
        from trainer.data.extracts import load_resources

        if lang not in self._resources:
            self._resources[lang] = load_resources(self.paths[lang]["resources"])
        return self._resources[lang]

    def show_similar(self, data) -> None:
        resources = self.resources(SHOWN)
        published = {int(i) for i in self.redis.smembers(self.keys.published_items(SHOWN))}
        popular = (data.views_for(SHOWN).groupby("resource_id")["views"].sum()
                   .sort_values(ascending=False))
        popular = popular[popular.index.isin(published)]
        # Typical resources: three subjects from the middle of the popularity ranking (the
        # very top ones are viewed by nearly everyone, so their neighbours are generic).
        shown_subjects: set[str] = set()
        same = listed = 0
        for rid in popular.index[len(popular) // 2:]:
            subject = resources.loc[rid, "subject"]
            if subject in shown_subjects:
                continue
            shown_subjects.add(subject)
            self.say(self.recs("similar", str(rid), "--lang", SHOWN, "-n", "5", "--resources",
                               str(self.paths[SHOWN]["resources"])).rstrip())
            self.say()
            if len(shown_subjects) == 3:
                break
        for rid in published:
            for other, _ in self.reader.similar(SHOWN, rid, 10):
                same += resources.loc[other, "subject"] == resources.loc[rid, "subject"]
                listed += 1
        self.say(f"over all {len(published)} published resources, {100 * same / listed:.0f}% "
                 "of the top-10 neighbours share the resource's subject (nobody told the "
                 "model the subjects)")

    def show_user(self, data) -> tuple[str, list]:
        """A learner of one subject with 8-12 resources viewed (the median of those by views):
        few enough that a handful of new views visibly moves their list."""
        subjects = data.user_subjects[data.user_subjects["lang"] == SHOWN].set_index("user_id")
        counts = data.views_for(SHOWN).groupby("user_id")["views"].agg(["count", "sum"])
        one_subject = subjects.index[~subjects["subjects"].str.contains("|", regex=False)]
        candidates = counts.loc[counts.index.isin(one_subject)]
        candidates = candidates[candidates["count"].between(8, 12)].sort_values("sum")
        ordered = candidates.index[len(candidates) // 2:]
        user = next((u for u in ordered if self.reader.recommend(SHOWN, u, 1)), None)
        if user is None:
            raise RuntimeError("no learner with 8-12 resources has published recs: "
                               "try more --users")
        self.say(f"learner {user}: studies {subjects.loc[user, 'subjects']}, viewed "
                 f"{counts.loc[user, 'count']} resources {counts.loc[user, 'sum']} times")
        before = self.reader.recommend(SHOWN, user, 10)
        self.say(f"ZREVRANGE {self.keys.recs(SHOWN, user)} 0 9 (via store.client.RecsClient):")
        self.say(self.listing(before))
        return user, before

    def listing(self, rows, new_since=None) -> str:
        """Ranked titles; ``+`` marks entries that ``new_since`` (an older list) lacked."""
        resources = self.resources(SHOWN)
        old = {rid for rid, _ in new_since or ()}
        lines = []
        for rank, (rid, score) in enumerate(rows, 1):
            mark = "+" if new_since is not None and rid not in old else " "
            lines.append(f"{mark}{rank:>2}. {resources.loc[rid, 'title']}  {score:.3f}")
        return "\n".join(lines)

    def mix(self, rows) -> str:
        resources = self.resources(SHOWN)
        counts = Counter(resources.loc[rid, "subject"] for rid, _ in rows)
        return ", ".join(f"{subject} {n}" for subject, n in counts.most_common())

    def start_streaming(self):
        """``recs consume`` and ``recs update`` running, the updater's backlog folded in."""
        consumer = self.start("consume", *KAFKA_FLAGS, log="consume-again")
        updater = self.start("update")
        # The trainer handed the updater the learners it filtered out (too few views) and
        # any with views newer than its counts; wait until that backlog is folded in.
        dirty = self.keys.dirty(SHOWN)
        backlog = self.redis.zcard(dirty)

        def drained() -> bool:
            updater.check_alive()
            return self.redis.zcard(dirty) == 0

        wait_until(drained, self.s.timeout, "the updater's backlog folded in", interval=0.2)
        # A consumer that has not joined its group yet would add seconds to the timing below.
        consumer.wait_for_log("partitions assigned", self.s.timeout)
        self.say(f"recs consume and recs update running; update folded in its backlog of "
                 f"{backlog:,} learners")
        return consumer, updater

    def new_subject(self, data, user: str) -> tuple[str, list[int]]:
        """A subject the learner never studied, and its most viewed published resources."""
        resources = self.resources(SHOWN)
        theirs = set(data.user_subjects.set_index(["lang", "user_id"])
                     .loc[(SHOWN, user), "subjects"].split("|"))
        published = {int(i) for i in self.redis.smembers(self.keys.published_items(SHOWN))}
        popular = (data.views_for(SHOWN).groupby("resource_id")["views"].sum()
                   .sort_values(ascending=False))
        by_subject: dict[str, list[int]] = {}
        for rid in popular.index:
            if rid in published:
                by_subject.setdefault(resources.loc[rid, "subject"], []).append(int(rid))
        new_subject = next((s for s, ids in by_subject.items()
                            if s not in theirs and len(ids) >= NEW_VIEWS), None)
        if new_subject is None:
            raise RuntimeError(f"no other subject has {NEW_VIEWS} published resources: "
                               "try more --users")
        return new_subject, by_subject[new_subject][:NEW_VIEWS]

    def update(self, data, user: str, trained: list) -> None:
        from consumers.produce import produce_events

        consumer, updater = self.start_streaming()
        dirty = self.keys.dirty(SHOWN)
        before = self.reader.recommend(SHOWN, user, 10)
        new_subject, picks = self.new_subject(data, user)
        events = [{"user_id": user, "resource_id": rid, "lang": SHOWN, "count": 3,
                   "ts": int(time.time() * 1000)} for rid in picks]
        t = time.monotonic()
        produce_events(self.stack.broker.bootstrap, TOPIC, events)
        self.say(f"sent {len(events)} events: {user} viewed {len(picks)} {new_subject} "
                 "resources, 3 times each")

        views_key = self.keys.views(SHOWN, user)

        def refreshed() -> bool:
            consumer.check_alive()
            updater.check_alive()
            counted = all(self.redis.hget(views_key, str(rid)) for rid in picks)
            pending = self.redis.zscore(dirty, user) is not None
            return counted and not pending and self.reader.recommend(SHOWN, user, 10) != before

        wait_until(refreshed, self.s.timeout, "the learner's recommendations refreshed",
                   interval=0.1)
        after = self.reader.recommend(SHOWN, user, 10)
        self.say(f"{time.monotonic() - t:.1f} s later, consumed and folded in (no retrain); "
                 "resources they viewed are never recommended:")
        self.say(f"before: {self.mix(before)}")
        self.say(self.listing(before))
        self.say(f"after:  {self.mix(after)}   (+ new in the list)")
        self.say(self.listing(after, new_since=before))
        if trained != before:
            self.say("(the first list differs slightly from step 6: recs update re-solved "
                     "this learner against the model once, as it does everyone after a train)")


def main(argv: list[str] | None = None) -> int:
    d = DemoSettings()
    parser = argparse.ArgumentParser(prog="python -m recs.demo", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("--users", type=int, default=d.users, help="learners per language")
    parser.add_argument("--resources", type=int, default=d.resources,
                        help="resources per language")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--out", type=Path, default=d.out, help="output folder")
    parser.add_argument("--timeout", type=float, default=d.timeout,
                        help="seconds any one wait may take")
    a = parser.parse_args(argv)
    settings = DemoSettings(users=a.users, resources=a.resources, seed=a.seed, out=a.out,
                            timeout=a.timeout)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Ctrl-C reaches the servers and recs processes too (one process group), so the demo may
    # first see a dropped connection rather than the KeyboardInterrupt: remember the signal.
    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)
    signal.signal(signal.SIGTERM, on_sigint)  # `kill` too: stop what was started, then exit
    try:
        Demo(settings).run()
    except Exception as exc:
        if interrupted:
            print("\nInterrupted; everything the demo started is stopped.", file=sys.stderr)
            return 130
        if isinstance(exc, RuntimeError | TimeoutError):
            print(f"\ndemo failed: {exc}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print("\nInterrupted; everything the demo started is stopped.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
