"""Render ``templates/rules.yaml.j2`` with values from the alerts config and shape the rule groups.

Only validated or escaped values reach the template: selectors through ``Matcher.render``, label names
checked by the config, numbers formatted here, durations validated by the config. Labels, ``for``,
``runbook_url`` and ``dashboard_url`` are added here (not in the template) from the config.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml

from .._config import AlertRule, AlertsConfig, duration_seconds
from ._promql import selector

#: Config key of each alert → its fixed name.
ALERT_NAMES: dict[str, str] = {
    "high_error_rate": "SubagentHighErrorRate",
    "quota_nearly_exhausted": "SubagentQuotaNearlyExhausted",
    "active_over_max_concurrency": "SubagentActiveOverMaxConcurrency",
    "slow_executions": "SubagentSlowExecutions",
    "quota_rejections": "SubagentQuotaRejections",
    "metrics_absent": "SubagentMetricsAbsent",
    "cost_budget_burn": "SubagentCostBudgetBurn",
}
RECORDING_GROUP = "subagent-telemetry-recording"
ALERTING_GROUP = "subagent-telemetry-alerts"
#: Quantiles of subagent_duration_seconds recorded for the alerts (p95) and the dashboards.
QUANTILES = ("50", "95", "99")
#: How much longer than ``for`` SubagentMetricsAbsent remembers a job that stopped exporting.
ABSENT_LOOKBACK_SECONDS = 3600

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("subagent_telemetry.render", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
    variable_start_string="<<",
    variable_end_string=">>",
    block_start_string="<%",
    block_end_string="%>",
    comment_start_string="<#",
    comment_end_string="#>",
)


@dataclass(frozen=True)
class RuleGroups:
    """The two rendered groups, each a ``{"name": ..., "rules": [...]}`` mapping."""

    recording: dict[str, Any]
    alerting: dict[str, Any]


def number(value: float) -> str:
    """A PromQL number literal as short as Python's repr allows: 120.0 → "120", 0.05 → "0.05"."""
    text = repr(float(value))
    return text.removesuffix(".0")


def percent(value: float) -> str:
    """A ratio as a percentage for humans: 0.05 → "5%"."""
    return f"{value * 100:g}%"


def duration(seconds: float) -> str:
    """Whole seconds as the shortest Prometheus duration: 4200 → "70m"."""
    whole = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def level_labels(alerts: AlertsConfig) -> list[str]:
    """The labels every recorded series keeps: the job label, then ``group_by``."""
    return list(dict.fromkeys([alerts.job_label, *alerts.group_by]))


def _context(alerts: AlertsConfig, *, fleet: bool) -> dict[str, Any]:
    labels = level_labels(alerts)
    per = [] if fleet else [alerts.instance_label]
    matchers = alerts.matchers
    headroom = alerts.active_over_max_concurrency.threshold
    rules: dict[str, AlertRule] = {key: getattr(alerts, key) for key in ALERT_NAMES}
    return {
        "a": alerts,
        "fleet": fleet,
        "per": "".join(f"_{name}" for name in per),
        "per_by": "".join(f", {name}" for name in per),
        "L": "_".join(labels),
        "by": ", ".join(labels),
        "sel": selector(matchers),
        "rsel": selector(m for m in matchers if m.name in labels),
        "w": alerts.rate_window,
        "quantiles": QUANTILES,
        "n": {key: number(rule.threshold) for key, rule in rules.items()},
        "pct": {key: percent(rule.threshold) for key, rule in rules.items()},
        "headroom": f" + {number(headroom)}" if headroom > 0 else "",
        "headroom_text": f" plus {number(headroom)}" if headroom > 0 else "",
        "all_equal": all(m.op == "=" for m in matchers),
        "lookback": duration(duration_seconds(alerts.metrics_absent.for_) + ABSENT_LOOKBACK_SECONDS),
    }


def render_rule_groups(alerts: AlertsConfig, anchor: Callable[[str], str], *, fleet: bool) -> RuleGroups:
    """Render the template, keep the enabled alerts and add their labels, ``for`` and links.

    ``fleet``: the quota store is shared (Redis), so max_concurrency holds across the fleet and
    SubagentActiveOverMaxConcurrency compares the job's summed active executions with it.
    """
    text = _ENV.get_template("rules.yaml.j2").render(_context(alerts, fleet=fleet))
    data = yaml.safe_load(text)
    alerting = []
    for entry in data["alerts"]:
        rule: AlertRule = getattr(alerts, entry["key"])
        if not rule.enabled:
            continue
        annotations = {
            "summary": entry["summary"],
            "description": entry["description"],
            "runbook_url": f"{alerts.runbook_base_url}#{anchor(entry['alert'])}",
        }
        if alerts.dashboard_url:
            annotations["dashboard_url"] = alerts.dashboard_url
        alerting.append(
            {
                "alert": entry["alert"],
                "expr": entry["expr"],
                "for": rule.for_,
                "labels": {"severity": rule.severity},
                "annotations": annotations,
            }
        )
    return RuleGroups(
        recording={"name": RECORDING_GROUP, "rules": data["recording"]},
        alerting={"name": ALERTING_GROUP, "rules": alerting},
    )
