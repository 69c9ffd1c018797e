"""``subagent-telemetry top``: a live terminal view of subagents, like ``htop``, from /metrics or Prometheus.

A poller thread reads the source every ``interval_seconds`` and keeps a short history; the screen is
rebuilt from that history, so a dead or slow source never blocks the keyboard (``q`` quits) and is shown
with the last good data. Rates and ratios are taken over ``window_seconds`` (the alerts' rate window by
default, so the error ratio is the one the alert compares with its threshold).
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .. import _catalog as cat
from .._config import Config
from .._vocab import Status
from ._sources import MetricsEndpoint, PrometheusAPI, Readings, SourceError, delta_buckets, quantile


@dataclass
class TopOptions:
    url: str
    config: Config
    source: str = "auto"  # auto | metrics | prometheus
    interval_seconds: float = 1.0
    window_seconds: float | None = None  # None: alerts.rate_window
    timeout_seconds: float = 2.0
    once: bool = False
    top_agents: int = 5


def source_kind(url: str, source: str = "auto") -> str:
    """``metrics`` for an agent's /metrics URL, ``prometheus`` for anything else (unless forced)."""
    if source != "auto":
        return source
    return "metrics" if urlparse(url).path.rstrip("/").endswith("/metrics") else "prometheus"


@dataclass
class Poll:
    """What one read of the source gave: the readings now, and for Prometheus the readings a window ago."""

    current: Readings
    base: Readings | None = None
    alerts: list[dict[str, str]] | None = None
    latency_seconds: float = 0.0


