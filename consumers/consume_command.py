"""``recs consume``: one member of the views consumer group (consumers/consume.py) run until
SIGTERM/SIGINT; ``recs control`` and ``recs impressions`` run theirs the same way.

The first signal finishes the batch in hand (written, then committed) and leaves the group;
a second exits at once, which is still safe: the offsets in Redis say what is applied, and
the restart resumes from them.
"""

from __future__ import annotations

import logging

from consumers.config import ConsumerConfig
from consumers.consume import StreamConsumer
from core.signals import on_stop_signals

log = logging.getLogger("recs.consume")


def run_until_signalled(consumer: StreamConsumer) -> int:
    """Run ``consumer`` until SIGTERM/SIGINT: the first writes the batch in hand and leaves
    the group; a second exits at once (still safe: the offsets in Redis say what is applied)."""

    def first(name: str) -> None:
        log.info("signal received: writing the batch in hand, then leaving the group",
                 extra={"fields": {"signal": name}})
        consumer.stop()

    on_stop_signals(first)
    return consumer.run()


def cmd_consume(args) -> int:
    """``recs consume``: run one group member until SIGTERM/SIGINT (twice: at once)."""
    return run_until_signalled(StreamConsumer(ConsumerConfig.from_args(args)))
