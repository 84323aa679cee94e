"""The consumer's batch in hand (consumers/batch.py), in-process: no Kafka, no Redis."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from consumers.batch import Batch, OrderedBatch, PartitionState
from consumers.control import parse_control


class Msg:
    """The few methods of a confluent_kafka Message the batch reads."""

    def __init__(self, partition: int, offset: int, value: bytes | None = None,
                 error: KafkaError | None = None) -> None:
        self._p, self._o, self._v, self._e = partition, offset, value, error

    def error(self):
        return self._e

    def partition(self):
        return self._p

    def offset(self):
        return self._o

    def value(self):
        return self._v

    def topic(self):
        return "views"

    def key(self):
        return None

    def headers(self):
        return [("trace", b"t")]


def view(user: str, rid: int, lang: str = "en", **more) -> bytes:
    return orjson.dumps({"user_id": user, "resource_id": rid, "lang": lang, **more})


def owning(batch: Batch, **applied: int | None) -> Batch:
    batch.owned = {int(p[1:]): PartitionState(o) for p, o in applied.items()}
    return batch


def test_views_are_summed_per_language_user_and_resource():
    batch = owning(Batch(), p0=None, p1=None)
    dead = batch.add([Msg(0, 0, view("a", 7)), Msg(1, 0, view("a", 7, count=3)),
                      Msg(0, 1, view("b", 7, lang="es")), Msg(1, 1, view("a", 8))])
    assert dead == []
    assert batch.items == {"en": {"a": {7: 4, 8: 1}}, "es": {"b": {7: 1}}}
    assert (batch.in_hand, batch.valid, batch.view_sum, batch.skipped) == (4, 4, 6, 0)
    assert batch.guards() == [(0, None, 2), (1, None, 2)]


def test_messages_below_the_read_offset_or_of_partitions_not_owned_are_skipped():
    batch = owning(Batch(), p0=5)
    batch.add([Msg(0, 4, view("a", 1)), Msg(0, 5, view("a", 2)), Msg(3, 9, view("a", 3))])
    assert batch.items == {"en": {"a": {2: 1}}}
    assert (batch.in_hand, batch.valid, batch.skipped) == (3, 1, 2)
    assert batch.guards() == [(0, 5, 6)]


def test_invalid_events_become_dead_letters_and_still_move_the_offset():
    batch = owning(Batch(), p0=None, p1=3)
    dead = batch.add([Msg(0, 0, b"not json"), Msg(0, 1, view("a", 1)), Msg(0, 2, None)])
    assert [d.own[0] for d in dead] == [("error", b"not_json"), ("error", b"no_value")]
    assert dead[0].value == b"not json" and dead[0].headers[0] == ("trace", b"t")
    assert ("source.offset", b"0") in dead[0].own
    assert batch.dead == dead and batch.invalid == {"not_json": 1, "no_value": 1}
    assert batch.guards() == [(0, None, 3), (1, 3, None)]  # nothing read on partition 1


def test_written_moves_the_applied_offsets_and_clears_the_batch():
    batch = owning(Batch(), p0=None, p1=3)
    batch.add([Msg(0, 0, view("a", 1)), Msg(1, 3, b"{}")])
    batch.written(batch.guards())
    assert (batch.owned[0].applied, batch.owned[1].applied) == (1, 4)
    assert (batch.items, batch.dead, batch.invalid, batch.in_hand) == ({}, [], {}, 0)
    assert batch.guards() == [(0, 1, None), (1, 4, None)]


def test_rewind_drops_the_batch_and_names_the_partitions_to_seek():
    batch = owning(Batch(), p0=2, p1=3, p2=None)
    batch.add([Msg(0, 2, view("a", 1)), Msg(0, 3, view("a", 1))])
    batch.held({1: 10})  # Redis holds another offset for partition 1
    assert batch.rewind(sought=[1]) == [(0, 2), (1, 10)]
    assert batch.owned[0].read == 2 and batch.owned[1].read == 10 and batch.in_hand == 0
    assert batch.rewind() == []  # nothing read past Redis any more


def test_drained_once_every_partition_reports_its_end_at_the_read_offset():
    batch = owning(Batch(), p0=None, p1=None)
    eof = KafkaError(KafkaError._PARTITION_EOF)
    batch.add([Msg(0, 0, view("a", 1)), Msg(0, 1, error=eof)])
    assert not batch.drained()
    batch.add([Msg(1, 0, error=eof)])
    assert batch.drained() and batch.in_hand == 1  # an end-of-partition is no message


def test_a_fatal_message_error_raises():
    batch = owning(Batch(), p0=None)
    with pytest.raises(KafkaException):
        batch.add([Msg(0, 0, error=KafkaError(KafkaError._FATAL, fatal=True))])


def test_an_ordered_batch_keeps_every_operation_in_offset_order():
    batch = owning(OrderedBatch(parse_control), p0=None)
    hide = orjson.dumps({"action": "hide", "resource_id": 5})
    unhide = orjson.dumps({"action": "unhide", "resource_id": 5})
    dead = batch.add([Msg(0, 0, hide), Msg(0, 1, b"[]"), Msg(0, 2, unhide)])
    assert [op.action for op in batch.items.values()] == ["hide", "unhide"]
    assert [d.own[0] for d in dead] == [("error", b"not_object")]
    assert (batch.in_hand, batch.valid) == (3, 2) and batch.guards() == [(0, None, 3)]