@dataclass
class SourceState:
    """The poller's shared state: history of good polls and the last failure (if the last read failed)."""

    history: deque[Poll] = field(default_factory=lambda: deque(maxlen=3600))
    error: str | None = None
    error_since: float | None = None
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Poller:
    """Reads the source on a thread so a slow source never freezes the screen or the keyboard."""

    def __init__(self, options: TopOptions) -> None:
        self.options = options
        self.kind = source_kind(options.url, options.source)
        self.state = SourceState()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._window = window_seconds(options)
        if self.kind == "metrics":
            self._metrics = MetricsEndpoint(options.url, options.timeout_seconds)
        else:
            self._prom = PrometheusAPI(options.url, options.config.alerts.selector, options.timeout_seconds)

    def poll_once(self) -> None:
        """One read; the outcome goes into the shared state (never raises)."""
        started = time.monotonic()
        try:
            poll = self._read()
        except Exception as err:  # whatever a source answers is shown, never raised
            text = str(err) if isinstance(err, SourceError) else f"{type(err).__name__}: {err}"
            with self.state.lock:
                self.state.attempts += 1
                if self.state.error is None:
                    self.state.error_since = time.time()
                self.state.error = text
            return
        poll.latency_seconds = time.monotonic() - started
        with self.state.lock:
            self.state.attempts += 1
            self.state.error = None
            self.state.error_since = None
            self.state.history.append(poll)

    def _read(self) -> Poll:
        if self.kind == "metrics":
            return Poll(self._metrics.read())
        from ..render.rules import ALERT_NAMES  # noqa: PLC0415 - only the Prometheus source shows alerts

        now = time.time()
        current = self._prom.readings(now)
        if not current.series:
            selector = self._prom.selector
            msg = f"no subagent metrics match {{{selector}}} at {self._prom.url} (see alerts.selector)"
            raise SourceError(msg)
        return Poll(
            current,
            base=self._prom.readings(now - self._window),
            alerts=self._prom.firing_alerts(ALERT_NAMES.values()),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="subagent-top-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(self.options.interval_seconds - (time.monotonic() - started), 0.05))

    def stop(self) -> None:
        self._stop.set()


def window_seconds(options: TopOptions) -> float:
    from .._config import duration_seconds  # noqa: PLC0415

    if options.window_seconds is not None:
        return options.window_seconds
    return duration_seconds(options.config.alerts.rate_window)


# --------------------------------------------------------------------------------------------------
# The view: numbers first (testable without a terminal), then the rich renderables.


@dataclass
class DepthRow:
    depth: str
    executions: float
    rate_per_second: float | None
    complete: float
    incomplete: float
    errors: float
    error_ratio: float | None
    active: float


@dataclass
class QuotaRow:
    resource: str
    used: float
    limit: float | None
    rate_per_second: float | None

    @property
    def seconds_to_exhaustion(self) -> float | None:
        if self.limit is None or not self.rate_per_second or self.rate_per_second <= 0:
            return None
        return max(self.limit - self.used, 0.0) / self.rate_per_second


@dataclass
class AgentRow:
    name: str
    executions: float
    rate_per_second: float | None  # over the window
    errors: float


@dataclass
class View:
    depths: list[DepthRow]
    total: DepthRow
    active: float
    max_concurrency: float | None
    quotas: list[QuotaRow]
    latency: dict[str, tuple[float | None, float | None]]  # metric → (p50, p95)
    agents: list[AgentRow]
    rejections: dict[str, float]
    alerts: list[dict[str, str]] | None
    window_seconds: float
    rate_span_seconds: float | None
    active_scope: str = ""


def _base_for(history: list[Poll], window: float) -> tuple[Readings | None, Readings]:
    """The current readings and the oldest kept within ``window`` (Prometheus: the one a window ago)."""
    newest = history[-1]
    if newest.base is not None:
        return newest.base, newest.current
    cutoff = newest.current.at_unix_seconds - window
    older = [p.current for p in history[:-1] if p.current.at_unix_seconds >= cutoff - 0.5]
    return (older[0] if older else None), newest.current


def build_view(history: list[Poll], window: float, per_process: str | None = None) -> View:
    """Every figure on the screen, from the polls kept so far (at least one)."""
    base, cur = _base_for(history, window)
    span = cur.at_unix_seconds - base.at_unix_seconds if base is not None else None

    def delta(name: str, where: dict[str, str] | None = None) -> float | None:
        if base is None:
            return None
        return max(cur.total(name, where) - base.total(name, where), 0.0)

    depths_seen = sorted(
        set(cur.by(cat.EXECUTIONS.name, "depth")) | set(cur.by(cat.ACTIVE.name, "depth")),
        key=lambda d: (not d.isdigit(), int(d) if d.isdigit() else 0, d),
    )
    rows = [_depth_row(cur, depth, delta, span) for depth in depths_seen]
    total = _depth_row(cur, None, delta, span)
    quotas = _quota_rows(history, cur)
    latency = {}
    for spec in (cat.DURATION, cat.TOKENS, cat.TURNS):
        buckets = delta_buckets(cur.buckets(spec), base.buckets(spec) if base is not None else [])
        if not buckets or buckets[-1][1] <= 0:  # Nothing finished in the window: since the start.
            buckets = cur.buckets(spec)
        latency[spec.name] = (quantile(0.5, buckets), quantile(0.95, buckets))
    agents = []
    by_agent = cur.by(cat.EXECUTIONS.name, cat.AGENT_LABEL)
    if set(by_agent) - {""}:
        old = base.by(cat.EXECUTIONS.name, cat.AGENT_LABEL) if base is not None else {}
        errs = cur.by(cat.ERRORS.name, cat.AGENT_LABEL)
        for name, value in by_agent.items():
            rate = max(value - old.get(name, 0.0), 0.0) / span if base is not None and span else None
            agents.append(AgentRow(name, value, rate, errs.get(name, 0.0)))
        # The busiest now first; totals break ties (and order the first frame).
        agents.sort(key=lambda a: (-(a.rate_per_second or 0.0), -a.executions, a.name))
    max_conc = cur.samples(cat.MAX_CONCURRENCY.name)
    return View(
        depths=rows,
        total=total,
        active=_active(cur, per_process),
        max_concurrency=max(v for _, v in max_conc) if max_conc else None,
        quotas=quotas,
        latency=latency,
        agents=agents,
        rejections=cur.by(cat.QUOTA_REJECTIONS.name, "resource"),
        alerts=history[-1].alerts,
        window_seconds=window,
        rate_span_seconds=span,
        active_scope=" (busiest process)" if per_process is not None else "",
    )


Delta = Callable[[str, dict[str, str]], float | None]


def _active(cur: Readings, per_process: str | None) -> float:
    """Running executions to compare with max_concurrency: all of them, or with per-process limits (an
    in-memory store, read through Prometheus) those of the busiest process (``per_process`` names it)."""
    if per_process is None:
        return cur.total(cat.ACTIVE.name)
    return max(cur.by(cat.ACTIVE.name, per_process).values(), default=0.0)


def _depth_row(cur: Readings, depth: str | None, delta: Delta, span: float | None) -> DepthRow:
    where = {"depth": depth} if depth is not None else {}
    executions_delta = delta(cat.EXECUTIONS.name, where)
    errors_delta = delta(cat.ERRORS.name, where)
    ratio = None
    if executions_delta:
        ratio = (errors_delta or 0.0) / executions_delta
    rate = executions_delta / span if executions_delta is not None and span else None
    return DepthRow(
        depth=depth if depth is not None else "all",
        executions=cur.total(cat.EXECUTIONS.name, where),
        rate_per_second=rate,
        complete=cur.total(cat.COMPLETIONS.name, {**where, "status": Status.COMPLETE.value}),
        incomplete=cur.total(cat.COMPLETIONS.name, {**where, "status": Status.INCOMPLETE.value}),
        errors=cur.total(cat.ERRORS.name, where),
        error_ratio=ratio,
        active=cur.total(cat.ACTIVE.name, where),
    )


def _quota_rows(history: list[Poll], cur: Readings) -> list[QuotaRow]:
    used = cur.by(cat.QUOTA_USED.name, "resource", agg="max")
    limits = cur.by(cat.QUOTA_LIMIT.name, "resource", agg="max")
    rows = []
    for resource in sorted(set(used) | set(limits)):
        rows.append(
            QuotaRow(resource, used.get(resource, 0.0), limits.get(resource), _spend_rate(history, resource))
        )
    return rows


def _spend_rate(history: list[Poll], resource: str) -> float | None:
    """How fast a budget is spent now: between the two newest readings (or a window ago) while it rises."""
    pairs: list[tuple[Readings, Readings]] = []
    if len(history) >= 2:
        pairs.append((history[-2].current, history[-1].current))
    if history[-1].base is not None:
        pairs.append((history[-1].base, history[-1].current))
    for old, new in pairs:
        before = old.by(cat.QUOTA_USED.name, "resource", agg="max").get(resource)
        after = new.by(cat.QUOTA_USED.name, "resource", agg="max").get(resource)
        span = new.at_unix_seconds - old.at_unix_seconds
        if before is not None and after is not None and after > before and span > 0:
            return (after - before) / span
    return None


# --------------------------------------------------------------------------------------------------
# Rendering


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "-"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{value:,.{digits}f}"


def _amount(value: float | None) -> str:
    """A budget figure: whole numbers as counts, small fractions (money, seconds) with 3 digits."""
    if value is None or value >= 100 or value.is_integer():
        return _num(value)
    return f"{value:.3g}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _header(options: TopOptions, kind: str, state: SourceState, now: float) -> RenderableType:
    what = "agent /metrics" if kind == "metrics" else "Prometheus"
    title = Text.assemble(
        ("subagent-telemetry top", "bold"),
        f"  {options.url} ({what})  every {options.interval_seconds:g}s  ",
        time.strftime("%H:%M:%S", time.localtime(now)),
    )
    if state.error is not None:
        last = state.history[-1].current.at_unix_seconds if state.history else None
        shown = f"data from {now - last:.0f}s ago" if last is not None else "no data yet"
        status = Text.assemble(
            ("SOURCE DOWN", "bold white on red"),
            f" {state.error} - retrying every {options.interval_seconds:g}s; {shown}",
        )
    elif state.history:
        status = Text(f"source ok ({state.history[-1].latency_seconds * 1000:.0f} ms)", style="green")
    else:
        status = Text("connecting...", style="yellow")
    return Group(title, status)


def _table(title: str, columns: tuple[str, ...], left: tuple[str, ...]) -> Table:
    """A titled table of no-wrap columns, one space apart; ``left`` columns left-aligned, numbers right."""
    table = Table(
        box=box.SIMPLE_HEAD, title=title, title_justify="left", pad_edge=False, padding=(0, 0, 0, 1)
    )
    for name in columns:
        table.add_column(name, justify="left" if name in left else "right", no_wrap=True)
    return table


def _depth_table(view: View) -> Table:
    table = _table(
        "Executions by depth",
        (
            "depth",
            "executions",
            "exec/s",
            "complete",
            "incomplete",
            "errors",
            "error ratio",
            "active",
        ),
        left=("depth",),
    )
    for row in [*view.depths, view.total]:
        table.add_row(
            Text(row.depth),  # Label values are text, never rich markup ("agent[/v2]" is a valid name).
            _num(row.executions),
            _num(row.rate_per_second, 2),
            _num(row.complete),
            _num(row.incomplete),
            _num(row.errors),
            _pct(row.error_ratio),
            _num(row.active),
            style="bold" if row.depth == "all" else None,
        )
    return table


def _bar(used: float, limit: float | None, width: int = 24, warn: float = 1.0) -> RenderableType:
    """A bar of used/limit: green, yellow from ``warn`` (a share), red when full."""
    if not limit:
        return Text("no limit", style="dim")
    colour = "green" if used < warn * limit else "yellow"
    return ProgressBar(
        total=limit, completed=min(used, limit), width=width, complete_style=colour, finished_style="bold red"
    )


def _health(view: View, config: Config) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    threshold = config.alerts.high_error_rate.threshold
    ratio = view.total.error_ratio
    over = ratio is not None and ratio > threshold
    window = f"{view.rate_span_seconds:.0f}s" if view.rate_span_seconds else "-"
    table.add_row(
        "error ratio",
        Text(_pct(ratio), style="bold red" if over else "green"),
        f"alert threshold {_pct(threshold)} over {window}" + ("  ABOVE THRESHOLD" if over else ""),
    )
    table.add_row(
        "concurrency",
        Text(f"{_num(view.active)} active / {_num(view.max_concurrency)} max{view.active_scope}"),
        _bar(view.active, view.max_concurrency),
    )
    return table


def _quota_table(view: View, warn: float) -> Table:
    table = _table(
        "Quotas (session budget)",
        ("resource", "used", "limit", "use", "%", "spend/s", "empty in", "refused"),
        left=("resource", "use"),
    )
    for q in view.quotas:
        share = q.used / q.limit if q.limit else None
        table.add_row(
            Text(q.resource),
            _amount(q.used),
            _amount(q.limit),
            _bar(q.used, q.limit, width=14, warn=warn),
            _pct(share),
            _num(q.rate_per_second, 2 if (q.rate_per_second or 0) < 10 else 0),
            _eta(q.seconds_to_exhaustion),
            _num(view.rejections.get(q.resource, 0.0)),
        )
    return table


def _refusals(view: View) -> RenderableType:
    budget = {q.resource for q in view.quotas}
    others = [f"{r} {_num(v)}" for r, v in sorted(view.rejections.items()) if r not in budget]
    return Text("refused per execution: " + (", ".join(others) if others else "none"))


def _latency_table(view: View) -> Table:
    table = _table("Per execution", ("", "p50", "p95"), left=("",))
    labels = {
        cat.DURATION.name: ("duration", "s", 2),
        cat.TOKENS.name: ("tokens", "", 0),
        cat.TURNS.name: ("turns", "", 1),
    }
    for name, (p50, p95) in view.latency.items():
        label, unit, digits = labels[name]
        table.add_row(label, f"{_num(p50, digits)}{unit}", f"{_num(p95, digits)}{unit}")
    return table


def _agents_table(view: View, rows: int) -> Table | None:
    if not view.agents or rows <= 0:
        return None
    table = _table("Top agents", ("agent", "executions", "errors", "exec/s"), left=("agent",))
    for row in view.agents[:rows]:
        table.add_row(Text(row.name), _num(row.executions), _num(row.errors), _num(row.rate_per_second, 2))
    return table


def _alerts(view: View) -> RenderableType:
    if view.alerts is None:
        return Text("alerts: shown when the source is Prometheus", style="dim")
    if not view.alerts:
        return Text("alerts: none firing", style="green")
    names = sorted({a.get("alertname", "?") for a in view.alerts})
    return Text("FIRING: " + ", ".join(names), style="bold red")  # Text: never parsed as markup.


def render(
    options: TopOptions, kind: str, state: SourceState, console: Console, height: int | None
) -> RenderableType:
    """One screen: header, source status, health and alerts, then the sections that fit in ``height``
    lines (all of them when ``height`` is None), and the key help as the last line."""
    now = time.time()
    with state.lock:
        history = list(state.history)
        snapshot = SourceState(deque(history), state.error, state.error_since, state.attempts)
    footer: list[RenderableType] = [] if options.once else [Text("q quit", style="reverse")]
    parts: list[RenderableType] = [_header(options, kind, snapshot, now)]
    if history:
        config = options.config
        per_process = (
            config.alerts.instance_label if kind == "prometheus" and not config.quota.shared else None
        )
        view = build_view(history, window_seconds(options), per_process)
        parts += [_health(view, options.config), _alerts(view)]
        side = Table.grid(padding=(0, 4))
        side.add_row(_latency_table(view), _agents_table(view, options.top_agents) or Text(""))
        body = [
            _depth_table(view),
            _quota_table(view, options.config.alerts.quota_nearly_exhausted.threshold),
            _refusals(view),
            side,
        ]
        budget = None if height is None else height - _lines(console, [*parts, *footer])
        for part in body:
            size = _lines(console, [part])
            if budget is not None and size > budget:
                break  # The rest does not fit: a taller terminal shows it.
            parts.append(part)
            budget = None if budget is None else budget - size
    return Group(*parts, *footer)


def _lines(console: Console, parts: list[RenderableType]) -> int:
    return len(console.render_lines(Group(*parts), console.options.reset_height(), pad=False))


# --------------------------------------------------------------------------------------------------
# Running


@contextlib.contextmanager
def _keys() -> Iterator[object]:
    """Stdin in cbreak mode (keys without Enter) while the view runs, restored on exit."""
    import termios  # noqa: PLC0415 - POSIX only
    import tty  # noqa: PLC0415

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _quit_pressed(fd: int | None, timeout_seconds: float) -> bool:
    if fd is None:
        time.sleep(timeout_seconds)
        return False
    ready, _, _ = select.select([fd], [], [], timeout_seconds)
    if not ready:
        return False
    key = os.read(fd, 32)
    return b"q" in key.lower() or b"\x03" in key


def run_top(options: TopOptions, console: Console | None = None) -> int:
    """Run the live view until ``q`` (or one frame with ``once``); returns the exit code."""
    console = console or Console()
    poller = Poller(options)
    if options.once:
        poller.poll_once()
        if poller.kind == "metrics":  # Two reads one interval apart, so the frame shows rates.
            time.sleep(options.interval_seconds)
            poller.poll_once()
        console.print(render(options, poller.kind, poller.state, console, None))
        return 0 if poller.state.error is None else 1
    poller.start()
    try:
        if not (console.is_terminal and sys.stdin.isatty()):
            return _run_plain(options, poller, console)
        with _keys() as fd, Live(console=console, screen=True, auto_refresh=False) as live:
            while True:
                live.update(
                    render(options, poller.kind, poller.state, console, console.size.height), refresh=True
                )
                if _quit_pressed(fd, options.interval_seconds):  # type: ignore[arg-type]
                    return 0
    except KeyboardInterrupt:
        return 0
    finally:
        poller.stop()


def _run_plain(options: TopOptions, poller: Poller, console: Console) -> int:
    """Not a terminal: print a plain frame every interval (Ctrl-C stops)."""
    while True:
        time.sleep(options.interval_seconds)
        console.print(render(options, poller.kind, poller.state, console, None))
        console.print()
        console.file.flush()  # A pipe is block-buffered: each frame goes out whole, when it is made.
