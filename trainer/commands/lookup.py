"""``recs similar RESOURCE_ID`` and ``recs recommend USER_ID``: one list, from a model file
(``--model FILE``) or from what is published in Redis (``--lang L``, through
``store.client.RecsClient``), printed alike (``trainer.commands.present``), with titles from
``--resources FILE`` or, from Redis, the details ``recs resources load`` stored."""

from __future__ import annotations

import pandas as pd

from core.errors import InputError, NotPublishedError
from store.client import RecsClient
from store.connection import connect
from trainer.commands.present import describe, list_length, render
from trainer.config import check_lang
from trainer.data.extracts import load_resources
from trainer.models.file import load_model
from trainer.models.rank import as_rows

SIMILAR_SCORE = {"ease": "EASE weight", "blend": "cosine, ALS part",
                 "rp3beta": "RP3beta weight"}
"""What a similar list's score is under each family (docs/CONTRACT.md); else ``cosine``."""


def _source(args) -> str:
    if args.model and args.lang:
        raise InputError("give either --model FILE or --lang L, not both")
    if args.model:
        return "model"
    if args.lang:
        return "redis"
    raise InputError("say where to read from: --model FILE or --lang L (published in Redis)")


def cmd_similar(args) -> int:
    if _source(args) == "model":
        def heading(model, resources) -> str:
            rid = int(model.items.ids[model.items.number(args.resource_id)])
            meaning = SIMILAR_SCORE.get(model.family, "cosine")
            return f"Similar to {describe(rid, resources)} ({meaning}):"

        return _show_file(args, lambda model, n: model.similar_items([args.resource_id], n),
                          heading)
    return _similar_published(args)


def cmd_recommend(args) -> int:
    if _source(args) == "model":
        return _show_file(args, lambda model, n: model.recommend([args.user_id], n),
                          lambda model, resources: f"For user {args.user_id} (not yet viewed):")
    return _recommend_published(args)


def _show_file(args, lookup, heading) -> int:
    """Print ``lookup(model, n)`` (one row of ids and scores) from the ``--model`` file, with
    titles when ``--resources`` is given, under ``heading(model, resources)``."""
    n = list_length(args)
    model = load_model(args.model)
    ids, scores = lookup(model, n)
    resources = load_resources(args.resources) if args.resources else None
    print(render(as_rows(ids[0], scores[0]), resources, as_json=args.json,
                 heading=heading(model, resources)))
    return 0


# -- from Redis -------------------------------------------------------------------------------


def _published(reader: RecsClient, lang: str) -> dict:
    info = reader.model_info(check_lang(lang))
    if info is None:
        raise NotPublishedError(f"no model published for {lang!r} in Redis yet: run "
                                f"`recs train --lang {lang}` first")
    return info


def _show_published(args, lookup, heading, also: tuple[int, ...] = ()) -> int:
    """Run ``lookup(reader, info, n)`` against the published model and print its rows,
    with titles when ``--resources`` is given. ``heading(resources)`` titles the list."""
    n = list_length(args)
    reader = RecsClient(connect(args.redis_url), prefix=args.prefix)
    try:
        rows = lookup(reader, _published(reader, args.lang), n)
        # Without --resources, the details `recs resources load` put in Redis (if any).
        resources = (load_resources(args.resources) if args.resources
                     else _details_table(reader, args.lang, [*also, *(r[0] for r in rows)]))
    finally:
        reader.close()
    print(render(rows, resources, as_json=args.json, heading=heading(resources)))
    return 0


def _details_table(reader: RecsClient, lang: str, ids: list[int]):
    """The loaded details of ``ids`` as ``load_resources`` would give them; None when none
    are loaded, so the list shows ids as it does without a resources file."""
    details = reader.details(lang, ids)
    if not details:
        return None
    return pd.DataFrame.from_dict(details, orient="index").rename_axis("id")


def _similar_published(args) -> int:
    """``recs similar RESOURCE_ID --lang L``."""
    try:
        rid = int(str(args.resource_id).strip())
    except ValueError:
        raise InputError(f"resource id {args.resource_id!r} is not an integer") from None
    kind = ["cosine"]

    def lookup(reader: RecsClient, info: dict, n: int) -> list:
        kind[0] = SIMILAR_SCORE.get(info.get("model", "als"), "cosine")
        rows = reader.similar(args.lang, rid, n)
        if not rows:
            raise InputError(f"unknown resource {rid}: not among the {info.get('items')} "
                             f"resources of the published {args.lang!r} model (filtered out, "
                             "or never seen)")
        return rows

    return _show_published(args, lookup, lambda resources: (
        f"Similar to {describe(rid, resources)} ({kind[0]}):"), (rid,))


def _recommend_published(args) -> int:
    """``recs recommend USER_ID --lang L``."""

    def lookup(reader: RecsClient, info: dict, n: int) -> list:
        rows = reader.recommend(args.lang, args.user_id, n)
        if not rows and not reader.knows_user(args.lang, args.user_id):
            raise InputError(f"unknown user {args.user_id}: not among the {info.get('users')} "
                             f"users of the published {args.lang!r} model (filtered out, or "
                             "never seen)")
        return rows

    return _show_published(args, lookup,
                           lambda resources: f"For user {args.user_id} (not yet viewed):")
