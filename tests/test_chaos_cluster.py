"""The whole system on a Redis Cluster under seeded faults (tests/chaos_cluster.py runs it):
two consumers (``--clicks``), the impression consumer, two updaters, a trainer (``--every``)
and the HTTP server on the loopback
cluster, primaries SIGKILLed (their replicas promoted), slots resharded, services killed,
the broker frozen, resources hidden and unhidden and users forgotten meanwhile; then counts,
dead letters, every published list, take-downs, forgets and the queue must be exactly right,
and the server never answered 500."""

from __future__ import annotations

import pytest

from tests.chaos_cluster import cluster_fault_kinds, run_cluster_chaos
from tests.chaos_run import ChaosConfig, summary

pytestmark = pytest.mark.integration


@pytest.mark.timeout(600)
def test_the_whole_system_survives_seeded_faults_on_a_cluster(fresh_cluster, broker, tmp_path):
    outcome, statuses = run_cluster_chaos(ChaosConfig(seed=2), fresh_cluster, broker,
                                          tmp_path, say=print)
    report = "\n".join([*summary(outcome), f"serve answered: {dict(statuses)}"])
    print(report)
    assert set(outcome.faults) == set(cluster_fault_kinds(broker)), report
    # Every service killed once at least: 2 consume, impressions, 2 update, train, serve.
    assert len(outcome.restarts) == 7 and outcome.faults["kill_primary"] >= 1, report
    assert outcome.expected.forgotten and outcome.expected.invalid, report
    assert outcome.ok, report
    assert statuses[200] > 0 and set(statuses) <= {0, 200, 404, 503}, report
