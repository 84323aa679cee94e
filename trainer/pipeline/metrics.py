"""Prometheus metrics of ``recs train --every``, in a registry of their own (like the
consumer's and the updater's): what the last run of each language did and when a language
last published successfully, so an alert can fire on a trainer that stopped publishing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from core.metrics import serve_metrics


class TrainMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.step_seconds = Gauge(
            "recs_train_step_seconds", "seconds each step of the last run of a language took",
            ["lang", "step"], registry=r)
        self.users = Gauge("recs_train_users", "users in the last published model",
                           ["lang"], registry=r)
        self.resources = Gauge("recs_train_resources",
                               "resources in the last published model", ["lang"], registry=r)
        self.last_publish = Gauge(
            "recs_train_last_publish_timestamp_seconds",
            "Unix time of the last successful publish of a language", ["lang"], registry=r)
        self.runs = Counter("recs_train_runs", "runs per language by outcome (published, "
                            "locked, empty, failed)", ["lang", "outcome"], registry=r)

    def record(self, lang: str, outcome: str, fields: dict, now: float) -> None:
        """Account for one language's run (``fields``: ``RunResult.fields``)."""
        self.runs.labels(lang, outcome).inc()
        if outcome != "published":
            return
        for key, value in fields.items():
            if key.endswith("_seconds") and isinstance(value, int | float):
                self.step_seconds.labels(lang, key[:-len("_seconds")]).set(value)
        self.users.labels(lang).set(fields.get("users", 0))
        self.resources.labels(lang).set(fields.get("resources", 0))
        self.last_publish.labels(lang).set(now)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Expose /metrics on ``port`` (a daemon thread); 0 means no server."""
        serve_metrics(self.registry, port, addr)
