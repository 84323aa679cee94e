"""``recs resources load FILE --lang L``: the platform's resources extract into Redis.

The CSV is read by ``trainer.data.extracts.load_resources`` (the same reader and checks as
``--resources FILE``) and written by ``store.resources.replace_details``: the language's
whole catalogue is replaced at once, so readers never see half of one.
"""

from __future__ import annotations

import logging

from store.connection import connect
from store.keys import Keys
from store.read import DETAIL_FIELDS
from store.resources import replace_details

log = logging.getLogger("recs.resources")


def cmd_resources(args) -> int:
    from trainer.data.extracts import load_resources

    table = load_resources(args.file)
    rows = ((int(rid), {f: row[f] for f in DETAIL_FIELDS})
            for rid, row in zip(table.index, table.to_dict("records"), strict=True))
    client = connect(args.redis_url)
    try:
        held = replace_details(client, Keys(args.prefix), args.lang, rows)
    finally:
        client.close()
    log.info("resource details loaded", extra={"fields": {"lang": args.lang, "resources": held,
                                                          "file": str(args.file)}})
    print(f"{held} resources with details for {args.lang!r}")
    return 0
