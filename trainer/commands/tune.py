"""``recs tune``: a search (``trainer.quality.tune``) for the best model and settings, one line
per trial.

- ``recs tune --views FILE [--out FILE]``: on the extract, which is all training data (the
  search carves its validation split out of it); the best settings go to a JSON file that
  ``recs train|evaluate --settings FILE`` read (or to stdout).
- ``recs tune --lang L``: the same on the Redis counts; the settings go to the language's
  settings hash, which ``recs train`` applies from then on (``trainer.settings.for_language``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from core.errors import InputError
from store.cluster_keys import layout
from store.connection import connect
from store.quality import write_settings
from store.snapshot import read_views
from trainer.commands.prepare import check_output_file, prepared_matrix
from trainer.config import FilterConfig, ModelSpec, check_lang
from trainer.data.matrix import UtilityMatrix, apply_filters, build_matrix
from trainer.quality.tune import TuneResult, tune
from trainer.settings import SearchConfig, with_settings_file


def run_search(args, matrix: UtilityMatrix, spec: ModelSpec, lang: str, out: TextIO
               ) -> TuneResult:
    """The search of ``--search``/``--trials``/``--timeout`` on ``matrix``, a line per trial."""
    search = SearchConfig.from_args(args)
    return tune(matrix, spec, search.models, trials=search.trials, timeout=search.timeout,
                lang=lang, threads=args.threads,
                say=lambda line: print(line, file=out, flush=True))


def cmd_tune(args) -> int:
    """``recs tune --views FILE [--out FILE]`` or ``recs tune --lang L``."""
    if not args.views and not args.lang:
        raise InputError("say what to tune on: --views FILE (offline) or --lang L (Redis)")
    SearchConfig.from_args(args)  # a bad --search/--trials is reported before any data is read
    check_output_file("--out", getattr(args, "out", None))
    args = with_settings_file(args)
    spec = ModelSpec.from_values(vars(args))
    if not args.views:
        return _tune_language(args, spec)
    matrix, _ = prepared_matrix(args, sys.stderr)
    result = run_search(args, matrix, spec, args.lang or "xx", sys.stderr)
    text = json.dumps(result.document(spec.als.seed), indent=2, sort_keys=True)
    if args.out:
        Path(args.out).write_text(text + "\n")
        print(f"best validation NDCG@10 {result.ndcg:.4f} after {result.trials} trials "
              f"({result.seconds:.1f} s): settings written to {args.out}")
    else:
        print(text)
    return 0


def _tune_language(args, spec: ModelSpec) -> int:
    lang = check_lang(args.lang)
    client = connect(args.redis_url)
    keys = layout(client, args.prefix)
    try:
        df, _ = apply_filters(read_views(client, keys, lang), FilterConfig.from_args(args))
        if df.empty:
            raise InputError(f"{lang}: nothing to tune on after the filters")
        result = run_search(args, build_matrix(df), spec, lang, sys.stdout)
        write_settings(client, keys, lang, result.document(spec.als.seed))
    finally:
        client.close()
    print(f"{lang}: best validation NDCG@10 {result.ndcg:.4f} after {result.trials} trials "
          f"({result.seconds:.1f} s); settings stored in {keys.settings(lang)}")
    return 0
