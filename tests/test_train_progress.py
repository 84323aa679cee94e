"""Progress of long steps (core/progress.py) and the trainer's Prometheus metrics
(trainer/pipeline/metrics.py), served over real HTTP on loopback."""

from __future__ import annotations

import io
import logging
import socket
import urllib.request

import pytest

from core.errors import InputError
from core.progress import Progress
from trainer.pipeline.metrics import TrainMetrics


def test_a_terminal_gets_a_bar_ending_in_a_newline():
    out = io.StringIO()
    bar = Progress("en user lists", 200, stream=out, tty=True)
    bar(50)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\r[") and text.endswith("\n")
    assert "en user lists: 50/200 (25%)" in text
    assert "#" * 7 + "." in text  # a quarter of the 30-character bar filled


def test_a_log_gets_periodic_lines(caplog):
    caplog.set_level(logging.INFO, logger="core.progress")
    progress = Progress("backfill en chunks", 4, stream=io.StringIO(), tty=False,
                        interval=3600)
    for done in range(1, 5):
        progress(done)
    progress.close()
    lines = [r.getMessage() for r in caplog.records]
    # The first call logs at once; later ones wait for the interval; close() always logs.
    assert lines == ["backfill en chunks: 1/4 (25%), 0 s", "backfill en chunks: 4/4 (100%), 0 s"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_train_metrics_served_over_http():
    metrics = TrainMetrics()
    metrics.record("en", "published", {"users": 1500, "resources": 250, "read_seconds": 0.5,
                                       "fit_seconds": 2.25, "publish_seconds": 1.0}, 1.7e9)
    metrics.record("es", "failed", {}, 1.7e9 + 5)
    port = free_port()
    metrics.serve(port, addr="127.0.0.1")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'recs_train_step_seconds{lang="en",step="fit"} 2.25' in body
    assert 'recs_train_users{lang="en"} 1500.0' in body
    assert 'recs_train_resources{lang="en"} 250.0' in body
    assert 'recs_train_last_publish_timestamp_seconds{lang="en"} 1.7e+09' in body
    assert 'recs_train_runs_total{lang="es",outcome="failed"} 1.0' in body
    assert 'last_publish_timestamp_seconds{lang="es"}' not in body  # never published
    with pytest.raises(InputError, match="--metrics-port"):
        TrainMetrics().serve(port, addr="127.0.0.1")  # taken: one line, not a traceback


@pytest.mark.integration
def test_every_serves_metrics_of_the_last_run(redis_server, tmp_path):
    import os
    import subprocess
    import sys
    import time

    from tests.helpers import load_counts
    from tests.test_train_online import FLAGS
    from trainer.data.synth import generate

    client = redis_server.client()
    views = generate(n_users=600, n_resources=150, langs=("en",), seed=4).views_for("en")
    load_counts(client, views, "en")
    port = free_port()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "RECS_REDIS_URL": redis_server.url,
           "RECS_METRICS_PORT": str(port)}  # through the environment, like every option
    proc = subprocess.Popen(
        [sys.executable, "-m", "recs.cli", "train", "--every", "3600", "--model-dir",
         str(tmp_path / "models"), *FLAGS], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    try:
        body, deadline = "", time.monotonic() + 90
        while "recs_train_last_publish_timestamp_seconds{" not in body:
            assert time.monotonic() < deadline and proc.poll() is None, body
            time.sleep(0.2)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                              timeout=2).read().decode()
            except OSError:
                continue
        assert 'recs_train_step_seconds{lang="en",step="fit"}' in body
        assert 'recs_train_runs_total{lang="en",outcome="published"} 1.0' in body
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
        client.close()


def test_a_gated_run_is_counted_by_its_outcome():
    from prometheus_client import generate_latest

    from trainer.pipeline.metrics import TrainMetrics

    metrics = TrainMetrics()
    metrics.record("en", "gated", {"reason": "below popularity"}, now=0.0)
    body = generate_latest(metrics.registry).decode()
    assert 'recs_train_runs_total{lang="en",outcome="gated"} 1.0' in body
    assert 'recs_train_last_publish_timestamp_seconds{lang="en"}' not in body
