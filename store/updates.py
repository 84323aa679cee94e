"""The updater's side of Redis: leased claims on pending users, and version-checked writes.

The consumer leaves every (language, user) with new views in ``dirty(lang)`` (score: the
seq of the batch that brought them). Updaters take users from there with a lease:

1. :meth:`UpdateQueue.claim` picks up to B users of ``dirty`` that nobody holds (or whose
   holder's lease ran out: it died) and records ``claims(lang)`` user -> deadline, in one
   script, so two updaters never work on one user at the same time. The deadline (Redis
   server time, ms) doubles as the claim's token: a re-claim after expiry always gets a later
   one, so a slow updater that lost its lease can tell.
2. The updater reads the users' counts, solves their factors against the model version it
   holds, and :meth:`UpdateQueue.commit` writes factors and recs in one script that writes
   nothing if ``model(lang).version`` changed meanwhile (no mixing of two models' factors),
   skips users whose lease it lost (their new holder writes them), and removes a user from
   ``dirty`` only if its score is still the one claimed: views that arrived during the solve
   leave it pending for the next round.

An updater that dies (even SIGKILL) leaves its users in ``dirty`` with a lease that expires;
the next claim takes them. Nothing here knows ALS: factors arrive as bytes, recs as pairs.
What the updater reads besides its queue is elsewhere: the published model in
store/published_model.py, the users' views in store/user_reads.py.

On a Redis Cluster (``store.cluster_keys.ClusterKeys``) the queues are per slot group: a claim is
taken from ONE group's ``dirty``/``claims`` (:meth:`UpdateQueue.claim` with that group's
keys, which the :class:`Claim` remembers), and its commit touches only that group's slot:
its queues, its users' factors and lists, and the group's copies of the model hash
(``group_model``: the version is compared there) and of ``hidden`` (``group_hidden``: the
take-downs enforced there). The publisher and hide write those copies after the item side,
so a commit may be refused as stale for a moment after a switch (the users stay pending and
are solved again). On one Redis the group is the keys themselves: ``group_model`` is the
model hash and ``group_hidden`` is ``hidden``, so the scripts and their keys are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import redis

from store.keys import Keys
from store.lists import LISTS_LUA, encode_lists
from store.read import text

# KEYS[1] dirty(lang)   ZSET user -> seq of the user's latest unprocessed views
# KEYS[2] claims(lang)  ZSET user -> lease deadline (ms, Redis server time)
# ARGV[1] lease length in ms
# ARGV[2] most users to claim
# Oldest views first. Returns {deadline, user1, score1, user2, score2, ...}.
CLAIM_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = now + tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local out = {tostring(deadline)}
local got = 0
local start = 0
local page_size = math.max(want * 2, 64)
while got < want do
  local page = redis.call('ZRANGE', KEYS[1], start, start + page_size - 1, 'WITHSCORES')
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local held = redis.call('ZSCORE', KEYS[2], page[i])
    if (not held) or tonumber(held) <= now then
      redis.call('ZADD', KEYS[2], deadline, page[i])
      out[#out + 1] = page[i]
      out[#out + 1] = page[i + 1]
      got = got + 1
      if got >= want then break end
    end
  end
  start = start + page_size
end
return out
"""

