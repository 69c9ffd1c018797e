"""``subagent-telemetry report``: a self-contained HTML report with PNG charts, from Prometheus.

For a window (``--window 1h`` ending now or at ``--end``) or a finished batch run (``--start``/``--end``):
executions and outcomes by depth, duration/token/turn distributions, quota use over time, refusals, and
the alerts that fired. Charts are drawn by matplotlib (Agg, no display) into ``charts/*.png`` and
embedded in ``index.html`` as data URIs: the file opens offline, alone, with no CDN.
"""

from __future__ import annotations

import base64
import html
import io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _catalog as cat
from .._config import Config, duration_seconds
from ._sources import PrometheusAPI, SourceError, quantile

CHART_SIZE_INCHES = (8.0, 3.2)
POINTS = 240  # samples per time series chart


@dataclass
class ReportOptions:
    url: str
    config: Config
    out: Path
    window: str = "1h"
    start_unix_seconds: float | None = None
    end_unix_seconds: float | None = None
    title: str = "Subagent report"


@dataclass
class Chart:
    name: str
    title: str
    png: bytes


@dataclass
class ReportData:
    start: float
    end: float
    executions: dict[str, float] = field(default_factory=dict)  # by depth
    completions: dict[tuple[str, str], float] = field(default_factory=dict)  # (depth, status)
    errors: dict[tuple[str, str], float] = field(default_factory=dict)  # (depth, error_type)
    histograms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # cumulative increases
    quota: dict[str, tuple[list[float], list[float], list[float]]] = field(default_factory=dict)
    rate: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)  # depth → (t, exec/s)
    refusals: dict[str, float] = field(default_factory=dict)
    alerts: list[tuple[str, str, float, float]] = field(default_factory=list)  # name, labels, first, last


def collect(api: PrometheusAPI, start: float, end: float) -> ReportData:
    """Everything the report shows, read from Prometheus for ``[start, end]``."""
    from ..render.rules import ALERT_NAMES  # noqa: PLC0415 - render stays off the runtime path

    data = ReportData(start, end)
    span = f"{max(round(end - start), 1)}s"
    sel = api.matchers()

    def grouped(expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(lab.get(k, "") for k in labels): v for lab, v in api.query(expr, end) if not math.isnan(v)
        }

    data.executions = {
        k[0]: v
        for k, v in grouped(f"sum by (depth) (increase({cat.EXECUTIONS.name}{sel}[{span}]))", "depth").items()
    }
    completions = f"sum by (depth, status) (increase({cat.COMPLETIONS.name}{sel}[{span}]))"
    data.completions = {(k[0], k[1]): v for k, v in grouped(completions, "depth", "status").items()}
    errors = f"sum by (depth, error_type) (increase({cat.ERRORS.name}{sel}[{span}]))"
    data.errors = {(k[0], k[1]): v for k, v in grouped(errors, "depth", "error_type").items()}
    for spec in (cat.DURATION, cat.TOKENS, cat.TURNS):
        expr = f"sum by (le) (increase({spec.name}_bucket{sel}[{span}]))"
        data.histograms[spec.name] = api.histogram(expr, end)
    refusals = f"sum by (resource) (increase({cat.QUOTA_REJECTIONS.name}{sel}[{span}]))"
    data.refusals = {k[0]: v for k, v in grouped(refusals, "resource").items()}

    step = max((end - start) / POINTS, 1.0)
    used = api.query_range(f"max by (resource) ({cat.QUOTA_USED.name}{sel})", start, end, step)
    limits = {
        lab.get("resource", ""): dict(points)
        for lab, points in api.query_range(
            f"max by (resource) ({cat.QUOTA_LIMIT.name}{sel})", start, end, step
        )
    }
    for lab, points in used:
        resource = lab.get("resource", "")
        times = [t for t, _ in points]
        limit = limits.get(resource, {})
        data.quota[resource] = (times, [v for _, v in points], [limit.get(t, math.nan) for t in times])
    rate_window = f"{max(int(step * 4), 60)}s"
    for lab, points in api.query_range(
        f"sum by (depth) (rate({cat.EXECUTIONS.name}{sel}[{rate_window}]))", start, end, step
    ):
        data.rate[lab.get("depth", "")] = ([t for t, _ in points], [v for _, v in points])
    names = "|".join(ALERT_NAMES.values())
    for lab, points in api.query_range(
        f'ALERTS{{alertstate="firing", alertname=~"{names}"}}', start, end, step
    ):
        name = lab.pop("alertname", "?")
        for key in ("alertstate", "__name__"):
            lab.pop(key, None)
        shown = ", ".join(f"{k}={v}" for k, v in sorted(lab.items()) if k in {"resource", "severity", "job"})
        data.alerts.append((name, shown, points[0][0], points[-1][0]))
    data.alerts.sort(key=lambda a: (a[2], a[0]))
    return data


# --------------------------------------------------------------------------------------------------
# Charts (matplotlib, Agg)


