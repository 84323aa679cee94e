"""Every Redis key name the system uses: no module but this and store/cluster_keys.py
spells a key out.

The first group is the external contract (shared/CONTRACT.md section 2): apps and outside
checks read those names, so they never change. The second group is internal bookkeeping;
it may change between releases but only this module spells it out.

Languages are 2-3 lowercase letters, so an internal key that puts a longer word (or a
leading underscore) where ``{lang}`` would stand can never collide with a contract key.

Code that names a user's keys through :meth:`Keys.for_user` and a language's queues through
:meth:`Keys.slot_groups` runs unchanged on a Redis Cluster, where the same templates carry a
hash tag (store/cluster_keys.py); on one Redis there is one group: these keys themselves.
This module never imports the cluster form (it is built on these templates).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key templates bound to one prefix (``recs`` unless configured otherwise)."""

    prefix: str = "recs"

    # -- contract: written by the consumer ------------------------------------------------
    @property
    def langs(self) -> str:
        """SET of every language seen."""
        return f"{self.prefix}:langs"

    def views(self, lang: str, user_id: str) -> str:
        """HASH resource_id -> cumulative view count of one user."""
        return f"{self.prefix}:{lang}:views:{user_id}"

    def views_pattern(self, lang: str) -> str:
        return f"{self.prefix}:{lang}:views:*"

    def item_views(self, lang: str) -> str:
        """HASH resource_id -> cumulative view count over all users."""
        return f"{self.prefix}:{lang}:item_views"

    # -- contract: written by the trainer and the updater ---------------------------------
    def model(self, lang: str) -> str:
        """HASH describing the published model (version, trained_at, hyperparameters...)."""
        return f"{self.prefix}:{lang}:model"

    def similar(self, lang: str, resource_id: int | str) -> str:
        """ZSET resource_id -> cosine similarity, the resource itself excluded."""
        return f"{self.prefix}:{lang}:similar:{resource_id}"

    def recs(self, lang: str, user_id: str) -> str:
        """ZSET resource_id -> score, already-viewed resources excluded."""
        return f"{self.prefix}:{lang}:recs:{user_id}"

    def factors(self, lang: str, user_id: str) -> str:
        """STRING raw little-endian float32 user factors (4 x factors bytes)."""
        return f"{self.prefix}:{lang}:factors:{user_id}"

    # -- contract: take-downs and the fallback list (docs/CONTRACT.md) --------------------
    def hidden(self, lang: str) -> str:
        """HASH resource_id -> JSON {"reason", "ts"} of resources taken down in ``lang``: in no
        list while they are here (written by ``recs hide``/``unhide`` and control events)."""
        return f"{self.prefix}:{lang}:hidden"

    def trending(self, lang: str) -> str:
        """ZSET resource_id -> decayed recent views: what is being viewed now (hidden and
        too-popular resources excluded), for users without a list of their own."""
        return f"{self.prefix}:{lang}:trending"

    def settings(self, lang: str) -> str:
        """HASH of tuned settings written by ``recs tune --lang`` (docs/CONTRACT.md)."""
        return f"{self.prefix}:{lang}:settings"

    def history(self, lang: str) -> str:
        """LIST of JSON quality records, oldest first, capped (docs/CONTRACT.md)."""
        return f"{self.prefix}:{lang}:history"

    def experiment(self, lang: str) -> str:
        """HASH: the language's A/B experiment (``recs experiment start``; docs/CONTRACT.md
        "Experiments"): ``id``, ``status``, ``arms`` (JSON), ``started_at``..."""
        return f"{self.prefix}:{lang}:experiment"

    def arm(self, name: str) -> ArmKeys:
        """The keys of experiment arm ``name``'s model: its own item side, every user key
        shared (see :class:`ArmKeys`)."""
        return ArmKeys(self.prefix, arm_name=name)

    # -- contract: written by `recs resources load` ---------------------------------------
    def resources(self, lang: str) -> str:
        """HASH resource_id -> JSON {"title", "folder", "subject", "tags"} (the platform's
        resources extract), replaced whole by each load."""
        return f"{self.prefix}:{lang}:resources"

    # -- internal: consumer bookkeeping ---------------------------------------------------
    def users(self, lang: str) -> str:
        """SET of every user with a views hash in ``lang`` (so readers need no SCAN)."""
        return f"{self.prefix}:{lang}:_users"

    def offsets(self, group: str, topic: str) -> str:
        """HASH partition -> next offset to apply, written atomically with the counts."""
        return f"{self.prefix}:_offsets:{group}:{topic}"

    def seq(self, lang: str) -> str:
        """STRING counter, incremented once per applied batch that touches ``lang``."""
        return f"{self.prefix}:{lang}:_seq"

    def dirty(self, lang: str) -> str:
        """ZSET user_id -> seq of the user's latest new views not yet folded in (updater work)."""
        return f"{self.prefix}:{lang}:_dirty"

    def touched(self, lang: str) -> str:
        """ZSET user_id -> seq of the user's latest views; the trainer re-queues users touched
        after it read the counts and trims the rest."""
        return f"{self.prefix}:{lang}:_touched"

    def quarantine(self, lang: str) -> str:
        """HASH entry id -> JSON ``{"user", "reason", "views": {resource_id: count}}``:
        valid views the counts script could not add (a poisoned views key or item total),
        kept until ``recs repair`` re-applies them; ``user`` is "" for item totals."""
        return f"{self.prefix}:{lang}:_quarantine"

    @property
    def backfills(self) -> str:
        """HASH content digest -> JSON description of a CSV extract already loaded."""
        return f"{self.prefix}:_backfills"

    # -- internal: trainer and updater ----------------------------------------------------
    def item_factors(self, lang: str) -> str:
        """STRING raw little-endian float32 item factors, items x factors, row order of
        ``item_ids``; replaced together with ``model`` and ``item_ids`` in one MULTI."""
        return f"{self.prefix}:{lang}:_item_factors"

    def item_ids(self, lang: str) -> str:
        """STRING raw little-endian uint32 resource ids, one per row of ``item_factors``."""
        return f"{self.prefix}:{lang}:_item_ids"

    def published_items(self, lang: str) -> str:
        """SET of resource ids that have a published similar list."""
        return f"{self.prefix}:{lang}:_published_items"

    def published_users(self, lang: str) -> str:
        """SET of user ids that have published recs and factors."""
        return f"{self.prefix}:{lang}:_published_users"

    def train_lock(self, lang: str) -> str:
        """STRING token, set NX with expiry by the one trainer publishing ``lang``."""
        return f"{self.prefix}:{lang}:_train_lock"

    def claims(self, lang: str) -> str:
        """ZSET user_id -> lease deadline (ms) of users an updater is working on."""
        return f"{self.prefix}:{lang}:_claims"

    def ease_rows(self, lang: str, version: str) -> str:
        """HASH resource_id -> that resource's row of EASE's B (raw little-endian float32,
        4 x items bytes) for one published model version; written before the switch."""
        return f"{self.prefix}:{lang}:_ease_rows:{version}"

    def ease_versions(self, lang: str) -> str:
        """SET of versions with an ``ease_rows`` hash (so stale ones can be found and freed)."""
        return f"{self.prefix}:{lang}:_ease_versions"

    def item_totals(self, lang: str) -> str:
        """STRING raw little-endian float32 total training views per row of ``item_ids``
        (what ``bm25`` confidence needs to fold users in); replaced in the same MULTI."""
        return f"{self.prefix}:{lang}:_item_totals"

    def resources_loading(self, lang: str, token: str) -> str:
        """HASH being filled by one ``recs resources load`` (``token`` is unique per load)
        before it is RENAMEd over ``resources``, so readers see the old catalogue or the
        new one, never half of one."""
        return f"{self.prefix}:{lang}:_resources_loading:{token}"

    def titles(self, lang: str) -> str:
        """HASH: the title index of ``resources`` (store/titles.py: sorted (word, id) records
        in pages, their directory, a version), replaced in the same step as ``resources``."""
        return f"{self.prefix}:{lang}:_titles"

    def titles_loading(self, lang: str, token: str) -> str:
        """HASH being filled with the title index of one ``recs resources load``."""
        return f"{self.prefix}:{lang}:_titles_loading:{token}"

    def resources_trash(self, lang: str, token: str) -> str:
        """The replaced catalogue or index of one load, renamed here and UNLINKed (freed in
        the background: a 2M-field hash takes Redis most of a second to free in place)."""
        return f"{self.prefix}:{lang}:_resources_trash:{token}"

    # -- internal: take-downs, forgetting, trending (store/control.py, store/trending.py) --
    def takedown_work(self, lang: str) -> str:
        """HASH resource_id -> 'hide:SEQ' | 'unhide:SEQ': lists still to clean and refill (or
        the resource's own similar list to restore) after a hide/unhide was recorded; SEQ is
        its ``takedown_seq`` position."""
        return f"{self.prefix}:{lang}:_takedown_work"

    def takedown_seq(self, lang: str) -> str:
        """STRING counter: the queue position of the latest ``takedown_work`` entry (each
        entry is ``action:position``), so a scan knows which entries it settles."""
        return f"{self.prefix}:{lang}:_takedown_seq"

    def takedown_scan(self, lang: str) -> str:
        """HASH ``seq`` (the queue position the scan in progress settles), ``users`` and
        ``items`` (its SSCAN cursors, ``done`` at the end): a settle's progress, so one that
        dies or times out is resumed, never started over."""
        return f"{self.prefix}:{lang}:_takedown_scan"

    def takedown_found(self, lang: str, kind: str) -> str:
        """SET of user ids (``kind`` users) or resource ids (items) whose list the scan found
        holding a hidden resource and that are not refilled yet."""
        return f"{self.prefix}:{lang}:_takedown_found:{kind}"

    def forgotten(self, lang: str) -> str:
        """ZSET sha1(user_id) -> the ``seq`` of its forget: a trainer that read its counts
        before that seq publishes nothing for the user. Trimmed by the next publish."""
        return f"{self.prefix}:{lang}:_forgotten"

    def trending_seen(self, lang: str) -> str:
        """HASH resource_id -> the ``item_views`` total at the last trending refresh."""
        return f"{self.prefix}:{lang}:_trending_seen"

    def trending_scores(self, lang: str) -> str:
        """ZSET resource_id -> decayed views of every resource (the list is its filtered top)."""
        return f"{self.prefix}:{lang}:_trending_scores"

    def trending_state(self, lang: str) -> str:
        """HASH ``at`` -> Redis time (ms) of the last trending refresh."""
        return f"{self.prefix}:{lang}:_trending_state"

    # -- internal: impressions, clicks and their counters (store/impressions.py, issue 19) --
    def ctr(self, lang: str, cell: str) -> str:
        """HASH ``impressions``, ``clicks``, ``p{k}`` (clicks at 1-based position k) of one
        cell ``day|list|model|arm|experiment`` (consumers/impression_events.py)."""
        return f"{self.prefix}:{lang}:_ctr:{cell}"

    def ctr_users(self, lang: str, cell: str) -> str:
        """HyperLogLog of the user ids shown a list of ``cell``."""
        return f"{self.prefix}:{lang}:_ctr_users:{cell}"

    def ctr_items(self, lang: str, cell: str) -> str:
        """HyperLogLog of the resource ids shown in ``cell`` (coverage)."""
        return f"{self.prefix}:{lang}:_ctr_items:{cell}"

    def ctr_cells(self, lang: str) -> str:
        """SET of every cell with counters (so readers need no SCAN)."""
        return f"{self.prefix}:{lang}:_ctr_cells"

    def experiment_users(self, lang: str, experiment: str, arm: str) -> str:
        """HASH ``i:{user_id}`` -> impressions, ``c:{user_id}`` -> clicks of one arm's users."""
        return f"{self.experiment_users_prefix(lang)}{experiment}|{arm}"

    def experiment_users_prefix(self, lang: str) -> str:
        """What :meth:`experiment_users` names start with (the scripts append
        ``{experiment}|{arm}``)."""
        return f"{self.prefix}:{lang}:_exp_users:"

    def impression_window(self, lang: str, user_id: str) -> str:
        """HASH: one user's recent impressions (store/impressions.py: ``i:{id}`` records,
        ``r:{resource_id}`` unclicked (impression, position) pairs, ``q`` their order)."""
        return f"{self.prefix}:{lang}:_impw:{user_id}"

    def view_window(self, lang: str, user_id: str) -> str:
        """HASH: one user's recently viewed resources (``{resource_id}`` -> last view times
        and impression ids, ``q`` their order), for impressions consumed after the view."""
        return f"{self.prefix}:{lang}:_vieww:{user_id}"

    # -- slot groups (one on a single Redis; see store/cluster_keys.py) ---------------
    cluster = False
    """Whether these are a Redis Cluster's names (hash-tagged, users in slot groups)."""

    def slot_groups(self) -> list[Keys]:
        """One Keys per slot group of users: on one Redis just these keys."""
        return [self]

    def for_user(self, user_id: str) -> Keys:
        """The keys of the slot group ``user_id``'s keys live in: on one Redis these."""
        return self

    def group_model(self, lang: str) -> str:
        """What the per-group scripts read the published ``version`` from: on one Redis the
        model hash itself, on a cluster each group's copy (written after each switch)."""
        return self.model(lang)

    def group_experiment(self, lang: str) -> str:
        """What a slot group's reader script reads the experiment from: on one Redis the
        experiment hash itself, on a cluster each group's copy (written by every start and
        end, and by each retrain, after the item side)."""
        return self.experiment(lang)

    def group_experiment_users(self, lang: str, experiment: str, arm: str) -> str:
        """Where a slot group's users of ``arm`` are counted: on one Redis
        ``experiment_users`` itself, on a cluster the group's share (a reader sums them)."""
        return self.experiment_users(lang, experiment, arm)

    def group_hidden(self, lang: str) -> str:
        """What the per-group scripts check take-downs in: on one Redis ``hidden`` itself,
        on a cluster each group's copy (written by every hide and unhide)."""
        return self.hidden(lang)

    def group_offsets(self, lang: str, group: str, topic: str) -> str:
        """Where a slot group's progress per partition is held: on one Redis the one
        ``offsets`` hash (every language, both sides, in one script)."""
        return self.offsets(group, topic)

    def item_offsets(self, lang: str, group: str, topic: str) -> str:
        """Where the item side's progress per partition is held (item totals): on one
        Redis the one ``offsets`` hash."""
        return self.offsets(group, topic)

    def item_quarantine(self, lang: str) -> str:
        """Where item totals that refused are parked: on one Redis the one quarantine."""
        return self.quarantine(lang)

    # -- helper "control": take-downs and forgetting on a Redis Cluster ------------------
    def forget_pending(self, lang: str) -> str:
        """HASH ``sha1(user):seq`` -> JSON views of a forget whose counts are not yet taken
        back from ``item_views`` (a cluster's forget is a group step then an item step;
        unused on one Redis, where the forget is one script)."""
        return f"{self.prefix}:{lang}:_forget_pending"

    def forget_done(self, lang: str) -> str:
        """ZSET forget id -> ms: forgets whose counts ``item_views`` gave back (so a retried
        item step never subtracts twice); trimmed after a week."""
        return f"{self.prefix}:{lang}:_forget_done"

    def group_takedown_scan(self, lang: str) -> str:
        """A slot group's settle progress (``seq``, ``users`` cursor): on one Redis
        ``takedown_scan`` itself."""
        return self.takedown_scan(lang)

    def group_takedown_found(self, lang: str, kind: str) -> str:
        """A slot group's user lists found holding a hidden resource: on one Redis
        ``takedown_found`` itself."""
        return self.takedown_found(lang, kind)