# KEYS[1] group_model(lang) HASH (on one Redis model(lang)); KEYS[2] dirty(lang);
# KEYS[3] claims(lang); KEYS[4] published_users(lang) SET
# KEYS[3 + 2i] factors(lang, user i), KEYS[4 + 2i] recs(lang, user i)   (i = 1..n)
# ARGV[1] model version the factors were solved against; ARGV[2] the claim's deadline;
# ARGV[3] n users; ARGV[4] factor bytes per user;
# ARGV[5], ARGV[6] the n users' lists as store.lists encodes them (lengths, entries);
# ARGV[7] factors, n x ARGV[4] bytes;
# ARGV[8..] per user: user_id, dirty score at claim time, '1' = has factors, '0' = none
# (views only on resources the model does not know: both keys are removed), '2' = skip
# (its views key is unreadable: factors and recs stay as they are, the user leaves dirty).
# KEYS[5 + 2n] group_hidden(lang) (on one Redis hidden(lang); optional); ARGV[8 + 3n] list
# length kept after dropping hidden resources (optional, 0 = all). Take-downs are enforced
# here, inside the write: a batch solved before a hide cannot bring the resource back.
# Returns {written, lost, pending}: users written, users skipped because their lease passed
# to another updater, written users left in dirty because views arrived meanwhile; or {-1}
# when the model version changed (nothing written, this claim's users released).
COMMIT_SCRIPT = LISTS_LUA + """
local n, fb = tonumber(ARGV[3]), tonumber(ARGV[4])
local deadline = tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then
  for i = 1, n do
    local user = ARGV[5 + 3 * i]
    local held = redis.call('ZSCORE', KEYS[3], user)
    if held and tonumber(held) == deadline then redis.call('ZREM', KEYS[3], user) end
  end
  return {-1}
end
local is_hidden = hidden_test(KEYS[5 + 2 * n])
local cap = tonumber(ARGV[8 + 3 * n] or '0')
local written, lost, pending = 0, 0, 0
local pos = 1
for i = 1, n do
  local user, score, known = ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  local fkey, rkey = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local held = redis.call('ZSCORE', KEYS[3], user)
  if held and tonumber(held) == deadline then
    if known == '2' then
      -- skipped: nothing of this user's is written (its list is still on the wire)
      pos = skip_list(ARGV[5], i, pos)
    elseif known == '1' then
      redis.call('DEL', rkey)
      redis.call('SET', fkey, string.sub(ARGV[7], (i - 1) * fb + 1, i * fb))
      local args, last
      args, pos = read_list(ARGV[5], ARGV[6], i, pos)
      args, last = visible(args, cap, is_hidden)
      if last > 0 then redis.call('ZADD', rkey, unpack(args, 1, last)) end
      redis.call('SADD', KEYS[4], user)
    else
      pos = skip_list(ARGV[5], i, pos)
      redis.call('DEL', rkey)
      redis.call('DEL', fkey)
      redis.call('SREM', KEYS[4], user)
    end
    local now_score = redis.call('ZSCORE', KEYS[2], user)
    if now_score and tonumber(now_score) == tonumber(score) then
      redis.call('ZREM', KEYS[2], user)
    else
      pending = pending + 1
    end
    redis.call('ZREM', KEYS[3], user)
    written = written + 1
  else
    pos = skip_list(ARGV[5], i, pos)
    lost = lost + 1
  end
end
return {written, lost, pending}
"""

# KEYS[1] claims(lang); ARGV[1] the claim's deadline; ARGV[2..] users
# Drops this claim's leases (those not since taken over) so others need not wait them out.
RELEASE_SCRIPT = """
local n = 0
for i = 2, #ARGV do
  local held = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if held and tonumber(held) == tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Claim:
    """Users one updater holds until ``deadline`` (ms, Redis time), with their dirty scores."""

    lang: str
    deadline: str
    users: list[str] = field(default_factory=list)
    scores: list[bytes] = field(default_factory=list)
    """Each user's dirty score when claimed, exactly as Redis printed it."""
    keys: Keys | None = field(default=None, compare=False)
    """The slot group's keys the claim was taken from (None: the queue's own keys); its
    commit and release go to the same group."""


@dataclass(frozen=True)
class BatchWrite:
    """What to write for a claim's users; row ``i`` belongs to ``claim.users[i]``."""

    factors: np.ndarray
    """users x factors float32."""
    known: np.ndarray
    """bool per user: False for a user with no known views, whose factors and recs are
    removed instead (the model cannot place them)."""
    members: np.ndarray
    """users x n resource ids, best first; 0 marks an empty slot."""
    scores: np.ndarray
    """users x n scores (float32 on the wire)."""
    skip: np.ndarray | None = None
    """bool per user: True for a user whose views key could not be read (wrong type):
    nothing of theirs is written, and they leave ``dirty``."""


@dataclass(frozen=True)
class CommitResult:
    stale: bool
    """The model version changed: nothing was written, the users stay pending."""
    written: int = 0
    lost: int = 0
    """Users whose lease another updater had taken over (it writes them)."""
    pending: int = 0
    """Written users that stay in dirty because views arrived during the solve."""


