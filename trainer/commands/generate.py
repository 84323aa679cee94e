"""``recs generate``: synthetic GoConqr-like extracts (``trainer.data.synth``), and where
they went."""

from __future__ import annotations

from trainer.data.synth import generate


def cmd_generate(args) -> int:
    """``recs generate``: write the extracts and say where."""
    data = generate(n_users=args.users, n_resources=args.resources, langs=args.langs,
                    seed=args.seed, n_subjects=args.subjects,
                    mean_items=args.mean_items)
    paths = data.write(args.out, gzip=args.gzip)
    for lang, p in paths.items():
        v = data.views[data.views["lang"] == lang]
        print(f"{lang}: {v['user_id'].nunique()} users, {v['resource_id'].nunique()} resources, "
              f"{len(v)} user-resource pairs, {int(v['views'].sum())} views -> {p['views']}, "
              f"{p['resources']}, {p['users']}")
    return 0
