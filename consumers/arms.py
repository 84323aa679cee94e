"""The updater's view of an A/B experiment: a claimed batch split by experiment arm.

Invariant: every user of a claim is in exactly one part, with the same lease deadline and
dirty score as claimed, so each part commits (or stays pending) exactly as the whole would.
A user whose arm has no model published yet goes with the language's own model: the read
side (store/client.py) then reports the default arm for them too, so what was shown is
attributed to the model that made it. A part of an arm carries the arm's keys of the claim's
slot group (on a cluster its commit compares the group's copy of the ARM's model version).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from store.experiments import Experiment
from store.updates import Claim


def split_claim(experiment: Experiment | None, claim: Claim,
                live: Callable[[str], bool]) -> list[tuple[str, Claim]]:
    """(arm name, or "" for the language's own model; the part of ``claim``) pairs, the
    language's part first. ``live(arm)``: that arm's model is published (asked once per
    non-default arm)."""
    if experiment is None:
        return [("", claim)]
    groups = experiment.rows_by_model(claim.users, live)
    return [(arm, replace(claim, users=[claim.users[i] for i in rows],
                          scores=[claim.scores[i] for i in rows],
                          keys=claim.keys.arm(arm) if arm and claim.keys is not None
                          else claim.keys))
            for arm, rows in groups.items() if rows]
