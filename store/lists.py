"""Ranked lists on the wire: the one encoding every list-writing script reads.

A batch of k ranked lists travels as two byte strings:

- ``lengths``: k little-endian uint16, the entries of each list (0: an empty list);
- ``entries``: each list's entries back to back, best first, each a little-endian float32
  score then a uint32 resource id: exactly ZADD's (score, member) order, so one
  ``struct.unpack`` in Lua yields a list's ZADD arguments.

Empty slots (member 0 or negative) are dropped by the encoder, so the scripts never see
them. :func:`encode_lists` builds the two strings with numpy (one argument per entry cost
more to build and parse than the writes themselves); :data:`LISTS_LUA` is the Lua that reads
them and drops hidden resources, spliced into each script that writes lists
(``store.publish.REPLACE_LISTS``, ``store.updates.COMMIT_SCRIPT``), so a writer can never
bring a taken-down resource back, whichever wrote the list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENTRY = np.dtype([("score", "<f4"), ("member", "<u4")])
"""One list entry on the wire: ZADD's (score, member)."""
MAX_LIST = 0xFFFF
"""Longest list the uint16 lengths can carry."""


@dataclass(frozen=True)
class EncodedLists:
    """k lists encoded; :meth:`part` gives the wire strings of lists ``start:stop``."""

    lengths: np.ndarray
    """k little-endian uint16."""
    entries: np.ndarray
    """The lists' entries back to back (:data:`ENTRY`)."""
    starts: np.ndarray
    """k + 1 offsets into ``entries``: list i is ``entries[starts[i]:starts[i + 1]]``."""

    def part(self, start: int, stop: int) -> tuple[bytes, bytes]:
        """(lengths, entries) wire strings of lists ``start`` to ``stop`` (exclusive)."""
        return (self.lengths[start:stop].tobytes(),
                self.entries[self.starts[start]:self.starts[stop]].tobytes())


def encode_lists(members: np.ndarray, scores: np.ndarray) -> EncodedLists:
    """Lists given as k x n resource ids (0 or negative: an empty slot) and k x n scores, best
    first, in the wire encoding (see the module docstring)."""
    members = np.asarray(members)
    if members.ndim != 2:
        members = members.reshape(len(members), -1)
    if members.shape[1] > MAX_LIST:
        raise ValueError(f"lists of more than {MAX_LIST} entries do not fit the wire format")
    filled = members > 0
    lengths = filled.sum(axis=1).astype("<u2")
    entries = np.empty(members.shape, dtype=ENTRY)
    entries["score"] = np.asarray(scores).reshape(members.shape)
    entries["member"] = np.where(filled, members, 0)
    starts = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    return EncodedLists(lengths=lengths, entries=entries[filled], starts=starts)


LISTS_LUA = """
-- store.lists: ranked lists on the wire. lengths: little-endian uint16 per list; entries:
-- each list's (float32 score, uint32 member) pairs back to back, best first.
local list_formats = {}
-- List i (entries from byte pos) as ZADD arguments; returns (args, byte pos of list i + 1).
local function read_list(lengths, entries, i, pos)
  local n = struct.unpack('<H', lengths, 2 * i - 1)
  if n == 0 then return {}, pos end
  local fmt = list_formats[n]
  if not fmt then
    fmt = '<' .. string.rep('fI4', n)
    list_formats[n] = fmt
  end
  local args = {struct.unpack(fmt, entries, pos)}
  local after = table.remove(args)
  return args, after
end
-- The byte pos of list i + 1 without reading list i.
local function skip_list(lengths, i, pos)
  return pos + 8 * struct.unpack('<H', lengths, 2 * i - 1)
end
-- A test "is this resource id hidden?" for hidden(lang), or nil when nothing is hidden
-- (or no key is given). A short hidden set is read once into a table (the usual case); a
-- long one is asked per id.
local function hidden_test(key)
  local count = key and redis.call('HLEN', key) or 0
  if count == 0 then return nil end
  if count <= 512 then
    local set = {}
    for _, m in ipairs(redis.call('HKEYS', key)) do set[tonumber(m)] = true end
    return function(id) return set[tonumber(id)] == true end
  end
  return function(id) return redis.call('HEXISTS', key, id) == 1 end
end
-- ZADD arguments minus hidden members, cut to cap entries (0: all). Returns (args, how
-- many of args to send, true when a hidden member was dropped).
local function visible(args, cap, is_hidden)
  local found = false
  if is_hidden then
    -- Usually none is here (a retrain leaves hidden resources out): look before copying.
    for j = 2, #args, 2 do
      if is_hidden(args[j]) then
        found = true
        break
      end
    end
  end
  if found then
    local kept = {}
    for j = 1, #args, 2 do
      if cap > 0 and #kept >= 2 * cap then break end
      if not is_hidden(args[j + 1]) then
        kept[#kept + 1] = args[j]
        kept[#kept + 1] = args[j + 1]
      end
    end
    args = kept
  end
  local last = #args
  if cap > 0 and last > 2 * cap then last = 2 * cap end
  return args, last, found
end
"""
