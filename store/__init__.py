"""Everything that knows Redis: key names, Lua scripts, reads and writes.

No ALS math and no Kafka here: callers pass plain ids, counts and numpy arrays.
"""

from store.keys import Keys

__all__ = ["Keys"]
