"""``recs update``: the updater loop (consumers/updater.py) as a service with metrics and
signal handling. First SIGTERM/SIGINT: the batch in hand is finished; the leases of a batch
cut short by a second one expire, so nobody's update is lost."""

from __future__ import annotations

import logging

from consumers.config import UpdaterConfig
from consumers.metrics import UpdaterMetrics
from consumers.updater import Updater
from core.signals import StopFlag, on_stop_signals
from store.connection import connect_checked

log = logging.getLogger("recs.updater")


def cmd_update(args) -> int:
    config = UpdaterConfig.from_args(args)
    client = connect_checked(config.redis_url)
    metrics = UpdaterMetrics()
    metrics.serve(config.metrics_port, config.metrics_address)
    stop = StopFlag()

    def first(name: str) -> None:
        # The leases of a batch cut short by a second signal expire: nobody's update is lost.
        log.info("stopping after the current batch", extra={"fields": {"signal": name}})
        stop.set()

    on_stop_signals(first)
    updater = Updater(client, config, metrics)
    log.info("updater started", extra={"fields": {
        "langs": ",".join(config.langs) or "all", "batch_size": config.batch_size,
        "top_n": config.top_n, "lease_seconds": config.lease_seconds,
        "metrics_port": config.metrics_port}})
    updater.run(stop)
    log.info("updater stopped", extra={"fields": {"updated": updater.updated}})
    return 0
