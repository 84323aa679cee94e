"""A command started while its Redis is still loading its data (a restart with a large
AOF or RDB) waits for it instead of exiting: ``recs update`` restarted together with Redis
must come up, as in the chaos test. A Redis that refuses connections is still one line
and exit 2 (tests/test_cli_errors.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from recs.localstack import RedisServer

pytestmark = pytest.mark.integration

KEYS_TO_LOAD = 3000
DELAY_US = 3000  # per key loaded: 3000 keys take about 9 s to load, longer than redis-py's
# own retries of a LOADING reply (3, backing off up to 1 + 2 + 4 s) would wait


@pytest.fixture
def loading_redis(tmp_path):
    """A redis-server restarted from an RDB of many keys, each loaded slowly, returned
    while it still answers LOADING."""
    server = RedisServer(tmp_path / "redis", appendonly=False,
                         extra_args=("--key-load-delay", str(DELAY_US),
                                     "--loading-process-events-interval-bytes", "1024")).start()
    client = server.client()
    client.eval(f"for i = 1, {KEYS_TO_LOAD} do redis.call('SET', 'k' .. i, i) end", 0)
    client.save()
    client.close()
    server.kill()
    server.start(wait_loaded=False)
    with pytest.raises(redis.exceptions.BusyLoadingError):
        server.client(retry=Retry(NoBackoff(), 0)).ping()
    yield server
    server.stop()


def test_a_command_started_while_redis_loads_waits_for_it(loading_redis):
    done = subprocess.run(
        [sys.executable, "-m", "recs.cli", "hidden", "--lang", "en",
         "--redis-url", loading_redis.url],
        env={**os.environ}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert loading_redis.client().dbsize() == KEYS_TO_LOAD  # it ran after the load