def _figure() -> Any:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=CHART_SIZE_INCHES, dpi=100)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def _png(fig: Any) -> bytes:
    from matplotlib import pyplot as plt  # noqa: PLC0415

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data in this window", ha="center", va="center", transform=ax.transAxes, alpha=0.6)


def _depth_key(depth: str) -> tuple[int, str]:
    return (int(depth) if depth.isdigit() else 1 << 30, depth)


def outcome_chart(data: ReportData) -> Chart:
    fig, ax = _figure()
    depths = sorted({d for d, _ in [*data.completions, *data.errors]}, key=_depth_key)
    series: dict[str, list[float]] = {}
    for depth in depths:
        for (d, status), v in data.completions.items():
            if d == depth:
                series.setdefault(status, [0.0] * len(depths))[depths.index(depth)] += v
        for (d, error_type), v in data.errors.items():
            if d == depth:
                series.setdefault(f"error: {error_type}", [0.0] * len(depths))[depths.index(depth)] += v
    bottom = [0.0] * len(depths)
    for label, values in sorted(series.items()):
        if sum(values) > 0:
            ax.bar([f"depth {d}" for d in depths], values, bottom=bottom, label=label)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    if any(bottom):
        ax.legend(fontsize=8, loc="upper right")
    else:
        _no_data(ax)
    ax.set_ylabel("executions")
    ax.set_title("Outcomes by depth")
    return Chart("outcomes", "Outcomes by depth", _png(fig))


def distribution_chart(spec: cat.MetricSpec, buckets: list[tuple[float, float]], label: str) -> Chart:
    fig, ax = _figure()
    counts = [max(c - (buckets[i - 1][1] if i else 0.0), 0.0) for i, (_, c) in enumerate(buckets)]
    names = [f"≤{le:g}" if not math.isinf(le) else f">{buckets[-2][0]:g}" for le, _ in buckets]
    if buckets and buckets[-1][1] > 0:
        ax.bar(names, counts, color="#4c72b0")
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        marks = ", ".join(f"p{int(q * 100)} {quantile(q, buckets) or 0:.3g}" for q in (0.5, 0.95, 0.99))
        ax.set_title(f"{label} per execution ({marks})")
    else:
        _no_data(ax)
        ax.set_title(f"{label} per execution")
    ax.set_ylabel("executions")
    return Chart(spec.name, f"{label} per execution", _png(fig))


def _times(values: list[float]) -> list[Any]:
    from datetime import UTC, datetime  # noqa: PLC0415

    return [datetime.fromtimestamp(t, UTC) for t in values]


def quota_chart(data: ReportData) -> Chart:
    fig, ax = _figure()
    plotted = False
    for resource, (times, used, limits) in sorted(data.quota.items()):
        share = [
            u / lim * 100 if lim and not math.isnan(lim) else math.nan
            for u, lim in zip(used, limits, strict=True)
        ]
        if any(not math.isnan(s) for s in share):
            ax.plot(_times(times), share, label=resource)
            plotted = True
    if plotted:
        ax.set_ylabel("% of the session budget")
        ax.axhline(100, color="red", linewidth=0.8)
        ax.legend(fontsize=8, loc="upper left")
    else:
        _no_data(ax)
    ax.set_title("Quota use over time")
    return Chart("quota", "Quota use over time", _png(fig))


def rate_chart(data: ReportData) -> Chart:
    fig, ax = _figure()
    for depth, (times, values) in sorted(data.rate.items(), key=lambda kv: _depth_key(kv[0])):
        ax.plot(_times(times), values, label=f"depth {depth}")
    if data.rate:
        ax.legend(fontsize=8, loc="upper left")
        ax.set_ylabel("executions / s")
    else:
        _no_data(ax)
    ax.set_title("Executions started per second")
    return Chart("rate", "Executions started per second", _png(fig))


def refusal_chart(data: ReportData) -> Chart:
    fig, ax = _figure()
    shown = {r: v for r, v in sorted(data.refusals.items()) if v > 0}
    if shown:
        ax.bar(list(shown), list(shown.values()), color="#c44e52")
        ax.set_ylabel("refused or stopped")
    else:
        _no_data(ax)
    ax.set_title("Refusals by resource")
    return Chart("refusals", "Refusals by resource", _png(fig))


def charts(data: ReportData) -> list[Chart]:
    return [
        outcome_chart(data),
        rate_chart(data),
        distribution_chart(cat.DURATION, data.histograms.get(cat.DURATION.name, []), "Duration (s)"),
        distribution_chart(cat.TOKENS, data.histograms.get(cat.TOKENS.name, []), "Tokens"),
        distribution_chart(cat.TURNS, data.histograms.get(cat.TURNS.name, []), "Turns"),
        quota_chart(data),
        refusal_chart(data),
    ]


# --------------------------------------------------------------------------------------------------
# HTML

