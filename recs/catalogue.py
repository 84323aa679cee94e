"""``recs resources load FILE --lang L``: the platform's resources extract into Redis.

The CSV is read by ``trainer.data.extracts.load_resources`` (the same reader and checks as
``--resources FILE``), checked (:func:`check_catalogue`: never empty, no control
characters) and written by ``store.resources.replace_details`` with its title index: the
language's whole catalogue is replaced at once, so readers never see half of one.
"""

from __future__ import annotations

import logging

from store.cluster_keys import layout
from store.connection import connect
from store.read import DETAIL_FIELDS
from store.resources import replace_details

log = logging.getLogger("recs.resources")


def check_catalogue(table, path) -> None:
    """Refuse what must never replace a catalogue: a file without a single resource (it
    would wipe the language's details, as ``recs backfill`` refuses an empty extract) and
    control characters (NUL, ESC, ...) in any field, which no title needs and which reach
    operators' terminals and pages. One line, naming the resource."""
    from core.contract import CONTROL_CHARACTERS
    from core.errors import InputError

    if table.empty:
        raise InputError(f"{path}: no resources (a header and no rows): nothing loaded; the "
                         "catalogue in Redis is unchanged")
    for column in DETAIL_FIELDS:
        bad = table[column].str.contains(CONTROL_CHARACTERS.pattern, regex=True)
        if bad.any():
            rid = table.index[bad.to_numpy().argmax()]
            char = CONTROL_CHARACTERS.search(table.at[rid, column]).group()
            raise InputError(f"{path}: resource {rid}: {column} holds the control character "
                             f"U+{ord(char):04X}: nothing loaded")


def cmd_resources(args) -> int:
    from trainer.data.extracts import load_resources

    table = load_resources(args.file)
    check_catalogue(table, args.file)
    rows = ((int(rid), {f: row[f] for f in DETAIL_FIELDS})
            for rid, row in zip(table.index, table.to_dict("records"), strict=True))
    client = connect(args.redis_url)
    try:
        held = replace_details(client, layout(client, args.prefix), args.lang, rows)
    finally:
        client.close()
    log.info("resource details loaded", extra={"fields": {"lang": args.lang, "resources": held,
                                                          "file": str(args.file)}})
    print(f"{held} resources with details for {args.lang!r}")
    return 0
