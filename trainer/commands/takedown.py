"""``recs hide``, ``unhide``, ``hidden`` and ``forget``: the control step (one script per
call, ``store.control``), then, for hides and unhides, every affected list cleaned and
refilled at once (``trainer.pipeline.takedown.settle``), and what was done printed."""

from __future__ import annotations

import json
import logging
import time

from core.contract import CONTROL_CHARACTERS, MAX_USER_ID_LENGTH, valid_lang
from core.errors import InputError
from core.text import for_terminal
from store.cluster_keys import layout
from store.connection import connect_checked
from store.control import Control, read_hidden
from store.control_cluster import finish_forgets
from store.control_op import ControlOp
from store.keys import Keys
from store.snapshot import read_languages
from trainer.pipeline.takedown import settle

log = logging.getLogger("recs.takedown")


def _resource_ids(values: list[str]) -> list[str]:
    out = []
    for v in values:
        text = str(v).strip()
        if not (text.isascii() and text.isdigit() and 0 < int(text) <= 0xFFFFFFFF):
            raise InputError(f"resource id {v!r} is not an integer in 1..4294967295")
        out.append(str(int(text)))
    return out


def _langs(client, keys: Keys, lang: str | None) -> list[str]:
    if lang is not None and not valid_lang(lang):
        raise InputError(f"--lang {lang!r} is not a language code (2 or 3 lowercase letters)")
    return [lang] if lang else read_languages(client, keys)


def _hide_or_unhide(args, action: str) -> int:
    rids = _resource_ids(args.resource_ids)
    client = connect_checked(args.redis_url)
    keys = layout(client, args.prefix)
    langs = _langs(client, keys, args.lang)
    started = time.perf_counter()
    Control(client, keys).run([ControlOp(action, rid, args.lang, getattr(args, "reason", None))
                               for rid in rids])
    for lang in langs:
        r = settle(client, keys, lang)
        print(f"{lang}: {action} {' '.join(rids)}: {r.users_refilled} user lists and "
              f"{r.similar_refilled} similar lists refilled, {r.users_cleaned + r.similar_cleaned}"
              f" cleaned, {r.restored} similar lists restored", flush=True)
    if not langs:
        print(f"no languages in Redis yet: nothing to {action}")
    log.info(f"{action} done", extra={"fields": {"resources": rids, "langs": langs,
                                                  "seconds": round(time.perf_counter() - started,
                                                                   3)}})
    return 0


def cmd_hide(args) -> int:
    """``recs hide RESOURCE_ID... [--lang L] [--reason TEXT]``."""
    return _hide_or_unhide(args, "hide")


def cmd_unhide(args) -> int:
    """``recs unhide RESOURCE_ID... [--lang L]``."""
    return _hide_or_unhide(args, "unhide")


def cmd_hidden(args) -> int:
    """``recs hidden --lang L [--json]``: the hidden resources, with reason and time."""
    client = connect_checked(args.redis_url)
    keys = layout(client, args.prefix)
    hidden = read_hidden(client, keys, _langs(client, keys, args.lang)[0])
    rows = [{"resource_id": rid, **meta} for rid, meta in sorted(hidden.items())]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(f"{row['resource_id']}\t{row.get('ts')}\t"
                  f"{for_terminal(row.get('reason', ''))}")
    return 0


def cmd_forget(args) -> int:
    """``recs forget USER_ID... [--lang L]``: remove every trace of these users."""
    for user in args.user_ids:
        if not (0 < len(user) <= MAX_USER_ID_LENGTH and not CONTROL_CHARACTERS.search(user)):
            raise InputError(f"user id {user[:40]!r} is not a valid user id")
    client = connect_checked(args.redis_url)
    keys = layout(client, args.prefix)
    langs = _langs(client, keys, args.lang)
    Control(client, keys).run([ControlOp("forget", u, args.lang) for u in args.user_ids])
    for lang in langs:  # a cluster: what an interrupted forget left parked
        finish_forgets(client, keys, lang)
    print(f"forgot {len(args.user_ids)} user(s) in "
          f"{args.lang or 'every language'}", flush=True)
    return 0