_CSS = """
body{font-family:'DejaVu Sans',Arial,sans-serif;margin:24px auto;max-width:960px;color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 10px;text-align:right} th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left} img{display:block;max-width:100%;margin:8px 0}
.none{color:#666;font-style:italic}
"""


def _fmt(value: float) -> str:
    # increase() extrapolates to the window's edges: counts are shown rounded.
    return f"{value:,.0f}"


def _summary_table(data: ReportData) -> str:
    depths = sorted(set(data.executions) | {d for d, _ in data.completions}, key=_depth_key)
    rows = []
    totals = [0.0, 0.0, 0.0, 0.0]
    for depth in depths:
        values = [
            data.executions.get(depth, 0.0),
            data.completions.get((depth, "complete"), 0.0),
            data.completions.get((depth, "incomplete"), 0.0),
            sum(v for (d, _), v in data.errors.items() if d == depth),
        ]
        totals = [t + v for t, v in zip(totals, values, strict=True)]
        rows.append((depth, values))
    body = "".join(
        f"<tr><td>{html.escape(d)}</td>"
        + "".join(f"<td>{_fmt(v)}</td>" for v in vals)
        + _ratio_cell(vals)
        + "</tr>"
        for d, vals in rows
    )
    total = (
        "<tr><th>all</th>"
        + "".join(
            f'<th id="total-{name}">{_fmt(v)}</th>'
            for name, v in zip(("executions", "complete", "incomplete", "errors"), totals, strict=True)
        )
        + _ratio_cell(totals, header=True)
        + "</tr>"
    )
    columns = ("depth", "executions", "complete", "incomplete", "errors", "error ratio")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    return f"<table>{head}{body}{total}</table>"


def _ratio_cell(values: list[float], header: bool = False) -> str:
    tag = "th" if header else "td"
    ratio = f"{values[3] / values[0] * 100:.1f}%" if values[0] else "-"
    return f"<{tag}>{ratio}</{tag}>"


def _alerts_html(data: ReportData) -> str:
    if not data.alerts:
        return '<p class="none">No alert of the rendered rules fired in this window.</p>'

    def when(t: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{html.escape(lab)}</td><td>{when(a)}</td><td>{when(b)}</td></tr>"
        for n, lab, a, b in data.alerts
    )
    columns = ("alert", "labels", "first firing (UTC)", "last firing (UTC)")
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    return f"<table>{head}{rows}</table>"


def _img(chart: Chart) -> str:
    data = base64.b64encode(chart.png).decode()
    return f'<img alt="{html.escape(chart.title)}" src="data:image/png;base64,{data}">'


def render_html(title: str, source: str, data: ReportData, made: list[Chart]) -> str:
    """The whole report as one HTML document; charts inlined as PNG data URIs."""
    window = (
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(data.start))} to "
        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(data.end))} UTC"
    )
    images = {c.name: _img(c) for c in made}
    refused = (
        ", ".join(f"{html.escape(r)} {_fmt(v)}" for r, v in sorted(data.refusals.items()) if v > 0) or "none"
    )
    spend = ""
    if "cost" in data.quota and data.quota["cost"][1]:
        last = data.quota["cost"][1][-1]
        spend = f"<p>Spend of the last session in the window: {last:.4f} (in cost.currency).</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="meta">{html.escape(source)} &middot; {window}</p>
<h2>Executions and outcomes by depth</h2>
{_summary_table(data)}
{images["outcomes"]}
{images["rate"]}
<h2>Per execution: duration, tokens, turns</h2>
{images[cat.DURATION.name]}
{images[cat.TOKENS.name]}
{images[cat.TURNS.name]}
<h2>Quota use over time</h2>
{spend}
{images["quota"]}
<h2>Refusals</h2>
<p>Refused or stopped by resource: {refused}.</p>
{images["refusals"]}
<h2>Alerts that fired</h2>
{_alerts_html(data)}
</body></html>
"""


def run_report(options: ReportOptions) -> int:
    end = options.end_unix_seconds if options.end_unix_seconds is not None else time.time()
    start = (
        options.start_unix_seconds
        if options.start_unix_seconds is not None
        else end - duration_seconds(options.window)
    )
    if start >= end:
        print(f"error: the window is empty (start {start} >= end {end})", file=sys.stderr)
        return 2
    api = PrometheusAPI(options.url, options.config.alerts.selector, timeout_seconds=30.0)
    try:
        data = collect(api, start, end)
    except SourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    made = charts(data)
    folder = options.out / "charts"
    source = f"{options.url} {{{options.config.alerts.selector}}}"
    index = options.out / "index.html"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for chart in made:
            (folder / f"{chart.name}.png").write_bytes(chart.png)
        index.write_text(render_html(options.title, source, data, made), encoding="utf-8")
    except OSError as err:
        print(f"error: cannot write the report under --out {options.out}: {err}", file=sys.stderr)
        return 1
    print(index)
    return 0
