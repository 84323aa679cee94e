"""``recs history --lang L [--plot FILE] [--json]``: the quality records of a language.

The records are what ``recs train --evaluate`` appended (``store.quality``), oldest first:
a table (version, trained_at, model, NDCG@10 and popularity's, MAP, precision, AUC, and
whether the model went live), the JSON array with ``--json``, and with ``--plot FILE`` a PNG
of NDCG@10 over time for the model and for popularity (matplotlib, no display needed).
"""

from __future__ import annotations

import json

from core.errors import NotPublishedError
from store.cluster_keys import layout
from store.connection import connect
from store.quality import read_history
from trainer.commands.prepare import check_output_file
from trainer.config import check_lang

COLUMNS = (("version", 22), ("trained_at", 21), ("model", 6), ("ndcg", 7),
           ("popularity_ndcg", 8), ("map", 7), ("precision", 9), ("auc", 7), ("published", 9))
HEADINGS = {"ndcg": "ndcg@10", "popularity_ndcg": "pop@10", "map": "map@10",
            "precision": "prec@10", "published": "live"}


def table(history: list[dict]) -> str:
    """The records as aligned text, one line each."""
    def cell(entry: dict, name: str, width: int) -> str:
        value = entry.get(name, "")
        if isinstance(value, bool):
            value = "yes" if value else "no (gate)"
        elif isinstance(value, float):
            value = f"{value:.4f}"
        return f"{value!s:<{width}}"

    lines = ["  ".join(f"{HEADINGS.get(n, n):<{w}}" for n, w in COLUMNS).rstrip()]
    lines += ["  ".join(cell(e, n, w) for n, w in COLUMNS).rstrip() for e in history]
    return "\n".join(lines)


def plot(history: list[dict], path: str, lang: str) -> None:
    """NDCG@10 of the model and of popularity per training run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime

    import matplotlib.pyplot as plt

    times = [datetime.strptime(e["trained_at"], "%Y-%m-%dT%H:%M:%SZ") for e in history]
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    ax.plot(times, [e["ndcg"] for e in history], marker="o", label="model")
    ax.plot(times, [e["popularity_ndcg"] for e in history], marker="s", linestyle="--",
            label="popularity")
    gated = [(t, e["ndcg"]) for t, e in zip(times, history, strict=True)
             if not e.get("published", True)]
    if gated:
        ax.scatter(*zip(*gated, strict=True), marker="x", color="red", zorder=3,
                   label="not published (gate)")
    ax.set_title(f"recs {lang}: held-out NDCG@10 per training run")
    ax.set_ylabel("NDCG@10")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def cmd_history(args) -> int:
    lang = check_lang(args.lang)
    check_output_file("--plot", args.plot)
    client = connect(args.redis_url)
    keys = layout(client, args.prefix)
    try:
        history = read_history(client, keys, lang)
    finally:
        client.close()
    if not history:
        raise NotPublishedError(f"no quality history for {lang!r} yet: run "
                                f"`recs train --lang {lang} --evaluate`")
    print(json.dumps(history) if args.json else table(history))
    if args.plot:
        plot(history, args.plot, lang)
        if not args.json:
            print(f"plot: {args.plot}")
    return 0
