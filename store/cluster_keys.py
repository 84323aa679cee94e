"""The Redis Cluster form of every key name: :class:`Keys`'s templates with a hash tag.

Invariants (docs/CLUSTER.md, the cluster-mode names in docs/CONTRACT.md):

- A language's item side is one slot, tag ``{lang}`` (``recs:{en}:model``): the model hash,
  item factors, ids and totals, take-downs, trending, similar lists, the catalogue, settings
  and history, so the model switch stays one MULTI.
- Its users are in ``CLUSTER_GROUPS`` slot groups, tag ``{lang:g}`` with ``g`` =
  :func:`user_group` (``recs:{en:7}:recs:u``): a user's own keys, and per group one of each
  per-user queue and set, a copy of the model hash and of ``hidden``, and the group's
  progress per partition, and its share of each impression and click counter
  (``group_ctr``, ``group_ctr_users``, the experiment users: store/cluster_impressions.py).
  ``CLUSTER_GROUPS`` is fixed for the life of a store: a user's keys
  are named by it.
- ``langs`` and ``backfills`` keep their single-Redis names (one slot each, touched by single
  key commands only).
- Every template of :class:`Keys` is placed in exactly one of these: user-keyed, per group, or
  item side (the rest). A template added to :class:`Keys` lands on the item side unless it is
  named in ``_USER_KEYED`` or ``_PER_GROUP``.

:func:`layout` picks the form for a client; :mod:`store.keys` knows nothing of this module.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass

from store.keys import ArmKeys, Keys

CLUSTER_GROUPS = 64
"""Slot groups of users per language on a Redis Cluster. Each group is one hash slot, so
it is the unit a reshard moves and the unit of one script call: 64 spreads a language over
up to 64 primaries and keeps a batch of 500 events at most 64 calls. Fixed for the life
of a store (a user's keys are named by it): changing it means re-ingesting."""


def user_group(user_id: str, groups: int = CLUSTER_GROUPS) -> int:
    """The slot group of ``user_id``: CRC-32 (IEEE, zlib's) of its UTF-8 bytes mod
    ``groups`` (docs/CONTRACT.md "Redis Cluster", for apps that name keys themselves)."""
    return zlib.crc32(user_id.encode()) % groups


_USER_KEYED = ("views", "recs", "factors", "impression_window", "view_window")
"""Keys of one user: in that user's slot group."""
_PER_GROUP = ("users", "seq", "dirty", "touched", "quarantine", "claims", "published_users",
              "forgotten")
"""A language's per-user queues and sets: one of each per slot group."""


@dataclass(frozen=True)
class ClusterKeys(Keys):
    """The same names with a hash tag, for a Redis Cluster (docs/CLUSTER.md).

    Item side ``{prefix}:{{lang}}:...``: the model hash, item factors, ids and totals, the
    train lock, item totals, take-downs, trending, similar lists, the catalogue, settings,
    history; one slot per language, so the model switch stays one MULTI. Users
    ``{prefix}:{{lang:g}}:...`` with ``g`` = :func:`user_group`: a user's views, factors and
    list, and per group the queues of ``_PER_GROUP``, a copy of the model hash and of
    ``hidden`` (so the per-group scripts check version and take-downs in their own slot),
    and the group's progress per partition. ``langs`` and ``backfills`` keep their names
    (one slot each, touched by single-key commands only).

    A ClusterKeys bound to a group (:meth:`in_group`) names that group's queues; unbound,
    asking for one is a bug and raises."""

    groups: int = CLUSTER_GROUPS
    group: int | None = None

    cluster = True

    def slot_groups(self) -> list[Keys]:
        return [self.in_group(g) for g in range(self.groups)]

    def in_group(self, group: int) -> ClusterKeys:
        """These keys bound to slot group ``group``."""
        return dataclasses.replace(self, group=group)

    def for_user(self, user_id: str) -> ClusterKeys:
        return self.in_group(user_group(user_id, self.groups))

    def group_of(self, user_id: str) -> int:
        return user_group(user_id, self.groups)

    def _item(self, lang: str) -> str:
        return "{" + lang + "}"

    def _bound(self, lang: str) -> str:
        if self.group is None:
            raise LookupError("a per-group key asked of ClusterKeys not bound to a slot group")
        return "{" + f"{lang}:{self.group}" + "}"

    def views_pattern(self, lang: str) -> str:
        return f"{self.prefix}:{{{lang}:*}}:views:*"

    def offsets(self, group: str, topic: str) -> str:
        raise LookupError("on a cluster progress is per slot group: use group_offsets or "
                          "item_offsets")

    def group_model(self, lang: str) -> str:
        return f"{self.prefix}:{self._bound(lang)}:_model"

    def group_hidden(self, lang: str) -> str:
        return f"{self.prefix}:{self._bound(lang)}:_hidden"

    def group_offsets(self, lang: str, group: str, topic: str) -> str:
        return f"{self.prefix}:{self._bound(lang)}:_offsets:{group}:{topic}"

    def item_offsets(self, lang: str, group: str, topic: str) -> str:
        return f"{self.prefix}:{self._item(lang)}:_offsets:{group}:{topic}"

    def item_quarantine(self, lang: str) -> str:
        return Keys.quarantine(self, self._item(lang))

    def group_experiment(self, lang: str) -> str:
        return f"{self.prefix}:{self._bound(lang)}:_experiment"

    def arm(self, name: str) -> ArmKeys:
        return ClusterArmKeys(self.prefix, groups=self.groups, group=self.group,
                              arm_name=name)

    # -- impressions and clicks (store/cluster_impressions.py) ----------------------------
    def group_ctr(self, lang: str, cell: str) -> str:
        """The bound group's share of ``ctr(lang, cell)``: its users' impressions and clicks
        (a reader sums the groups, store/ctr.py)."""
        return Keys.ctr(self, self._bound(lang), cell)

    def group_ctr_users(self, lang: str, cell: str) -> str:
        """The bound group's users shown ``cell`` (groups hold disjoint users: the counts
        add up)."""
        return Keys.ctr_users(self, self._bound(lang), cell)

    def group_experiment_users(self, lang: str, experiment: str, arm: str) -> str:
        return Keys.experiment_users(self, self._bound(lang), experiment, arm)

    def group_experiment_users_prefix(self, lang: str) -> str:
        return Keys.experiment_users_prefix(self, self._bound(lang))

    def user_prefix(self, name: str, lang: str) -> str:
        """What the bound group's names of user-keyed template ``name`` start with (a
        script appends the user id)."""
        return getattr(Keys, name)(self, self._bound(lang), "")

    # -- helper "control": take-downs and forgetting -------------------------------------
    def forget_pending(self, lang: str) -> str:
        return Keys.forget_pending(self, self._bound(lang))

    def forget_done(self, lang: str) -> str:
        return Keys.forget_done(self, self._item(lang))

    def group_takedown_scan(self, lang: str) -> str:
        return Keys.takedown_scan(self, self._bound(lang))

    def group_takedown_found(self, lang: str, kind: str) -> str:
        return Keys.takedown_found(self, self._bound(lang), kind)


def _user_keyed(name: str):
    plain = getattr(Keys, name)

    def method(self: ClusterKeys, lang: str, user_id: str) -> str:
        group = user_group(user_id, self.groups)
        if self.group is not None and self.group != group:
            raise LookupError(f"user {user_id!r} is in slot group {group}, not {self.group}")
        return plain(self, "{" + f"{lang}:{group}" + "}", user_id)
    method.__doc__ = plain.__doc__
    return method


def _per_group(name: str):
    plain = getattr(Keys, name)

    def method(self: ClusterKeys, lang: str) -> str:
        return plain(self, self._bound(lang))
    method.__doc__ = plain.__doc__
    return method


def _item_side(name: str):
    plain = getattr(Keys, name)

    def method(self: ClusterKeys, lang: str, *rest) -> str:
        return plain(self, self._item(lang), *rest)
    method.__doc__ = plain.__doc__
    return method


_ITEM_SIDE = tuple(
    name for name, value in vars(Keys).items()
    if callable(value) and not name.startswith("_") and name not in _USER_KEYED + _PER_GROUP
    and name not in vars(ClusterKeys) and name not in ("langs", "backfills", "for_user"))
"""Every other per-language template: on the language's item side."""

for _name in _USER_KEYED:
    setattr(ClusterKeys, _name, _user_keyed(_name))
for _name in _PER_GROUP:
    setattr(ClusterKeys, _name, _per_group(_name))
for _name in _ITEM_SIDE:
    setattr(ClusterKeys, _name, _item_side(_name))


@dataclass(frozen=True)
class ClusterArmKeys(ArmKeys, ClusterKeys):
    """An experiment arm's keys on a cluster: :class:`ArmKeys` over :class:`ClusterKeys`.

    The arm's model hash, item factors, ids, totals and EASE rows are on the language's
    item side (``recs:{en}:_arm:b:model``, the slot of ``train_lock``, so the arm's switch
    is the default arm's one MULTI); each slot group has its own copy of the arm's model
    hash (``recs:{en:7}:_arm:b:_model``) that the group's scripts (the updater's commit,
    the reader's tagged list) compare versions in. Every user key is the language's own."""

    def _arm(self, lang: str) -> str:
        return f"{self.prefix}:{self._item(lang)}:_arm:{self.arm_name}"

    def group_model(self, lang: str) -> str:
        return f"{self.prefix}:{self._bound(lang)}:_arm:{self.arm_name}:_model"


def layout(client, prefix: str = "recs") -> Keys:
    """The key names for ``client``: :class:`ClusterKeys` for a Redis Cluster client (sync
    or asyncio), :class:`Keys` otherwise."""
    from redis.asyncio.cluster import RedisCluster as AsyncCluster
    from redis.cluster import RedisCluster

    if isinstance(client, (RedisCluster, AsyncCluster)):
        return ClusterKeys(prefix)
    return Keys(prefix)
