"""The ranked-list wire encoding (store.lists): pure, no Redis."""

from __future__ import annotations

import numpy as np
import pytest

from store.lists import ENTRY, MAX_LIST, encode_lists


def test_empty_slots_are_dropped_and_each_list_keeps_its_order():
    members = np.array([[5, 0, 7], [0, 0, 0], [9, 3, -1]])
    scores = np.array([[3.0, 0.0, 1.0], [0, 0, 0], [2.5, 2.0, 0.0]], dtype=np.float32)
    encoded = encode_lists(members, scores)
    assert encoded.lengths.tolist() == [2, 0, 2]
    lengths, entries = encoded.part(0, 3)
    assert np.frombuffer(lengths, "<u2").tolist() == [2, 0, 2]
    got = np.frombuffer(entries, ENTRY)
    assert got["member"].tolist() == [5, 7, 9, 3]
    assert got["score"].tolist() == [3.0, 1.0, 2.5, 2.0]
    # A part is a run of whole lists: the third list alone.
    lengths, entries = encoded.part(2, 3)
    assert np.frombuffer(lengths, "<u2").tolist() == [2]
    assert np.frombuffer(entries, ENTRY)["member"].tolist() == [9, 3]


def test_too_long_lists_are_refused():
    with pytest.raises(ValueError, match="wire format"):
        encode_lists(np.ones((1, MAX_LIST + 1)), np.ones((1, MAX_LIST + 1)))
