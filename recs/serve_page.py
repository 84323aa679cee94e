"""The operator page of ``recs serve`` and the look-ups behind it.

The page is rendered on the server (every value escaped) from ``AsyncRecsClient.status``:
per language the live model, its age, the updater's backlog, the time since the consumer
last applied a batch of views, and a chart of held-out NDCG@k of each retrain against the
popularity baseline (an inline SVG drawn here). Look-ups run in ``recs/web/page.js``
against the JSON API. Everything the page loads ships in the package (no CDN), and the
Content-Security-Policy allows nothing else.

User look-ups show what a person viewed: ``explain_user`` refuses (403) unless the server
has a token, so an open server never serves personal data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from html import escape

import numpy as np

from recs.serve_base import ApiError, ServeConfig, age_seconds, rendered
from store.aclient import AsyncRecsClient, LangStatus

log = logging.getLogger("recs.serve")

SHOWN_FIRST = ("version", "trained_at", "engine", "model", "users", "items", "nnz")
GROUPED = {"settings": ("factors", "regularization", "iterations", "alpha", "scaling", "seed",
                        "top_n"),
           "filters": ("min_item_views", "max_item_views", "min_user_views")}
HIDDEN = {"metrics", "filters"}
LABELS = {"items": "resources", "nnz": "user-resource pairs", "trained_at": "trained at"}


@dataclass
class PageCache:
    """Per-app memo: each language's published item side (for explanations), kept while its
    model version is live."""

    explainers: dict[str, object] = field(default_factory=dict)


# -- look-ups --------------------------------------------------------------------------------


async def _published(cache: PageCache, recs: AsyncRecsClient, lang: str, version: str):
    """The model's item side (``store.published_model.PublishedItems``), kept per version."""
    held = cache.explainers.get(lang)
    if held is not None and held.version == version:
        return held
    published = await recs.published_items(lang)
    if published is not None:
        cache.explainers[lang] = published
    return published


async def _reasons(cache: PageCache, recs: AsyncRecsClient, lang: str, info: dict,
                   views: dict[int, int], ids: list[int]) -> dict:
    """Per recommended id, the views behind it (``trainer.models.explain``): ALS and EASE split
    their scores exactly; a blend, or a damaged publish, gets no reasons."""
    from trainer.models.als import PublishedALS
    from trainer.models.explain import explain, explain_ease

    kind = info.get("model", "als")
    published = await _published(cache, recs, lang, str(info.get("version")))
    if published is None or kind not in ("als", "ease"):
        return {}
    meta = published.meta
    if kind == "ease":
        raw = await recs.ease_rows(lang, published.version, views)
        rows = {j: np.frombuffer(r, dtype="<f4") for j, r in raw.items()
                if len(r) == 4 * published.item_ids.size}
        return explain_ease(published.item_ids, rows, views, meta.get("ease_scaling", "binary"),
                            ids)
    model = PublishedALS(item_ids=published.item_ids, item_factors=published.item_factors,
                         regularization=float(meta["regularization"]),
                         alpha=float(meta["alpha"]), scaling=meta.get("scaling", "linear"),
                         version=published.version, item_totals=published.item_totals)
    return explain(model, views, ids)


async def explain_user(config: ServeConfig, cache: PageCache, recs: AsyncRecsClient,
                       lang: str, user: str, n: int) -> dict:
    """The user's list with, per item, the viewed resources that earned it its place
    (``trainer.models.explain``), and the user's views. Needs a configured token (personal data)."""
    if not config.token:
        raise ApiError(403, "user_lookups_off", "a user's views are personal data: start "
                       "recs serve with --token (or RECS_TOKEN) to look users up")
    info = await recs.model_info(lang)
    if info is None:
        raise ApiError(404, "no_model", f"no model is published for {lang!r}")
    found = await recs.recommend(lang, user, n)
    views = await recs.views(lang, user)
    items = rendered(found)
    reasons = {}
    if found.source == "personal":
        try:
            reasons = await _reasons(cache, recs, lang, info, views,
                                     [i["resource_id"] for i in items])
        except (ValueError, KeyError, np.linalg.LinAlgError):
            # A damaged or foreign publish: the list still shows, without reasons.
            log.warning("cannot explain with the published %s model", lang, exc_info=True)
    named = await recs.details(lang, {r.resource_id for rs in reasons.values() for r in rs}
                               | set(views))
    for item in items:
        item["because"] = [{"resource_id": r.resource_id, "share": round(r.share, 4),
                            "contribution": round(r.contribution, 6),
                            "title": named.get(r.resource_id, {}).get("title")}
                           for r in reasons.get(item["resource_id"], [])]
    viewed = [{"resource_id": rid, "count": count, "title": named.get(rid, {}).get("title")}
              for rid, count in sorted(views.items(), key=lambda kv: (-kv[1], kv[0]))]
    return {"lang": lang, "user_id": user, "source": found.source, "items": items,
            "views": viewed}


