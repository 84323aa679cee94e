"""The read client apps use (store.client.RecsClient), against keys laid out as published."""

import json

import pytest
import redis

from store.client import RecsClient, Scored
from store.keys import Keys

pytestmark = pytest.mark.integration


def _publish_by_hand(client, prefix="recs"):
    keys = Keys(prefix)
    client.zadd(keys.similar("en", 489473), {"512001": 0.93, "77310": 0.91, "1200": 0.5})
    client.zadd(keys.recs("en", "8b0c2f0e-u"), {"300": 2.5, "301": 1.25})
    client.hset(keys.model("en"), mapping={
        "version": "v1", "trained_at": "2025-11-27T10:00:00Z", "factors": "40",
        "regularization": "0.01", "iterations": "50", "alpha": "50.0", "users": "3",
        "items": "4", "nnz": "9", "scaling": "log",
        "metrics": json.dumps({"k": 10, "model": {"precision": 0.2}}),
    })


def test_lists_come_back_best_first_as_plain_values(redis_server, redis_client):
    _publish_by_hand(redis_client)
    recs = RecsClient(redis_server.url)
    assert recs.similar("en", 489473, n=2) == [(512001, pytest.approx(0.93)),
                                              (77310, pytest.approx(0.91))]
    got = recs.recommend("en", "8b0c2f0e-u", n=10)
    assert got == [Scored(300, 2.5), Scored(301, 1.25)]
    assert isinstance(got[0].resource_id, int) and isinstance(got[0].score, float)
    assert recs.similar("en", "489473", n=1)[0].resource_id == 512001


def test_model_info_types_the_fields(redis_client):
    _publish_by_hand(redis_client)
    info = RecsClient(redis_client).model_info("en")
    assert info["version"] == "v1" and info["scaling"] == "log"
    assert info["factors"] == 40 and info["users"] == 3 and info["nnz"] == 9
    assert info["regularization"] == 0.01 and info["alpha"] == 50.0
    assert info["metrics"] == {"k": 10, "model": {"precision": 0.2}}


def test_unknown_ids_and_languages_give_empty_answers(redis_client):
    _publish_by_hand(redis_client)
    recs = RecsClient(redis_client)
    assert recs.similar("en", 1) == []
    assert recs.recommend("en", "nobody") == []
    assert recs.recommend("en", "8b0c2f0e-u", n=0) == []
    assert recs.model_info("es") is None


def test_works_with_a_decoding_client_and_another_prefix(redis_server):
    client = redis.Redis(host="127.0.0.1", port=redis_server.port, decode_responses=True)
    _publish_by_hand(client, prefix="shop")
    recs = RecsClient(client, prefix="shop")
    assert recs.similar("en", 489473, 1) == [(512001, pytest.approx(0.93))]
    assert recs.model_info("en")["items"] == 4
    assert RecsClient(client).model_info("en") is None
    client.close()
