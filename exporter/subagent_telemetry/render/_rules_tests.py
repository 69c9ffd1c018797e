"""promtool unit tests generated from the alerts config, one file per enabled alert.

Every number (threshold, ``for``, window, selector labels) comes from the config, so a non-default
config gets tests of its own behaviour. Each alert is checked: just above the threshold it fires at
``for`` and not at ``for`` - 1m; just below it never fires; a counter reset (or, for gauges, one failed
scrape) does not resolve it; it resolves when the cause goes; an idle system and a freshly started one
fire nothing. The series are built so that the expected values are exact (see ``_counter``).
SubagentActiveOverMaxConcurrency follows ``quota.store``: with a shared store the load is spread over
instances each below max_concurrency (the fleet fires); with the in-memory store that same spread must
not fire (each process has its own limit).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._catalog import DURATION_BUCKETS
from .._config import AlertsConfig, Config, Matcher, alert_test_step, duration_seconds
from ._promql import selector
from ._rules_gotemplate import expand
from ._rules_template import (
    ABSENT_LOOKBACK_SECONDS,
    ALERT_NAMES,
    ALERTING_GROUP,
    RECORDING_GROUP,
    RuleGroups,
    duration,
    level_labels,
)

#: Counters start with this much history, so every rate in the tests is extrapolated the same way and
#: ratios and quantiles are exact from the first minute of traffic.
HISTORY = 1_000_000
#: Executions per minute of the synthetic traffic.
TRAFFIC = 1000
_LABEL_CANDIDATES = ("agent", "agent-1", "prod", "default", "test", "x")

Check = tuple[int, str, list[dict[str, Any]]]


@dataclass(frozen=True)
class _Setup:
    config: Config
    step: int  # seconds between samples and between rule evaluations
    window: int  # rate window, steps
    target: dict[str, str]  # labels of every scraped series (selector, job, group_by, instance)
    level: dict[str, str]  # labels the alerts keep (job label + group_by)
    instance: dict[str, str]  # {instance_label: value}
    rules: dict[str, dict[str, Any]]  # alert name → rendered rule
    error_ratio: str  # the recorded error ratio with the matchers it keeps (for promql_expr_test)
    fleet: bool  # a shared quota store: max_concurrency holds across the instances of a job
    instance_matchers: tuple[Matcher, ...]  # configured matchers on the instance label

    def series(self, name: str, values: Sequence[str], **labels: str) -> dict[str, str]:
        merged = {**self.target, **labels}
        inner = ", ".join(Matcher(name=k, op="=", value=v).render() for k, v in merged.items())
        return {"series": f"{name}{{{inner}}}", "values": " ".join(values)}

    def instances(self, count: int) -> list[str]:
        """``count`` instance label values, the first the target's, each satisfying the selector."""
        first = self.target[self.config.alerts.instance_label]
        names = [first, *(f"agent-{i}:9464" for i in range(1, count))]
        for name in names:
            if not all(_satisfies(m, name) for m in self.instance_matchers):
                msg = (
                    f"the generated tests need several instances, but {name!r} does not match "
                    f"{', '.join(m.render() for m in self.instance_matchers)}"
                )
                raise ValueError(msg)
        return names

    def expect(self, alert: str, value: float, **labels: str) -> dict[str, Any]:
        rule = self.rules[alert]
        all_labels = {**self.level, **labels}
        annotations = dict(rule["annotations"])
        annotations["description"] = expand(annotations["description"], all_labels, value)
        return {"exp_labels": {**all_labels, **rule["labels"]}, "exp_annotations": annotations}


def _seconds(text: str) -> int:
    """A duration the config validated as whole seconds, as an int."""
    return round(duration_seconds(text))


def _step_for(config: Config, key: str) -> int:
    """Seconds between samples and evaluations in one alert's tests (see ``alert_test_step``)."""
    return alert_test_step(config.alerts.rate_window, getattr(config.alerts, key).for_)


#: Steps a check over a whole span probes at most: every step of short spans, else both ends and an
#: even spread between them (so a long ``for`` at second resolution keeps the tests' size bounded).
MAX_CHECKS_PER_SPAN = 60


