"""The whole system under seeded faults, end to end (tests/chaos_run.py runs it,
tests/chaos_checks.py holds the invariants; benchmarks/soak.py is the long version).

Two consumers, the impression consumer, two updaters and a trainer (``--every``) run as
real processes against a real redis-server and broker while events (views and impressions)
arrive at a steady rate; every few seconds one service is SIGKILLed and restarted, or Redis
is SIGKILLed (AOF restart) or rolled back to an older snapshot, or the broker is frozen (or,
on Apache Kafka, SIGKILLed and restarted from its data). After the last fault the stream
drains, a retrain on the final counts goes live and the updaters empty their queue; then
counts, impression and click counters, dead letters, every published list and the queue
must be exactly right.
"""

from __future__ import annotations

import pytest

from tests.chaos_run import ChaosConfig, fault_kinds, run_chaos, summary

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_the_whole_system_survives_seeded_faults(redis_server, broker, tmp_path):
    outcome = run_chaos(ChaosConfig(seed=1), redis_server, broker, tmp_path, say=print)
    report = "\n".join(summary(outcome))
    print(report)
    # Every kind of fault happened, and every service was killed at least once.
    assert set(outcome.faults) == set(fault_kinds(broker)) and len(outcome.restarts) == 6, report
    assert outcome.expected.invalid and len(outcome.expected.langs()) == 3, report
    assert outcome.ok, report