# -- the page ----------------------------------------------------------------------------------


def _page(title: str, body: str, token_lookups: bool = False) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/page.css">'
        '<script src="/static/page.js" defer></script></head>'
        f'<body data-user-lookups="{"on" if token_lookups else "off"}">{body}</body></html>\n')


def login_form(wrong: bool = False) -> str:
    note = '<p class="error">That token is not the one.</p>' if wrong else ""
    return _page("recs: sign in", (
        '<main class="login"><h1>recs</h1><p>This server needs its token.</p>' + note +
        '<form method="post" action="/login"><label>Token <input type="password" '
        'name="token" autocomplete="current-password" required></label> '
        '<button type="submit">Sign in</button></form></main>'))


async def render_page(config: ServeConfig, recs: AsyncRecsClient, lag=None,
                      experiments=None) -> str:
    """The whole page; ``lag``: a ``recs.serve_kafka.LagProbe`` when Kafka is configured;
    ``experiments``: a ``recs.serve_experiments.ExperimentReports``."""
    from recs.serve_experiments import section

    langs = await recs.langs()
    sections = [_lang_section(await recs.status(lang), section(
        await experiments.report(lang) if experiments is not None else None))
        for lang in langs]
    if not sections:
        sections = ['<p class="empty">No language has counts yet: nothing consumed.</p>']
    if lag is not None:
        sections.insert(0, _lag_section(await lag.lag(recs)))
    options = "".join(f'<option value="{escape(lang)}">{escape(lang)}</option>'
                      for lang in langs)
    body = (
        '<header><h1>recs</h1><p>What the recommender publishes, per language. Generated '
        f'{escape(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))}.</p></header>'
        '<main>' + "".join(sections) + _lookups(options, bool(config.token)) + '</main>')
    return _page("recs", body, bool(config.token))


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _lang_section(status: LangStatus, experiment: str = "") -> str:
    lang = escape(status.lang)
    rows = []
    model = status.model
    if model is None:
        rows.append('<tr><th>model</th><td>none published yet</td></tr>')
    else:
        rows += _model_rows(model)
    batch = ("no counts yet" if status.idle_seconds is None
             else f"{_human_age(status.idle_seconds)} ago")
    rows += [f'<tr><th>updater backlog</th><td class="backlog">{status.backlog} users</td></tr>',
             f'<tr><th>last batch of views</th><td>{escape(batch)}</td></tr>',
             f'<tr><th>resource details</th><td>{status.resources} loaded</td></tr>']
    return (f'<section class="lang" id="lang-{lang}"><h2>{lang}</h2>'
            f'<div class="cols"><table class="model">{"".join(rows)}</table>'
            f'<figure><figcaption>Quality over retrains</figcaption>{chart(status.history)}'
            f'</figure></div>{experiment}</section>')


def _lag_section(lag) -> str:
    where = escape(f"topic {lag.topic}, group {lag.group}")
    if lag.total is None:
        text = f'<p class="error">Kafka end offsets unavailable: {escape(lag.error or "")}</p>'
    else:
        parts = ", ".join(f"{p}: {n}" for p, n in sorted(lag.partitions.items()))
        text = (f'<p>Consumer lag: <strong class="lag">{lag.total}</strong> events not yet '
                f'applied to Redis ({where}; per partition {escape(parts)}).</p>')
    return f'<section id="consumer"><h2>Consumer</h2>{text}</section>'