@dataclass(frozen=True)
class ArmKeys(Keys):
    """The keys one experiment arm's model is published and folded in under.

    The arm's model has its own item side (the model hash, item factors, ids, totals, EASE
    rows) at ``{prefix}:{lang}:_arm:{arm}:...``; everything about users (their lists,
    factors, views, the updater's queue, take-downs, forgets) is the language's own key, so
    a user's list stays at the contract key whichever arm wrote it. ``_arm`` never stands
    where a contract key has its name, so these cannot collide with contract keys."""

    arm_name: str = ""

    def _arm(self, lang: str) -> str:
        return f"{self.prefix}:{lang}:_arm:{self.arm_name}"

    def model(self, lang: str) -> str:
        """HASH: the arm model's description (the contract model hash's fields)."""
        return f"{self._arm(lang)}:model"

    def item_factors(self, lang: str) -> str:
        return f"{self._arm(lang)}:_item_factors"

    def item_ids(self, lang: str) -> str:
        return f"{self._arm(lang)}:_item_ids"

    def item_totals(self, lang: str) -> str:
        return f"{self._arm(lang)}:_item_totals"

    def ease_rows(self, lang: str, version: str) -> str:
        return f"{self._arm(lang)}:_ease_rows:{version}"

    def ease_versions(self, lang: str) -> str:
        return f"{self._arm(lang)}:_ease_versions"

    def arm_keys_of(self, lang: str) -> list[str]:
        """The arm's fixed item-side keys (the EASE rows are named in ``ease_versions``)."""
        return [self.model(lang), self.item_factors(lang), self.item_ids(lang),
                self.item_totals(lang), self.ease_versions(lang)]
