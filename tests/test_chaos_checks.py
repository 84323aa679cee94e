"""The chaos test's invariants (tests/chaos_checks.py) hold on a system that did everything
right, and each one catches the fault it is about: so a green chaos test means something.

The state is made in-process, without Kafka: counts through the consumer's write path, a
retrain through the trainer's, the queue drained by the updater.
"""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from consumers.updater import Updater, UpdaterConfig
from store.counts import Counts
from store.keys import Keys
from tests.chaos_checks import Expected, Settings, check_all
from trainer.config import AlsConfig, ModelSpec
from trainer.data.synth import generate
from trainer.pipeline.retrain import train_language
from trainer.settings import RetrainConfig

pytestmark = pytest.mark.integration

KEYS = Keys()
SETTINGS = Settings()


def failing(client, expected, dead, model_dir) -> set[str]:
    return {c.name.split()[0] for c in check_all(client, expected, dead, model_dir, SETTINGS)
            if not c.ok}


def test_the_checks_pass_on_a_settled_system_and_catch_each_fault(redis_client, tmp_path):
    views = generate(n_users=300, n_resources=60, langs=("en",), seed=5).views_for("en")
    expected = Expected()
    batch: dict[str, dict[int, int]] = {}
    for user, rid, n in zip(views["user_id"], views["resource_id"], views["views"],
                            strict=True):
        event = {"user_id": str(user), "resource_id": int(rid), "lang": "en", "count": int(n),
                 "ts": 1_764_201_600_000}
        expected.add(("en", str(user), int(rid), int(n)), orjson.dumps(event))
        batch.setdefault(str(user), {})[int(rid)] = int(n)
    expected.invalid = {b"bad-1", b"bad-2"}
    dead = [(b"bad-1", b"not_json"), (b"bad-2", b"invalid_count"), (b"bad-2", b"invalid_count")]
    assert Counts(redis_client, KEYS).apply(KEYS.offsets("g", "t"), [], {"en": batch}) == {}
    settings = RetrainConfig(filters=SETTINGS.filters, top_n=SETTINGS.top_n,
                              model_dir=str(tmp_path),
                              spec=ModelSpec("als", als=AlsConfig(factors=SETTINGS.factors,
                                                iterations=SETTINGS.iterations)))
    assert train_language(redis_client, KEYS, "en", settings).outcome == "published"
    Updater(redis_client, UpdaterConfig(metrics_port=0, top_n=SETTINGS.top_n)).drain()
    assert failing(redis_client, expected, dead, tmp_path) == set()

    assert failing(redis_client, expected, dead[1:], tmp_path) == {"dead-letter"}
    user, counts = next(iter(batch.items()))
    redis_client.hincrby(KEYS.views("en", user), next(iter(counts)), 1)
    assert failing(redis_client, expected, dead, tmp_path) == {"counts"}
    redis_client.hincrby(KEYS.views("en", user), next(iter(counts)), -1)

    # A viewed resource slipped into a list; a list cut short; stale factors.
    ids = {m.decode() for m in redis_client.smembers(KEYS.published_users("en"))}
    a, b, c = sorted(ids)[:3]
    redis_client.zadd(KEYS.recs("en", a), {next(iter(batch[a])): 99.0})
    redis_client.zpopmin(KEYS.recs("en", b))
    raw = redis_client.get(KEYS.factors("en", c))
    redis_client.set(KEYS.factors("en", c), (np.frombuffer(raw, "<f4") * 1.01).tobytes())
    problems = next(ch for ch in check_all(redis_client, expected, dead, tmp_path, SETTINGS)
                    if ch.name.startswith("user"))
    assert problems.count == 3, problems.line()

    item = redis_client.srandmember(KEYS.published_items("en")).decode()
    redis_client.delete(KEYS.similar("en", item))
    redis_client.zadd(KEYS.dirty("en"), {a: 1})
    assert failing(redis_client, expected, dead, tmp_path) == {"user", "similar", "updater"}
    (tmp_path / "cf_ALSModel_other_en.dump").write_bytes(b"")
    assert "live" in failing(redis_client, expected, dead, tmp_path)