class UpdateQueue:
    """The claim / commit / release scripts bound to one client and key prefix."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._claim = client.register_script(CLAIM_SCRIPT)
        self._commit = client.register_script(COMMIT_SCRIPT)
        self._release = client.register_script(RELEASE_SCRIPT)

    def claim(self, lang: str, limit: int, lease_ms: int, group: Keys | None = None) -> Claim:
        """Lease up to ``limit`` pending users of ``lang`` for ``lease_ms``, from the slot
        group ``group`` (one of ``keys.slot_groups()``; None: the queue's own keys)."""
        k = group if group is not None else self.keys
        out = self._claim(keys=[k.dirty(lang), k.claims(lang)], args=[int(lease_ms), int(limit)])
        return Claim(
            lang=lang,
            deadline=text(out[0]),
            users=[text(u) for u in out[1::2]],
            scores=[bytes(s) if isinstance(s, bytes) else str(s).encode() for s in out[2::2]],
            keys=group,
        )

    def pending_groups(self, lang: str) -> list[Keys]:
        """The slot groups of ``lang`` with a non-empty ``dirty`` (one pipelined ZCARD per
        group); on one Redis the one group, unasked."""
        groups = self.keys.slot_groups()
        if len(groups) == 1:
            return groups
        pipe = self.client.pipeline(transaction=False)
        for g in groups:
            pipe.zcard(g.dirty(lang))
        return [g for g, n in zip(groups, pipe.execute(), strict=True) if int(n)]

    def _group_of(self, claim: Claim) -> Keys:
        return claim.keys if claim.keys is not None else self.keys

    def commit(self, claim: Claim, version: str, batch: BatchWrite,
               top_n: int = 0) -> CommitResult:
        """Write ``batch`` if ``model(lang).version`` is still ``version`` (see module doc).
        Hidden resources are dropped from the lists, which are then cut to ``top_n`` (0: as
        sent): send a few spare candidates so they stay ``top_n`` long."""
        k, lang, users = self._group_of(claim), claim.lang, claim.users
        factors = np.ascontiguousarray(batch.factors, dtype="<f4")
        members = np.asarray(batch.members)
        if factors.shape[0] != len(users) or members.shape[0] != len(users):
            raise ValueError(f"{factors.shape[0]} factor rows and {members.shape[0]} lists "
                             f"for {len(users)} claimed users")
        keys = [k.group_model(lang), k.dirty(lang), k.claims(lang), k.published_users(lang)]
        for user in users:
            keys += [k.factors(lang, user), k.recs(lang, user)]
        args: list = [version, claim.deadline, len(users), factors.shape[1] * 4,
                      *encode_lists(members, batch.scores).part(0, len(users)),
                      factors.tobytes()]
        skip = batch.skip if batch.skip is not None else np.zeros(len(users), dtype=bool)
        for user, score, known, skipped in zip(users, claim.scores, batch.known, skip,
                                               strict=True):
            args += [user, score, "2" if skipped else "1" if known else "0"]
        keys.append(k.group_hidden(lang))
        args.append(int(top_n))
        out = self._commit(keys=keys, args=args)
        if int(out[0]) < 0:
            return CommitResult(stale=True)
        return CommitResult(False, int(out[0]), int(out[1]), int(out[2]))

    def release(self, claim: Claim) -> int:
        """Give back the leases still held (after a failed batch); returns how many."""
        if not claim.users:
            return 0
        return int(self._release(keys=[self._group_of(claim).claims(claim.lang)],
                                 args=[claim.deadline, *claim.users]))

    def pending(self, lang: str, pipeline=None) -> int | None:
        """How many users of ``lang`` wait for an update, over every slot group (None when
        queued on a pipeline: one ZCARD per group, :meth:`groups` replies to add up)."""
        groups = self.keys.slot_groups()
        if pipeline is None and len(groups) == 1:
            return int(self.client.zcard(self.keys.dirty(lang)))
        target = pipeline if pipeline is not None else self.client.pipeline(transaction=False)
        for g in groups:
            target.zcard(g.dirty(lang))
        return None if pipeline is not None else sum(int(n) for n in target.execute())

    def groups(self) -> int:
        """Slot groups per language: the replies :meth:`pending` queues on a pipeline."""
        return len(self.keys.slot_groups())
