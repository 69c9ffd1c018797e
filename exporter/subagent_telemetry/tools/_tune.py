"""``subagent-telemetry tune``: propose ``agent.subagent`` limits from what Prometheus observed.

The arithmetic (docs/tuning.md, "How tune does it") is the original design's quota planning with data
in place of guesses: each session budget is the 95th percentile of what sessions actually used, plus a
safety margin; ``max_executions`` is that token budget divided by the average task (mean tokens per
execution) with the same margin; per-execution limits (turns, depth, concurrency) come from the p99
or peak of the window. A limit that never came near binding, or that refused work the proposal would
admit, is flagged.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

from .. import _catalog as cat
from .._config import Config, SubagentConfig, duration_seconds
from .._vocab import Resource, Status
from ._sources import PrometheusAPI, SourceError, quantile

#: Sessions whose use sets a budget: the 95th percentile (nearest rank) of per-session peaks.
SESSION_PERCENTILE = 0.95
#: Per-execution limits cover the 99th percentile of executions.
EXECUTION_QUANTILE = 0.99
#: A limit whose highest observed use stays below this share of it "never binds".
NEVER_BINDS_BELOW = 0.5


@dataclass
class TuneOptions:
    url: str
    config: Config | None = None
    selector: str | None = None
    window: str = "7d"
    end_unix_seconds: float | None = None
    margin: float = 0.25
    token_budget: int | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)


@dataclass
class Observed:
    """What the window shows, everything ``propose`` needs."""

    executions: float = 0.0
    tokens_mean: float | None = None
    turns_p99: float | None = None
    deepest_depth: int | None = None
    peak_active: float | None = None
    session_peaks: dict[str, list[float]] = field(default_factory=dict)
    refusals: dict[str, float] = field(default_factory=dict)
    incomplete: float = 0.0
    truncations: float = 0.0
    #: p50, p95, p99 per execution of tokens, duration and turns (histogram_quantile's interpolation).
    per_execution: dict[str, tuple[float | None, ...]] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)


@dataclass
class Proposal:
    key: str
    value: int | None
    reason: str
    flags: list[str] = field(default_factory=list)


def nice_up(value: float) -> int:
    """``value`` rounded up to two significant digits (74_300 → 75_000, 7.43 → 8)."""
    if value <= 0:
        return 0
    step = 10 ** max(math.floor(math.log10(value)) - 1, 0)
    return int(math.ceil(value / step - 1e-9) * step)


def nearest_rank(values: Sequence[float], q: float) -> float:
    """The ``q`` percentile by nearest rank (a value that occurred, never interpolated)."""
    ordered = sorted(values)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def session_peaks(values: Sequence[float]) -> list[float]:
    """The peak of each session in one quota-used series: the value before each drop, and the last."""
    peaks = [v for v, nxt in itertools.pairwise(values) if nxt < v]
    if values:
        peaks.append(values[-1])
    return [p for p in peaks if p > 0]


def observe(api: PrometheusAPI, window: str, end: float, config: Config) -> Observed:
    """Query the window ``[end - window, end]``."""
    obs = Observed()
    sel, w = api.matchers, window

    def scalar(expr: str) -> float | None:
        result = api.query(expr, end)
        return result[0][1] if result and not math.isnan(result[0][1]) else None

    obs.executions = scalar(f"sum(increase({cat.EXECUTIONS.name}{sel()}[{w}]))") or 0.0
    tokens = cat.TOKENS.name
    obs.tokens_mean = scalar(
        f"sum(increase({tokens}_sum{sel()}[{w}])) / sum(increase({tokens}_count{sel()}[{w}]))"
    )
    for spec in (cat.TOKENS, cat.DURATION, cat.TURNS):
        buckets = api.histogram(f"sum by (le) (increase({spec.name}_bucket{sel()}[{w}]))", end)
        obs.per_execution[spec.name] = tuple(quantile(q, buckets) for q in (0.5, 0.95, 0.99))
    obs.turns_p99 = obs.per_execution[cat.TURNS.name][2]
    depths = api.query(f"sum by (depth) (increase({cat.COMPLETIONS.name}{sel()}[{w}])) > 0", end)
    obs.deepest_depth = max(
        (int(lab["depth"]) for lab, _ in depths if lab.get("depth", "").isdigit()), default=None
    )
    incomplete = sel(f'status="{Status.INCOMPLETE.value}"')
    obs.incomplete = scalar(f"sum(increase({cat.COMPLETIONS.name}{incomplete}[{w}]))") or 0.0
    obs.truncations = scalar(f"sum(increase({cat.OUTPUT_TRUNCATIONS.name}{sel()}[{w}]))") or 0.0
    rejections = api.query(f"sum by (resource) (increase({cat.QUOTA_REJECTIONS.name}{sel()}[{w}]))", end)
    obs.refusals = {lab.get("resource", ""): v for lab, v in rejections}
    window_s = duration_seconds(window)
    step = max(math.ceil(window_s / 11_000), 15)
    alerts = config.alerts
    per = "" if config.quota.shared else f" by ({alerts.job_label}, {alerts.instance_label})"
    obs.peak_active = scalar(f"max(max_over_time(sum{per} ({cat.ACTIVE.name}{sel()})[{w}:{step}s]))")
    limits = api.query(f"max by (resource) (max_over_time({cat.QUOTA_LIMIT.name}{sel()}[{w}]))", end)
    obs.limits = {lab.get("resource", ""): v for lab, v in limits}
    concurrency = scalar(f"max(max_over_time({cat.MAX_CONCURRENCY.name}{sel()}[{w}]))")
    if concurrency is not None:
        obs.limits[Resource.CONCURRENCY.value] = concurrency
    used = api.query_range(f"max_over_time({cat.QUOTA_USED.name}{sel()}[{step}s])", end - window_s, end, step)
    for labels, points in used:
        peaks = session_peaks([v for _, v in points])
        obs.session_peaks.setdefault(labels.get("resource", ""), []).extend(peaks)
    return obs


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def propose(
    obs: Observed, current: SubagentConfig | None, margin: float, token_budget: int | None
) -> list[Proposal]:
    """One proposal per ``agent.subagent`` key, each with its reasoning line and flags."""
    factor = 1 + margin
    out: list[Proposal] = []

    deepest = obs.deepest_depth
    out.append(
        Proposal(
            "max_depth",
            min(max(deepest, 1), 10),
            f"the deepest depth that completed work: {deepest} (depth is structure, no margin)",
        )
        if deepest is not None
        else Proposal("max_depth", None, "no completed executions in the window")
    )
    if obs.turns_p99 is not None:
        turns = min(max(math.ceil(obs.turns_p99 * factor - 1e-9), 1), 100)
        out.append(
            Proposal(
                "default_max_turns",
                turns,
                f"p99 turns per execution {obs.turns_p99:.2f} x {factor:g} = "
                f"{obs.turns_p99 * factor:.2f}, rounded up",
            )
        )
    else:
        out.append(Proposal("default_max_turns", None, "no turns recorded in the window"))

    tokens = _session_budget(obs, Resource.TOKENS, factor)
    if token_budget is not None:
        tokens = Proposal("max_total_tokens", token_budget, "your token budget per session (--token-budget)")
    if tokens.value is not None and obs.tokens_mean:
        task = obs.tokens_mean * factor
        raw = tokens.value / task
        execs = Proposal(
            "max_executions",
            max(math.floor(raw), 1),
            f"max_total_tokens {tokens.value} / (mean {obs.tokens_mean:.0f} tokens per execution "
            f"x {factor:g}) "
            f"= {raw:.1f}, rounded down",
        )
    else:
        execs = _session_budget(obs, Resource.EXECUTIONS, factor)
    out += [execs, tokens, _session_budget(obs, Resource.TIME_SECONDS, factor)]

    if obs.peak_active:
        conc = max(math.ceil(obs.peak_active * factor - 1e-9), 1)
        out.append(
            Proposal(
                "max_concurrency",
                conc,
                f"peak running at once {obs.peak_active:.0f} x {factor:g}, rounded up",
            )
        )
    else:
        out.append(Proposal("max_concurrency", None, "no executions running in the window"))
    for proposal in out:
        proposal.flags = _flags(proposal, obs, current)
    out.append(_output_size(obs))
    return out


def _output_size(obs: Observed) -> Proposal:
    """Output sizes are not measured, only truncations: reported, never proposed."""
    reason = "output sizes are not measured; truncations are (subagent_output_truncations_total)"
    proposal = Proposal("output_max_size", None, reason)
    if obs.truncations >= 0.5:
        share = f" ({_pct(obs.truncations / obs.executions)} of executions)" if obs.executions else ""
        proposal.flags.append(
            f"truncates: {obs.truncations:.0f} outputs cut short{share}: "
            "raise it if the agent needs them whole"
        )
    return proposal


_KEYS = {
    Resource.EXECUTIONS: "max_executions",
    Resource.TOKENS: "max_total_tokens",
    Resource.TIME_SECONDS: "max_total_time",
}
_RESOURCE_OF = {
    "max_executions": Resource.EXECUTIONS,
    "max_total_tokens": Resource.TOKENS,
    "max_total_time": Resource.TIME_SECONDS,
    "max_concurrency": Resource.CONCURRENCY,
    "max_depth": Resource.DEPTH,
    "default_max_turns": Resource.TURNS,
}


def _session_budget(obs: Observed, resource: Resource, factor: float) -> Proposal:
    key = _KEYS[resource]
    peaks = obs.session_peaks.get(resource.value, [])
    if not peaks:
        return Proposal(
            key, None, f"no session use of {resource.value} in the window (keep the current value)"
        )
    p95 = nearest_rank(peaks, SESSION_PERCENTILE)
    value = nice_up(p95 * factor)
    return Proposal(
        key,
        value,
        f"p95 of {len(peaks)} sessions' {resource.value} {p95:g} x {factor:g} = {p95 * factor:g}, "
        "rounded up to 2 digits",
    )


def _current(key: str, obs: Observed, current: SubagentConfig | None) -> float | None:
    if current is not None:
        value = getattr(current, key)
        return float(value) if value is not None else None
    resource = _RESOURCE_OF[key]
    return obs.limits.get(resource.value)


def _highest(key: str, obs: Observed) -> float | None:
    resource = _RESOURCE_OF[key]
    if key == "max_depth":
        return float(obs.deepest_depth) if obs.deepest_depth is not None else None
    if key == "default_max_turns":
        return obs.turns_p99
    if key == "max_concurrency":
        return obs.peak_active
    peaks = obs.session_peaks.get(resource.value)
    return max(peaks) if peaks else None


def _flags(proposal: Proposal, obs: Observed, current: SubagentConfig | None) -> list[str]:
    limit = _current(proposal.key, obs, current)
    if limit is None:
        return []
    flags = []
    refused = obs.refusals.get(_RESOURCE_OF[proposal.key].value, 0.0)
    if proposal.key == "default_max_turns":
        refused = max(refused, obs.incomplete)
    highest = _highest(proposal.key, obs)
    if refused < 0.5 and highest is not None and highest < NEVER_BINDS_BELOW * limit:
        flags.append(
            f"never binds: the highest use was {highest:g} of the current {limit:g} "
            f"({_pct(highest / limit)}); "
            "a tighter limit stops a runaway sooner"
        )
    if refused >= 0.5 and proposal.value is not None and proposal.value > limit:
        share = f" ({_pct(refused / obs.executions)} of executions)" if obs.executions else ""
        flags.append(
            f"refuses healthy work: {refused:.0f} refused or stopped{share} by the current {limit:g}, "
            f"below what observed use needs ({proposal.value}): raise it if those tasks were healthy"
        )
    return flags


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def _quantiles(obs: Observed) -> str:
    parts = []
    for spec, label in ((cat.TOKENS, "tokens"), (cat.DURATION, "seconds"), (cat.TURNS, "turns")):
        values = obs.per_execution.get(spec.name, ())
        parts.append(f"{label} " + "/".join(_figure(v) for v in values))
    return "; ".join(parts)


def render_yaml(proposals: list[Proposal], header: list[str]) -> str:
    """The ``agent.subagent`` block: one reasoning comment per value, flags as ``# !`` lines."""
    lines = [f"# {h}" for h in header]
    lines += ["agent:", "  subagent:"]
    for p in proposals:
        lines.append(f"    # {p.reason}")
        lines += [f"    # ! {p.key} {flag}" for flag in p.flags]
        if p.value is None:
            lines.append(f"    # {p.key}: not proposed")
        else:
            lines.append(f"    {p.key}: {p.value}")
    return "\n".join(lines) + "\n"


