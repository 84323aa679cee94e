"""The scaffolding of ``make demo`` (recs/demo.py): its settings, numbered steps with their
timings, and the ``recs`` processes it runs, each its own process configured only through
``RECS_*`` variables (as in production), logging to ``out/demo/logs/``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recs.localstack import LocalStack
from recs.localstack_process import RecsProcess
from store.keys import Keys

LANGS = ("en", "es")
SHOWN = "en"  # the language whose lists are shown
TOPIC = "resource-views"
STEPS = 9
NEW_VIEWS = 8  # resources of a new subject the shown learner opens in step 7
# A fresh consumer group joins in ~3 s with these instead of librdkafka's 45 s session.
KAFKA_FLAGS = ["--kafka-config", "session.timeout.ms=6000",
               "--kafka-config", "heartbeat.interval.ms=500"]
# The platform's filters, spelled out so the demo shows them (they are also the defaults).
FILTER_FLAGS = ["--min-item-views", "150", "--max-item-views", "20000", "--min-user-views", "5"]


@dataclass(frozen=True)
class DemoSettings:
    """What a demo run is told on its command line."""

    users: int = 5000
    """Learners per language. The platform's filters keep resources with 150+ views, so the
    users must be many enough for a few hundred resources to pass (5000 keep ~390 of 800)."""
    resources: int = 800
    """Resources per language in the synthetic library."""
    seed: int = 7
    """Seeds the synthetic data (the same run gives the same lists)."""
    out: Path = Path("out/demo")
    """Where data, models, logs and the servers' folders go."""
    timeout: float = 120.0
    """Seconds any one wait may take before the demo gives up (and says on what)."""


def shown(path: Path) -> Path:
    """``path`` relative to the working directory when it is under it (shorter to read)."""
    with contextlib.suppress(ValueError):
        return path.relative_to(Path.cwd())
    return path


class Progress:
    """Numbered steps with their timings, printed as they go."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.number = 0
        self.started = time.monotonic()

    @contextlib.contextmanager
    def step(self, title: str) -> Iterator[None]:
        self.number += 1
        print(f"\n[{self.number}/{self.total}] {title}", flush=True)
        t = time.monotonic()
        yield
        print(f"      ({time.monotonic() - t:.1f} s)", flush=True)

    @staticmethod
    def say(text: str = "") -> None:
        for line in text.splitlines() or [""]:
            print(f"      {line}", flush=True)


class DemoRun:
    """What every step of the demo uses: the stack, the processes, the step printer."""

    def __init__(self, settings: DemoSettings) -> None:
        self.s = settings
        # Absolute: redis-server changes into its folder before it opens its log file.
        self.out = settings.out.resolve()
        self.progress = Progress(STEPS)
        self.say = self.progress.say
        self.stack: LocalStack | None = None
        self.processes: list[RecsProcess] = []
        self.keys = Keys()
        self._resources: dict[str, pd.DataFrame] = {}

    # -- helpers -------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment every recs process gets: configuration by RECS_* variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RECS_")}
        env.update({
            "RECS_REDIS_URL": self.stack.redis.url,
            "RECS_KAFKA_BOOTSTRAP_SERVERS": self.stack.broker.bootstrap,
            "RECS_TOPIC": TOPIC,
            "RECS_DLQ_TOPIC": f"{TOPIC}.dlq",
            "RECS_METRICS_PORT": "0",
            "RECS_CLICKS": "true",  # step 8's experiment counts clicks on its lists
            "OPENBLAS_NUM_THREADS": env.get("OPENBLAS_NUM_THREADS", "1"),
        })
        return env

    def start(self, *args: str, log: str | None = None) -> RecsProcess:
        """``recs ARGS`` in the background, logging (JSON lines) to logs/<log or command>.log."""
        path = self.out / "logs" / f"{log or args[0]}.log"
        proc = RecsProcess(list(args), self.env(), path).start()
        self.processes.append(proc)
        return proc

    def recs(self, *args: str) -> str:
        """Run ``recs ARGS`` to completion; its stdout, or RuntimeError with its log."""
        log = self.out / "logs" / f"{args[0]}.log"
        try:
            with open(log, "ab") as err:
                done = subprocess.run([sys.executable, "-m", "recs.cli", *args],
                                      env=self.env(), stdout=subprocess.PIPE, stderr=err,
                                      timeout=self.s.timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"`recs {' '.join(args)}` took over {self.s.timeout} s "
                               f"(see {shown(log)})") from None
        if done.returncode != 0:
            raise RuntimeError(f"`recs {' '.join(args)}` exited with {done.returncode}:\n"
                               + log.read_text(errors="replace")[-2000:])
        return done.stdout.decode()
