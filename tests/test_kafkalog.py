"""librdkafka's logs through the project's logging: repeats bounded, an unreachable broker
warned about (issue 9 item 9). The end-to-end case runs the real ``recs consume`` against a
closed port; the rules themselves are checked with a hand-driven clock."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys

from consumers.kafkalog import KafkaLog, RateLimited
from recs.localstack_process import free_port, wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _stats(*states: str) -> str:
    return json.dumps({"brokers": {f"b{i}": {"state": s} for i, s in enumerate(states)}})


def test_repeats_are_logged_once_per_window_with_a_count(caplog):
    clock = Clock()
    limited = RateLimited(logging.getLogger("t.rate"), window=10, clock=clock)
    with caplog.at_level(logging.INFO, "t.rate"):
        for i in range(50):  # the digits differ, the line is the same
            limited.log(logging.INFO, f"connect to 127.0.0.1:1 failed after {i}ms")
            clock.now += 0.1
        limited.log(logging.INFO, "another line")
        clock.now += 10
        limited.log(logging.INFO, "connect to 127.0.0.1:1 failed after 3ms")
    lines = [r for r in caplog.records if r.name == "t.rate"]
    assert [r.getMessage()[:10] for r in lines] == ["connect to", "another li", "connect to"]
    assert lines[-1].fields["repeated"] == 49


def test_warning_after_warn_after_seconds_and_recovery(caplog):
    clock = Clock()
    watch = KafkaLog("consumer", warn_after=30, clock=clock)
    with caplog.at_level(logging.INFO, "recs.kafka"):
        clock.now += 29
        watch.on_stats(_stats("DOWN", "INIT"))
        assert not [r for r in caplog.records if r.levelno == logging.WARNING]
        clock.now += 2
        watch.on_stats(_stats("DOWN"))
        clock.now += 5
        watch.on_stats(_stats("CONNECT"))  # not again before another warn_after
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and warnings[0].fields["for_s"] == 31
        watch.on_stats(_stats("DOWN", "UP"))
        assert "reachable again" in caplog.records[-1].getMessage()
        clock.now += 100
        watch.on_stats(_stats("UP"))
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert watch.settings({})["statistics.interval.ms"] == 5000
    assert "statistics.interval.ms" not in watch.settings({"statistics.interval.ms": "0"})


def test_unreachable_broker_bounded_log_and_a_warning(redis_server, tmp_path):
    """Against a closed port until the warning: a WARNING names the outage, and librdkafka's
    reconnect chatter (tens of lines a second unfiltered) stays a handful of lines."""
    log_path = tmp_path / "consume.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "recs.cli", "consume", "--log-format", "json",
             "--metrics-port", "0", "--broker-warn-after", "2",
             "--kafka-bootstrap-servers", f"127.0.0.1:{free_port()}",
             "--redis-url", redis_server.url],
            env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
        try:
            # Until the warning is out (about 2 s of outage after start-up), not for a
            # fixed time: a loaded machine starts the process later, never sooner.
            wait_until(lambda: b'"no Kafka broker reachable"' in log_path.read_bytes(), 60,
                       "the outage warning")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    lines = log_path.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is ours: none raw
    kafka = [r for r in records if r["logger"] == "recs.kafka"]
    warnings = [r for r in kafka if r["level"] == "warning"]
    assert warnings and warnings[0]["msg"] == "no Kafka broker reachable"
    assert warnings[0]["for_s"] >= 2
    chatter = [r for r in kafka if r["level"] != "warning"]
    # consumer + producer, 2 distinct lines each, once per 10 s window: 4, with slack.
    assert 1 <= len(chatter) <= 8, chatter