def _model_rows(model: dict) -> list[str]:
    """The model hash as table rows: the headline fields, the age, the settings and filters
    on one line each, then whatever else the trainer recorded."""
    def row(name: str, value: str, cls: str = "") -> str:
        attr = f' class="{cls}"' if cls else ""
        return f"<tr><th>{escape(name)}</th><td{attr}>{escape(value)}</td></tr>"

    rows = [row(LABELS.get(k, k), str(model[k])) for k in SHOWN_FIRST if k in model]
    rows.insert(min(2, len(rows)), row("age", _human_age(age_seconds(model.get("trained_at"))),
                                       "age"))
    grouped = {k for names in GROUPED.values() for k in names}
    for label, names in GROUPED.items():
        values = [f"{k} {model[k]}" for k in names if k in model]
        if values:
            rows.append(row(label, ", ".join(values)))
    rest = sorted(k for k in model if k not in SHOWN_FIRST and k not in grouped
                  and k not in HIDDEN)
    if rest:
        rows.append(row("other", ", ".join(f"{k} {model[k]}" for k in rest)))
    return rows


def _lookups(options: str, user_lookups: bool) -> str:
    user = ('<form id="user-form" class="lookup"><label>Language <select name="lang">'
            f'{options}</select></label> <label>User id <input name="q" required></label> '
            '<button type="submit">Look up</button></form><div id="user-result"></div>'
            if user_lookups else
            '<p class="off">User look-ups are off: a user\'s views are personal data, so '
            'they need a server started with <code>--token</code>.</p>')
    return (
        '<section id="lookups"><h2>Look-ups</h2>'
        '<form id="resource-form" class="lookup"><label>Language <select name="lang">'
        f'{options}</select></label> <label>Resource id or title <input name="q" required>'
        '</label> <button type="submit">Similar</button></form>'
        f'<div id="resource-result"></div>{user}</section>')


def chart(history: list[dict], width: int = 420, height: int = 160) -> str:
    """An SVG line chart of NDCG@k per retrain: the model against popularity."""
    points = []
    for entry in history:
        metrics = entry.get("metrics") or {}
        model, baseline = (metrics.get(s, {}).get("ndcg") for s in ("model", "popularity"))
        if isinstance(model, int | float):
            points.append((entry, float(model), baseline if isinstance(baseline, int | float)
                           else None))
    if not points:
        return ('<p class="nochart">No evaluated retrain yet (<code>recs train --evaluate'
                '</code> stores held-out metrics).</p>')
    k = (points[-1][0].get("metrics") or {}).get("k", 10)
    top = max(max(p[1] for p in points), max((p[2] or 0) for p in points)) * 1.15 or 1.0
    pad = 30

    def xy(i: int, v: float) -> str:
        x = pad + (width - 2 * pad) * (i / max(len(points) - 1, 1) if len(points) > 1 else .5)
        return f"{x:.1f},{height - pad - (height - 2 * pad) * v / top:.1f}"

    lines = []
    for cls, col in (("model", 1), ("popularity", 2)):
        pts = [xy(i, p[col]) for i, p in enumerate(points) if p[col] is not None]
        if pts:
            # A retrain the quality gate kept from publishing: a hollow dot.
            gated = [p[0].get("published") is False for p in points if p[col] is not None]
            dots = "".join(f'<circle class="{cls}{" gated" if g else ""}" '
                           f'cx="{pt.split(",")[0]}" cy="{pt.split(",")[1]}" r="3"/>'
                           for pt, g in zip(pts, gated, strict=True))
            lines.append(f'<polyline class="{cls}" points="{" ".join(pts)}"/>{dots}')
    last = points[-1]
    label = escape(f"NDCG@{k}: model {last[1]:.3f}" + (
        f", popularity {last[2]:.3f}" if last[2] is not None else ""))
    span = escape(" to ".join(dict.fromkeys(
        str(p[0].get("trained_at") or "?")[:10] for p in (points[0], last))))
    legend = (f'<line class="model" x1="{width - 150}" y1="12" x2="{width - 130}" y2="12"/>'
              f'<text x="{width - 126}" y="15">model</text>'
              f'<line class="popularity" x1="{width - 85}" y1="12" x2="{width - 65}" y2="12"/>'
              f'<text x="{width - 61}" y="15">popularity</text>')
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{label}"><line class="axis" x1="{pad}" y1="{height - pad}" '
            f'x2="{width - pad}" y2="{height - pad}"/><line class="axis" x1="{pad}" y1="{pad}" '
            f'x2="{pad}" y2="{height - pad}"/><text x="4" y="{pad + 4}">{top:.2f}</text>'
            f'<text x="18" y="{height - pad + 4}">0</text>{legend}'
            f'<text x="{pad}" y="{height - 16}">{len(points)} retrain(s), {span}</text>'
            f'<text x="{pad}" y="{height - 4}">last: {label}</text>'
            + "".join(lines) + "</svg>")