def run_tune(options: TuneOptions) -> int:
    config = options.config or Config.default()
    selector = options.selector if options.selector is not None else config.alerts.selector
    api = PrometheusAPI(options.url, selector, timeout_seconds=30.0)
    end = options.end_unix_seconds if options.end_unix_seconds is not None else time.time()
    try:
        obs = observe(api, options.window, end, config)
    except SourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if not obs.executions:
        print(
            f"error: no subagent executions in {options.window} at {options.url} ({selector})",
            file=sys.stderr,
        )
        return 1
    current = options.config.subagent if options.config is not None else None
    proposals = propose(obs, current, options.margin, options.token_budget)
    sessions = max((len(v) for v in obs.session_peaks.values()), default=0)
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(end))
    mean = f"{obs.tokens_mean:.0f}" if obs.tokens_mean is not None else "-"
    header = [
        f"subagent-telemetry tune: {options.url} {{{selector}}} over {options.window} ending {when}",
        f"observed {obs.executions:.0f} executions in {sessions} sessions, mean {mean} tokens per execution; "
        f"safety margin {_pct(options.margin)}",
        "per execution p50/p95/p99: " + _quantiles(obs),
        "current limits: "
        + (
            "from --config" if current is not None else "from subagent_quota_limit / subagent_max_concurrency"
        ),
    ]
    options.out.write(render_yaml(proposals, header))
    return 0
