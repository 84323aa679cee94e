"""The experiment readout in ``recs serve``: a section of the operator page (the report of
store/experiment_report.py as a table and an inline SVG of each arm's CTR with its 95 %
interval) and Prometheus gauges of the per-arm rates on ``/metrics``.

The report reads every user's counts of the experiment (a HSCAN per arm), so it is computed
in a worker thread with a synchronous client and kept ``TTL`` seconds per language: a page
load or a scrape never costs more than one report per language per TTL.

On a Redis Cluster the report reads the same keys under the cluster layout
(``store.cluster_keys.layout`` of the report's own client, unless keys were given): every
counter and model hash it reads is on the language's item side.
"""

from __future__ import annotations

import asyncio
import time
from html import escape

from prometheus_client import CollectorRegistry, Gauge

from store.cluster_keys import layout
from store.connection import connect
from store.experiment_report import build_report
from store.keys import Keys

TTL = 30.0
"""Seconds a language's report is reused (page loads and scrapes)."""
GAUGES = {"ctr": "click-through rate of the arm's users' lists (clicks / impressions)",
          "low": "lower end of the CTR's 95 % interval (by user)",
          "high": "upper end of the CTR's 95 % interval (by user)",
          "impressions": "impressions of the arm's lists", "clicks": "clicks on them",
          "users": "users of the arm shown a list", "coverage": "share of the catalogue shown"}


class ExperimentReports:
    """Reports per language, cached; the gauges, refreshed from them."""

    def __init__(self, redis_url: str, keys: Keys | None, registry: CollectorRegistry,
                 prefix: str = "recs") -> None:
        self.redis_url, self.keys, self.prefix = redis_url, keys, prefix
        """``keys``: the layout given (tests); None: the report client's own."""
        self._client = None
        self._held: dict[str, tuple[float, dict | None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        names = {"ctr": "recs_experiment_ctr", "low": "recs_experiment_ctr_low",
                 "high": "recs_experiment_ctr_high"}
        self.gauges = {f: Gauge(names.get(f, f"recs_experiment_{f}"), text,
                                ["lang", "experiment", "arm"], registry=registry)
                       for f, text in GAUGES.items()}
        self.diff = Gauge("recs_experiment_ctr_diff", "CTR of the arm minus the default arm's",
                          ["lang", "experiment", "arm"], registry=registry)

    def _report(self, lang: str) -> dict | None:
        if self._client is None:
            self._client = connect(self.redis_url)
        if self.keys is None:
            self.keys = layout(self._client, self.prefix)
        return build_report(self._client, self.keys, lang)

    async def report(self, lang: str) -> dict | None:
        # One build at a time per language: a page load and a scrape that find the cache
        # expired together would each scan every arm's users otherwise.
        async with self._locks.setdefault(lang, asyncio.Lock()):
            at, held = self._held.get(lang, (-TTL, None))
            if time.monotonic() - at < TTL:
                return held
            report = await asyncio.to_thread(self._report, lang)
            self._held[lang] = (time.monotonic(), report)
            return report

    async def refresh_gauges(self, langs: list[str]) -> None:
        """The gauges of every RUNNING experiment's arms (an ended one's are dropped). The
        reports are read first, so a scrape never sees the gauges cleared and not yet set."""
        reports = [(lang, await self.report(lang)) for lang in langs]
        for gauge in (*self.gauges.values(), self.diff):
            gauge.clear()
        for lang, report in reports:
            if report is None or report["experiment"]["status"] != "running":
                continue
            exp = report["experiment"]["id"]
            for arm in report["arms"]:
                for f, gauge in self.gauges.items():
                    if arm.get(f) is not None:
                        gauge.labels(lang, exp, arm["name"]).set(arm[f])
            for d in report["differences"]:
                self.diff.labels(lang, exp, d["arm"]).set(d["diff"])

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def section(report: dict | None) -> str:
    """The page's experiment block for one language ('' without an experiment)."""
    if report is None:
        return ""
    e = report["experiment"]
    rows = "".join(
        f'<tr class="arm"><td>{escape(a["name"])}{" (default)" if a["default"] else ""}</td>'
        f'<td>{escape(a["spec"])}</td><td>{a["users"]}</td><td>{a["impressions"]}</td>'
        f'<td>{a["clicks"]}</td><td class="ctr">{a["ctr"]:.4f}</td>'
        f'<td>{a["low"]:.4f} to {a["high"]:.4f}</td>'
        f'<td>{_share(a["coverage"])}</td>'
        f'<td>{_ndcg(a)}</td></tr>' for a in report["arms"])
    diffs = "".join(
        f'<p class="diff">{escape(d["arm"])} - {escape(d["vs"])}: {d["diff"]:+.4f} '
        f'[{d["low"]:+.4f}, {d["high"]:+.4f}], p = {d["p"]:.3g}: '
        f'<strong>{"significant" if d["significant"] else "not significant"}</strong></p>'
        for d in report["differences"])
    return (f'<div class="experiment"><h3>Experiment {escape(e["id"])} '
            f'({escape(e["status"])})</h3><table class="arms"><tr><th>arm</th><th>spec</th>'
            '<th>users</th><th>impressions</th><th>clicks</th><th>CTR</th><th>95 % interval'
            '</th><th>coverage</th><th>NDCG@10 (offline)</th></tr>' + rows + '</table>'
            + diffs + chart(report) + f'<p class="note">{escape(report["method"])}</p></div>')


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ndcg(arm: dict) -> str:
    value = (arm.get("offline") or {}).get("ndcg")
    return "-" if value is None else f"{value:.4f}"


def chart(report: dict, width: int = 420, row: int = 26) -> str:
    """Each arm's CTR (a dot) and 95 % interval (a bar), on one axis from 0."""
    arms = report["arms"]
    pad, left = 20, 90
    height = pad * 2 + row * len(arms)
    top = max([a["high"] for a in arms] + [1e-9]) * 1.1

    def x(v: float) -> float:
        return left + (width - left - pad) * v / top

    marks = []
    for i, a in enumerate(arms):
        y = pad + row * i + row / 2
        marks.append(
            f'<text x="4" y="{y + 4:.1f}">{escape(a["name"])}</text>'
            f'<line class="interval" x1="{x(a["low"]):.1f}" y1="{y:.1f}" '
            f'x2="{x(a["high"]):.1f}" y2="{y:.1f}"/>'
            f'<circle class="arm-ctr" cx="{x(a["ctr"]):.1f}" cy="{y:.1f}" r="4"/>')
    label = escape("CTR by arm: " + ", ".join(f'{a["name"]} {a["ctr"]:.4f}' for a in arms))
    return (f'<svg class="chart experiment-chart" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{label}"><line class="axis" x1="{left}" y1="{height - pad}" '
            f'x2="{width - pad}" y2="{height - pad}"/>'
            f'<text x="{left - 4}" y="{height - 6}">0</text>'
            f'<text x="{width - pad - 30}" y="{height - 6}">{top:.3f}</text>'
            + "".join(marks) + "</svg>")