def _span(start: int, stop: int) -> list[int]:
    """The steps of ``range(start, stop)`` a check probes: all of them, or at most MAX_CHECKS_PER_SPAN."""
    steps = range(start, stop)
    if len(steps) <= MAX_CHECKS_PER_SPAN:
        return list(steps)
    edge = 10
    inner = steps[edge:-edge]
    spread = [
        inner[i * len(inner) // (MAX_CHECKS_PER_SPAN - 2 * edge)]
        for i in range(MAX_CHECKS_PER_SPAN - 2 * edge)
    ]
    return [*steps[:edge], *spread, *steps[-edge:]]


def _at(seconds: int) -> str:
    """A promtool duration: whole minutes as ``5m`` (as before), anything else in seconds."""
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def _label_value(matchers: list[Matcher], default: str) -> str:
    """A value satisfying every matcher on one label (Prometheus regexes are fully anchored)."""
    equal = [m.value for m in matchers if m.op == "="]
    for candidate in equal or [default, *_LABEL_CANDIDATES]:
        if all(_satisfies(m, candidate) for m in matchers):
            return candidate
    msg = f"cannot find a test label value matching {', '.join(m.render() for m in matchers)}"
    raise ValueError(msg)


def _satisfies(m: Matcher, value: str) -> bool:
    matched = {"=": value == m.value, "!=": value != m.value}
    if m.op in matched:
        return matched[m.op]
    regex = re.fullmatch(m.value, value) is not None
    return regex if m.op == "=~" else not regex


def _setup(config: Config, groups: RuleGroups) -> _Setup:
    alerts = config.alerts
    by_name: dict[str, list[Matcher]] = defaultdict(list)
    for m in alerts.matchers:
        by_name[m.name].append(m)
    defaults = {alerts.job_label: "agent", alerts.instance_label: "agent-0:9464"}
    names = [*by_name, *level_labels(alerts), alerts.instance_label]
    target = {n: _label_value(by_name.get(n, []), defaults.get(n, "test")) for n in dict.fromkeys(names)}
    return _Setup(
        config=config,
        step=60,
        window=_seconds(alerts.rate_window) // 60,
        target=target,
        level={n: target[n] for n in level_labels(alerts)},
        instance={alerts.instance_label: target[alerts.instance_label]},
        rules={r["alert"]: r for r in groups.alerting["rules"]},
        error_ratio=_recorded(groups, ":subagent_error_ratio:", alerts),
        fleet=config.quota.shared,
        instance_matchers=tuple(by_name.get(alerts.instance_label, [])),
    )


def _recorded(groups: RuleGroups, part: str, alerts: AlertsConfig) -> str:
    """A selector of the recorded series whose name contains ``part``, as the alerts read it."""
    name = next(r["record"] for r in groups.recording["rules"] if part in r["record"])
    kept = selector(m for m in alerts.matchers if m.name in level_labels(alerts))
    return f"{name}{{{kept}}}" if kept else name


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _counter(incs: Sequence[float], start: float, reset_at: int | None = None) -> list[str]:
    """Cumulative values; at ``reset_at`` the process restarted just after the previous scrape."""
    values, total = [], float(start)
    for minute, inc in enumerate(incs):
        total = inc if minute == reset_at else total + inc
        values.append(_num(total))
    return values


def _gauge(values: Sequence[float], stale_at: int | None = None) -> list[str]:
    return ["stale" if i == stale_at else _num(v) for i, v in enumerate(values)]


@dataclass(frozen=True)
class _Window:
    """One scenario: the cause runs from minute ``t0`` to ``t1``; ``glitch`` is a reset or failed scrape."""

    t0: int
    t1: int
    end: int
    glitch: int | None = None

    def cause(self, minute: int) -> bool:
        """Gauges show the cause at minutes t0..t1."""
        return self.t0 <= minute <= self.t1

    def cause_inc(self, minute: int) -> bool:
        """Counters increase because of the cause between minute - 1 and minute, for t0 < minute <= t1."""
        return self.t0 < minute <= self.t1

    @property
    def minutes(self) -> range:
        return range(self.end + 1)


# --------------------------------------------------------------------------------------------------
# One spec per threshold alert: its just-above/just-below levels, when it becomes true, the value it
# shows, and the input series of a scenario.


class _Spec:
    glitch = "reset"  # counters: a counter reset; gauges: "stale", one failed scrape
    value_labels: dict[str, str] = {}  # noqa: RUF012 - read-only class default

    def levels(self, s: _Setup, threshold: float) -> tuple[float, float]:
        raise NotImplementedError

    def ambiguous(self, value: float) -> bool:
        """Whether float noise in Prometheus could change how the description shows ``value``."""
        del value
        return False

    def onset(self, s: _Setup, threshold: float, level: float) -> int:
        """Steps after t0 at which the expression first holds (1: the first rate after traffic starts)."""
        del s, threshold, level
        return 1

    def shown(self, s: _Setup, level: float, elapsed: int) -> float:
        """The alert's $value ``elapsed`` steps after t0."""
        del s, elapsed
        return level

    def labels(self, s: _Setup) -> dict[str, str]:
        del s
        return {}

    def series(self, s: _Setup, level: float, w: _Window) -> list[dict[str, str]]:
        raise NotImplementedError

    def more_tests(self, s: _Setup, alert: str, above: float, t0: int, for_: int) -> list[dict[str, Any]]:
        """Scenarios particular to this alert, beyond the threshold, ``for``, glitch and resolve ones."""
        del s, alert, above, t0, for_
        return []


def _thousandths(threshold: float) -> tuple[float, float]:
    """Ratios just above and just below the threshold, in whole thousandths (exact in the series)."""
    scaled = round(threshold * 1000, 6)
    return (math.floor(scaled) + 1) / 1000, max(math.ceil(scaled) - 1, 0) / 1000


class _ErrorRate(_Spec):
    def levels(self, s: _Setup, threshold: float) -> tuple[float, float]:
        return _thousandths(threshold)

    def series(self, s: _Setup, level: float, w: _Window) -> list[dict[str, str]]:
        executions = [TRAFFIC if m > w.t0 else 0 for m in w.minutes]
        errors = [round(level * TRAFFIC) if w.cause_inc(m) else 0 for m in w.minutes]
        return [
            s.series("subagent_executions_total", _counter(executions, HISTORY, w.glitch), depth="1"),
            s.series(
                "subagent_errors_total",
                _counter(errors, HISTORY // 10, w.glitch),
                depth="1",
                error_type="execution_failed",
            ),
        ]


class _Quota(_Spec):
    glitch = "stale"

    def levels(self, s: _Setup, threshold: float) -> tuple[float, float]:
        return _thousandths(threshold)

    def onset(self, s: _Setup, threshold: float, level: float) -> int:
        return 0

    def labels(self, s: _Setup) -> dict[str, str]:
        return {"session": s.config.quota.session, "resource": "tokens"}

    def series(self, s: _Setup, level: float, w: _Window) -> list[dict[str, str]]:
        calm = math.floor(s.config.alerts.quota_nearly_exhausted.threshold * TRAFFIC / 2)
        used = [round(level * TRAFFIC) if w.cause(m) else calm for m in w.minutes]
        limit = [TRAFFIC for _ in w.minutes]
        session = s.config.quota.session
        return [
            s.series("subagent_quota_used", _gauge(used, w.glitch), resource="tokens", session=session),
            s.series("subagent_quota_limit", _gauge(limit, w.glitch), resource="tokens", session=session),
            s.series(
                "subagent_quota_used", _gauge([1 for _ in w.minutes]), resource="executions", session=session
            ),
            s.series(
                "subagent_quota_limit",
                _gauge([20 for _ in w.minutes]),
                resource="executions",
                session=session,
            ),
        ]


ACTIVE = "subagent_active_count"
#: Most instances a generated concurrency test spreads its load over.
MAX_INSTANCES = 8


class _Concurrency(_Spec):
    """Per instance with the in-memory store; the fleet's sum with a shared (Redis) store.

    The case that tells the two apart: several instances, each within max_concurrency, together above
    it. A fleet sharing its slots fires on it; separate processes, each with its own limit, do not.
    """

    glitch = "stale"

    def levels(self, s: _Setup, threshold: float) -> tuple[float, float]:
        allowed = math.floor(s.config.subagent.max_concurrency + threshold)
        return allowed + 1, allowed

    def onset(self, s: _Setup, threshold: float, level: float) -> int:
        return 0

    def labels(self, s: _Setup) -> dict[str, str]:
        return {} if s.fleet else s.instance

    def series(self, s: _Setup, level: float, w: _Window) -> list[dict[str, str]]:
        if s.fleet:
            return self.spread(s, level, w)
        return self.instance(s, s.instances(1)[0], level, 1, w)

    def instance(self, s: _Setup, name: str, level: float, calm: int, w: _Window) -> list[dict[str, str]]:
        """One process: ``level`` active (split over two depths) during the cause, else ``calm``."""
        active = [level if w.cause(m) else calm for m in w.minutes]
        limit = [s.config.subagent.max_concurrency for _ in w.minutes]
        labels = {s.config.alerts.instance_label: name}
        depths: dict[str, list[float]] = {
            "1": [math.ceil(a / 2) for a in active],
            "2": [a // 2 for a in active],
        }
        out = [s.series(ACTIVE, _gauge(v, w.glitch), depth=d, **labels) for d, v in depths.items()]
        return [*out, s.series("subagent_max_concurrency", _gauge(limit, w.glitch), **labels)]

    def shares(self, s: _Setup, level: float) -> list[int]:
        """What each instance runs of ``level`` spread over instances below the limit.

        At most ``MAX_INSTANCES`` instances: with a large headroom each then runs more than the limit,
        but never more than limit + headroom (so none fires on its own), which keeps the test's size
        bounded whatever the threshold.
        """
        total = int(level)
        most = max(s.config.subagent.max_concurrency - 1, 1, math.ceil(total / MAX_INSTANCES))
        return _split(total, most)

    def spread(self, s: _Setup, level: float, w: _Window) -> list[dict[str, str]]:
        """``level`` active in total over the fewest instances (at least two) each below the limit.

        With max_concurrency 1 no instance can be below it; each then runs at most 1 (at the limit).
        """
        shares = self.shares(s, level)
        out: list[dict[str, str]] = []
        for i, (name, share) in enumerate(zip(s.instances(len(shares)), shares, strict=True)):
            out += self.instance(s, name, share, 1 if i == 0 else 0, w)
        return out

    def more_tests(self, s: _Setup, alert: str, above: float, t0: int, for_: int) -> list[dict[str, Any]]:
        tests = []
        if for_ >= s.window:
            end = t0 + s.window + 1
            tests.append(
                _test(
                    s,
                    f"{alert}: one scrape above the limit does not fire",
                    self.series(s, above, _Window(t0, t0, end)),
                    [(t, alert, []) for t in _span(t0, end + 1)],
                )
            )
        if not s.fleet:
            end = t0 + for_ + s.window + 1
            count = len(self.shares(s, above))
            tests.append(
                _test(
                    s,
                    f"{alert}: {count} instances, each within its own limit, together above it, do not "
                    "fire (in-memory store: max_concurrency is per process)",
                    self.spread(s, above, _Window(t0, end, end)),
                    [(t, alert, []) for t in _span(t0, end + 1)],
                )
            )
        return tests


def _split(total: int, most: int) -> list[int]:
    """``total`` over the fewest parts (at least two) of at most ``most`` each, as even as possible."""
    parts = max(2, math.ceil(total / most))
    base, extra = divmod(total, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


def _le(bound: float) -> str:
    return repr(float(bound))


def _p95_increments(target_seconds: float) -> dict[str, float]:
    """Per-minute cumulative bucket increments whose interpolated p95 is ``target_seconds``.

    A share L of the observations sits at or below the lower bound a of the target's bucket (a, b], a
    share p inside it and the rest above it; histogram_quantile returns a + (b - a) * (0.95 - L) / p.
    """
    q = 0.95
    bounds = DURATION_BUCKETS
    index = next((i for i, b in enumerate(bounds) if b >= target_seconds), None)
    if index is None or (index == 0 and target_seconds < q * bounds[0]):
        msg = (
            f"a p95 of {target_seconds}s cannot be expressed with the subagent_duration_seconds buckets; "
            f"set alerts.slow_executions.threshold between {bounds[0]} and {bounds[-1]} seconds"
        )
        raise ValueError(msg)
    upper, lower = bounds[index], bounds[index - 1] if index else 0.0
    x = (target_seconds - lower) / (upper - lower)
    if index == 0:
        below, inside = 0.0, q / x
    elif x <= 0.5:
        inside = (1 - q) / (1 - x)
        below = 1 - inside
    else:
        inside = 2 * (1 - q)
        below = q - inside * x
    shares = {_le(b): below * (b >= lower and index > 0) + inside * (b >= upper) for b in bounds}
    shares["+Inf"] = 1.0
    return {le: share * TRAFFIC for le, share in shares.items()}


#: The smallest p95 histogram_quantile can return: every observation in the first bucket (0, b0].
P95_FLOOR = 0.95 * DURATION_BUCKETS[0]


class _Slow(_Spec):
    """Levels stay clear of where humanizeDuration changes form (1 s → "1s", 60 s → "1m 0s") and of
    the integer boundaries it truncates at from 60 s up, so float noise in histogram_quantile cannot
    change the shown description. The config's range (0.1 s to 1199 s) is what these levels cover."""

    def levels(self, s: _Setup, threshold: float) -> tuple[float, float]:
        if threshold >= 10:  # whole seconds + 0.5: clear of every truncation and of the 60 s switch
            above = math.floor(threshold) + 0.5
            above = above if above > threshold else above + 1
            below = math.ceil(threshold) - 0.5
            return above, below if below < threshold else below - 1
        above = (math.floor(round(threshold * 100, 6)) + 1) / 100
        below = (math.ceil(round(threshold * 100, 6)) - 1) / 100
        return (1.005 if above == 1 else above), max(below, P95_FLOOR)

    def series(self, s: _Setup, level: float, w: _Window) -> list[dict[str, str]]:
        slow, fast = _p95_increments(level), {_le(b): float(TRAFFIC) for b in DURATION_BUCKETS}
        fast["+Inf"] = float(TRAFFIC)
        out = []
        for le in slow:
            incs = [slow[le] if w.cause_inc(m) else fast[le] if m > w.t0 else 0.0 for m in w.minutes]
            values = _counter(incs, HISTORY, w.glitch)
            out.append(
                s.series("subagent_duration_seconds_bucket", values, depth="1", status="complete", le=le)
            )
        return out


class _Rejections(_Spec):
    """Levels are refusals per step; the alert compares the per-second rate."""

    def levels(self, s: _Setup, threshold: float) -> tuple[float, float]:
        scaled = round(threshold * s.step, 6)
        return math.floor(scaled) + 1, max(math.ceil(scaled) - 1, 0)

    def onset(self, s: _Setup, threshold: float, level: float) -> int:
        return next(j for j in range(1, s.window) if self.shown(s, level, j) > threshold)

    def shown(self, s: _Setup, level: float, elapsed: int) -> float:
        # Until the window is full of refusals, rate() extrapolates the first steps over the window.
        full = s.window - 1
        return level * min(elapsed, full) / full / s.step

    def labels(self, s: _Setup) -> dict[str, str]:
        return {"resource": "tokens"}

    def ambiguous(self, value: float) -> bool:
        # Shown with printf "%.2f": a value on a rounding boundary (0.925) may print either way.
        return abs(value * 100 % 1 - 0.5) < 1e-6

    def series(self, s: _Setup, level: float, w: _Window) -> list[dict[str, str]]:
        refusals = [level if w.cause_inc(m) else 0 for m in w.minutes]
        return [
            s.series(
                "subagent_quota_rejections_total",
                _counter(refusals, HISTORY // 100, w.glitch),
                resource="tokens",
            )
        ]


class _CostBurn(_Spec):
    """Levels are money spent per step. What is left of the budget stays at ``threshold`` (so the
    alert fires once the spend rate passes 1 per second) and the shown value is the seconds left."""

    def levels(self, s: _Setup, threshold: float) -> tuple[float, float]:
        return s.step + 1, s.step - 1

    def onset(self, s: _Setup, threshold: float, level: float) -> int:
        return next(j for j in range(1, s.window) if self.shown(s, level, j) < threshold)

    def shown(self, s: _Setup, level: float, elapsed: int) -> float:
        # Until the window is full of spending, rate() extrapolates the first steps over the window.
        full = s.window - 1
        rate = level * min(elapsed, full) / full / s.step
        return s.config.alerts.cost_budget_burn.threshold / rate if rate else math.inf

    def labels(self, s: _Setup) -> dict[str, str]:
        return {"session": s.config.quota.session, **({} if s.fleet else s.instance)}

    def ambiguous(self, value: float) -> bool:
        # humanizeDuration truncates to whole seconds from 60 s: stay clear of integer boundaries.
        return abs(value - round(value)) < 1e-6

    def series(self, s: _Setup, level: float, w: _Window) -> list[dict[str, str]]:
        spend = [level if w.cause_inc(m) else 0 for m in w.minutes]
        horizon = s.config.alerts.cost_budget_burn.threshold
        session = s.config.quota.session
        return [
            s.series("subagent_cost_total", _counter(spend, HISTORY // 100, w.glitch), depth="1"),
            s.series(
                "subagent_quota_limit",
                _gauge([2 * horizon for _ in w.minutes]),
                resource="cost",
                session=session,
            ),
            s.series(
                "subagent_quota_used", _gauge([horizon for _ in w.minutes]), resource="cost", session=session
            ),
        ]


_SPECS: dict[str, _Spec] = {
    "high_error_rate": _ErrorRate(),
    "quota_nearly_exhausted": _Quota(),
    "active_over_max_concurrency": _Concurrency(),
    "slow_executions": _Slow(),
    "quota_rejections": _Rejections(),
    "cost_budget_burn": _CostBurn(),
}


def _test(s: _Setup, name: str, series: list[dict[str, str]], checks: list[Check]) -> dict[str, Any]:
    return {
        "name": name,
        "interval": _at(s.step),
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": _at(t * s.step), "alertname": alert, "exp_alerts": expected}
            for t, alert, expected in checks
        ],
    }


def _threshold_tests(s: _Setup, key: str, spec: _Spec) -> list[dict[str, Any]]:
    rule = getattr(s.config.alerts, key)
    alert, for_ = ALERT_NAMES[key], _seconds(rule.for_) // s.step
    above, below = spec.levels(s, rule.threshold)
    t0 = s.window + 1
    rise = spec.onset(s, rule.threshold, above)
    while spec.ambiguous(spec.shown(s, above, rise + for_)):  # a level whose firing value prints one way
        above += 1
        rise = spec.onset(s, rule.threshold, above)
    fires = t0 + rise + for_
    labels = spec.labels(s)

    def firing(minute: int) -> list[dict[str, Any]]:
        return [s.expect(alert, spec.shown(s, above, minute - t0), **labels)]

    def clear(minute: int) -> bool:
        return not spec.ambiguous(spec.shown(s, above, minute - t0))

    end = fires + 2
    before: list[Check] = [(fires - 1, alert, [])] if for_ else []
    tests = [
        _test(
            s,
            f"{alert}: {above} (just above {rule.threshold}) fires after {rule.for_}, "
            f"not {_at(s.step)} before",
            spec.series(s, above, _Window(t0, end, end)),
            [(t0 - 1, alert, []), *before, (fires, alert, firing(fires))],
        ),
        _test(
            s,
            f"{alert}: {below} (just below {rule.threshold}) never fires",
            spec.series(s, below, _Window(t0, end + s.window, end + s.window)),
            [(t, alert, []) for t in _span(t0, end + s.window + 1)],
        ),
    ]
    glitch = fires + 1
    end = glitch + s.window + 1
    what = "a counter reset" if spec.glitch == "reset" else "one failed scrape"
    tests.append(
        _test(
            s,
            f"{alert}: keeps firing through {what}",
            spec.series(s, above, _Window(t0, end, end, glitch)),
            [(t, alert, firing(t)) for t in _span(glitch, end + 1) if clear(t)],
        )
    )
    t1 = fires + 1
    end = t1 + s.window
    # Gauges are smoothed over the window: still firing one step before it has passed.
    smoothed = [(end - 1, alert, firing(end - 1))] if spec.glitch == "stale" else []
    tests.append(
        _test(
            s,
            f"{alert}: resolves within {s.config.alerts.rate_window} once the cause goes",
            spec.series(s, above, _Window(t0, t1, end)),
            [*([(t1, alert, firing(t1))] if clear(t1) else []), *smoothed, (end, alert, [])],
        )
    )
    tests += spec.more_tests(s, alert, above, t0, for_)
    return tests


# --------------------------------------------------------------------------------------------------
# SubagentMetricsAbsent: target down, short outage, recovery, vanished job.


def _agent(s: _Setup, w: _Window, *, vanish: bool = False) -> list[dict[str, str]]:
    """``up`` and ``subagent_max_concurrency`` of a target that is down (or, ``vanish``, gone) t0..t1.

    A failed scrape makes Prometheus write ``up 0`` and one staleness marker for the target's series;
    a target removed from discovery gets a staleness marker on ``up`` as well.
    """
    limit = s.config.subagent.max_concurrency

    def gone(m: int) -> str:
        return "stale" if m == w.t0 else "_"

    up = [(gone(m) if vanish else "0") if w.cause(m) else "1" for m in w.minutes]
    metric = [gone(m) if w.cause(m) else str(limit) for m in w.minutes]
    return [s.series("up", up), s.series("subagent_max_concurrency", metric)]


def _absent_tests(s: _Setup) -> list[dict[str, Any]]:
    alerts = s.config.alerts
    alert, for_ = ALERT_NAMES["metrics_absent"], _seconds(alerts.metrics_absent.for_) // s.step
    t0 = s.window + 1
    fires = t0 + for_
    down = [s.expect(alert, 0.0, **s.instance)]
    gone = [s.expect(alert, 0.0)]
    before: list[Check] = [(fires - 1, alert, [])] if for_ else []
    tests = [
        _test(
            s,
            f"{alert}: a target failing its scrapes fires after {alerts.metrics_absent.for_}, "
            f"not {_at(s.step)} earlier",
            _agent(s, _Window(t0, fires + 1, fires + 1)),
            [(t0 - 1, alert, []), *before, (fires, alert, down)],
        ),
        _test(
            s,
            f"{alert}: resolves at the first good scrape",
            _agent(s, _Window(t0, fires + 1, fires + 2)),
            [(fires + 1, alert, down), (fires + 2, alert, [])],
        ),
    ]
    if for_ >= 2:
        tests.append(
            _test(
                s,
                f"{alert}: an outage shorter than {alerts.metrics_absent.for_} (a restart) does not fire",
                _agent(s, _Window(t0, fires - 2, fires + 1)),
                [(t, alert, []) for t in _span(t0, fires + 2)],
            )
        )
    lookback = _seconds(_context_lookback(s)) // s.step
    forgotten = t0 - 1 + lookback  # the last sample leaves the lookback window
    equal = {m.name: m.value for m in alerts.matchers if m.op == "="}
    keeps = all(m.op == "=" for m in alerts.matchers) and set(s.level) <= set(equal)
    later = (
        [(forgotten, alert, gone), (forgotten + 2, alert, gone)]  # absent() takes over, same labels
        if keeps
        else [(forgotten + 2, alert, [])]  # a regex selector: absent() could not name the job
    )
    tests.append(
        _test(
            s,
            f"{alert}: a job removed from discovery fires after {alerts.metrics_absent.for_}",
            _agent(s, _Window(t0, forgotten + 2, forgotten + 2), vanish=True),
            [*before, (fires, alert, gone), *later],
        )
    )
    return tests


def _context_lookback(s: _Setup) -> str:
    return duration(duration_seconds(s.config.alerts.metrics_absent.for_) + ABSENT_LOOKBACK_SECONDS)


# --------------------------------------------------------------------------------------------------
# Idle and freshly started systems: every metric present, nothing fires.


def _system(s: _Setup, end: int, *, fresh: bool) -> list[dict[str, str]]:
    """Every series of one agent: idle with a busy (slow, failing) past, or just started and healthy."""
    minutes = range(end + 1)
    traffic = [0 if m == 0 or not fresh else 10 for m in minutes]

    def counter(history: int) -> list[str]:
        return _counter(traffic, 0 if fresh else history)

    session = s.config.quota.session
    calm = math.floor(s.config.alerts.quota_nearly_exhausted.threshold * TRAFFIC / 2)
    series = [
        s.series("up", _gauge([1 for _ in minutes])),
        s.series("subagent_max_concurrency", _gauge([s.config.subagent.max_concurrency for _ in minutes])),
        s.series("subagent_active_count", _gauge([1 if fresh else 0 for _ in minutes]), depth="1"),
        s.series("subagent_executions_total", counter(HISTORY), depth="1"),
        s.series("subagent_completions_total", counter(HISTORY // 2), depth="1", status="complete"),
        s.series(
            "subagent_quota_used",
            _gauge([0 if fresh else calm for _ in minutes]),
            resource="tokens",
            session=session,
        ),
        s.series(
            "subagent_quota_limit", _gauge([TRAFFIC for _ in minutes]), resource="tokens", session=session
        ),
        # Money: a budget with some spent, no spending now (idle) or none yet (fresh).
        s.series("subagent_cost_total", _counter([0 for _ in minutes], 0 if fresh else 7), depth="1"),
        s.series(
            "subagent_quota_used",
            _gauge([0 if fresh else 1 for _ in minutes]),
            resource="cost",
            session=session,
        ),
        s.series("subagent_quota_limit", _gauge([5 for _ in minutes]), resource="cost", session=session),
    ]
    for bound in (*map(_le, DURATION_BUCKETS), "+Inf"):
        # The idle system's history was all slow (+Inf): with no traffic now, p95 must not fire.
        history = HISTORY if bound == "+Inf" else 0
        series.append(
            s.series(
                "subagent_duration_seconds_bucket", counter(history), depth="1", status="complete", le=bound
            )
        )
    if not fresh:  # a fresh process has not created these labelled children yet
        flat = [0 for _ in minutes]
        series += [
            s.series(
                "subagent_errors_total",
                _counter(flat, HISTORY // 2),
                depth="1",
                error_type="execution_failed",
            ),
            s.series("subagent_quota_rejections_total", _counter(flat, HISTORY // 100), resource="tokens"),
        ]
    return series


def _quiet_tests(s: _Setup, alert: str, for_steps: int) -> list[dict[str, Any]]:
    end = for_steps + s.window + 5
    checks: list[Check] = [(t, alert, []) for t in _span(0, end + 1)]
    idle = _test(
        s,
        f"{alert}: an idle system with a failing, slow past fires nothing",
        _system(s, end, fresh=False),
        checks,
    )
    if alert == ALERT_NAMES["high_error_rate"]:
        # Not only "no alert" (NaN > x is false anyway): the ratio is not recorded at all, never NaN.
        idle["promql_expr_test"] = [
            {"expr": s.error_ratio, "eval_time": _at(end * s.step), "exp_samples": []}
        ]
    return [
        idle,
        _test(s, f"{alert}: a freshly started system fires nothing", _system(s, end, fresh=True), checks),
    ]


def render_rule_tests(config: Config, groups: RuleGroups, rule_file: Path) -> dict[str, dict[str, Any]]:
    """One promtool test file per enabled alert, keyed by alert name; ``rule_file`` relative to it."""
    shared = _setup(config, groups)
    files = {}
    for key, alert in ALERT_NAMES.items():
        rule = getattr(config.alerts, key)
        if not rule.enabled:
            continue
        step = _step_for(config, key)
        s = replace(shared, step=step, window=_seconds(config.alerts.rate_window) // step)
        tests = _absent_tests(s) if key == "metrics_absent" else _threshold_tests(s, key, _SPECS[key])
        tests += _quiet_tests(s, alert, _seconds(rule.for_) // step)
        files[alert] = {
            "rule_files": [str(rule_file)],
            "evaluation_interval": _at(step),
            "group_eval_order": [RECORDING_GROUP, ALERTING_GROUP],
            "tests": tests,
        }
    return files
