"""The two dashboards — Overview and Quotas — assembled from the config with grafana-foundation-sdk."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dashboard_b
from grafana_foundation_sdk.builders import timeseries as timeseries_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard

from .._config import Config
from . import _dashboard_kit as kit
from ._dashboard_kit import ORANGE, RED, Target
from ._dashboard_queries import QUANTILES, DashboardQueries

#: Alerts whose name contains this appear in the Overview's alert list (the rules' common prefix).
ALERT_NAME_FILTER = "Subagent"

_PERCENTILE = {0.5: "p50", 0.95: "p95", 0.99: "p99"}


def _base(config: Config, slug: str, title: str, description: str) -> dashboard_b.Dashboard:
    """Dashboard shell: stable UID, read-only, refresh, tags, links, and the three variables."""
    cfg = config.dashboards
    q = DashboardQueries(config)
    job, instance = config.alerts.job_label, config.alerts.instance_label
    return (
        dashboard_b.Dashboard(f"{cfg.title_prefix} / {title}")
        .uid(f"{cfg.uid_prefix}-{slug}")
        .description(description)
        .tags(list(cfg.tags))
        .readonly()
        .refresh(cfg.refresh)
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(dashboard.DashboardCursorSync.CROSSHAIR)
        .link(
            dashboard_b.DashboardLink(cfg.title_prefix)
            .type(dashboard.DashboardLinkType.DASHBOARDS)
            .tags(list(cfg.tags))
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(kit.datasource_variable(cfg.datasource_uid))
        .with_variable(kit.label_variable("job", "Job", q.variable_query(job)))
        .with_variable(
            kit.label_variable("instance", "Instance", q.variable_query(instance, f'{job}=~"$job"'))
        )
    )


def _concurrency(config: Config) -> timeseries_b.Panel:
    """Active vs max_concurrency: per instance (in-memory store), or the fleet's sum (shared store)."""
    q = DashboardQueries(config)
    by = q.concurrency_by
    headroom = config.alerts.active_over_max_concurrency.threshold
    limit_style = "dashed orange" if headroom > 0 else "dashed red"
    if config.quota.shared:
        what = (
            "Executions running across all selected instances of a job (solid) against the fleet-wide "
            f"agent.subagent.max_concurrency that the shared quota store enforces ({limit_style})."
        )
    else:
        what = (
            "Executions running per instance (solid) against its agent.subagent.max_concurrency "
            f"({limit_style})."
        )
    targets = [
        Target(q.active(by), kit.legend(*q.keep, *by, suffix="active")),
        Target(q.max_concurrency(by), kit.legend(*q.keep, *by, suffix="max")),
    ]
    overrides = [(".* max$", kit.series_style(RED, dashed=True))]
    if headroom > 0:
        what += (
            " Dashed red: max_concurrency plus alerts.active_over_max_concurrency.threshold, where "
            "SubagentActiveOverMaxConcurrency starts."
        )
        targets.append(Target(q.concurrency_alert_level(), kit.legend(*q.keep, *by, suffix="alert")))
        overrides = [
            (".* max$", kit.series_style(ORANGE, dashed=True)),
            (".* alert$", kit.series_style(RED, dashed=True)),
        ]
    return kit.timeseries(
        "Active vs max concurrency",
        f"{what} Executions beyond the limit wait for a slot.",
        "short",
        targets,
        overrides=overrides,
    )


def overview(config: Config) -> dashboard.Dashboard:
    q = DashboardQueries(config)
    a = config.alerts
    keep = q.keep
    error_steps = [(a.high_error_rate.threshold, RED)]
    slow_steps = [(a.slow_executions.threshold, RED)]
    percent = f"{a.high_error_rate.threshold:.0%}" if a.high_error_rate.threshold >= 0.01 else "its threshold"

    def quantiles(fn: Any) -> list[Target]:
        return [Target(fn(x), kit.legend(*keep, suffix=_PERCENTILE[x])) for x in QUANTILES]

    board = _base(
        config,
        "overview",
        "Overview",
        "Subagent executions: throughput, concurrency, errors, latency and the work each one does.",
    )
    return (
        board.with_row(kit.row("Summary"))
        .with_panel(
            kit.stat(
                "Executions / s",
                "Subagent executions started per second (refused ones included), all depths.",
                "ops",
                [Target(q.execution_rate(), kit.legend(*keep))],
            )
        )
        .with_panel(
            kit.stat(
                "Running now",
                "Subagent executions running at this moment, all depths and instances.",
                "short",
                [Target(q.active(), kit.legend(*keep))],
            )
        )
        .with_panel(
            kit.stat(
                "Error ratio",
                f"Failed or refused executions / started executions. Red from {percent}, "
                "the SubagentHighErrorRate alert threshold (alerts.high_error_rate.threshold).",
                "percentunit",
                [Target(q.error_ratio(), kit.legend(*keep))],
                threshold_steps=error_steps,
            )
        )
        .with_panel(
            kit.stat(
                "Duration p95",
                "95th percentile of execution wall-clock time. Red from the slow-executions alert "
                "threshold (alerts.slow_executions.threshold).",
                "s",
                [Target(q.duration_quantile(0.95), kit.legend(*keep))],
                threshold_steps=slow_steps,
            )
        )
        .with_row(kit.row("Throughput and errors"))
        .with_panel(
            kit.timeseries(
                "Execution rate by depth",
                "Subagent executions started per second, by nesting depth (1 = called by the main agent).",
                "ops",
                [Target(q.execution_rate(("depth",)), kit.legend(*keep, "depth", suffix="depth"))],
                stacked=True,
            )
        )
        .with_panel(_concurrency(config))
        .with_panel(
            kit.timeseries(
                "Error ratio",
                f"Failed or refused executions / started executions. The dashed line is {percent}, "
                "the SubagentHighErrorRate threshold (alerts.high_error_rate.threshold).",
                "percentunit",
                [Target(q.error_ratio(), kit.legend(*keep))],
                threshold_steps=error_steps,
            )
        )
        .with_panel(
            kit.timeseries(
                "Completions by status",
                "Executions that finished without error per second: complete, or incomplete "
                "(ran out of turns, or marked incomplete by the agent code).",
                "ops",
                [Target(q.completions(), kit.legend(*keep, "status"))],
                stacked=True,
            )
        )
        .with_panel(
            kit.timeseries(
                "Errors by type",
                "Failed or refused executions per second, by error type (quota, depth, timeout, ...).",
                "ops",
                [Target(q.errors_by_type(), kit.legend(*keep, "error_type"))],
                stacked=True,
            )
        )
        .with_panel(
            kit.timeseries(
                "Output truncations",
                "Outputs cut to agent.subagent.output_max_size bytes per second, by depth.",
                "ops",
                [Target(q.truncations(), kit.legend(*keep, "depth", suffix="depth"))],
            )
        )
        .with_row(kit.row("Latency"))
        .with_panel(
            kit.timeseries(
                "Duration p50 / p95 / p99",
                "Execution wall-clock time percentiles. The dashed line is the slow-executions alert "
                "threshold on p95 (alerts.slow_executions.threshold).",
                "s",
                quantiles(q.duration_quantile),
                threshold_steps=slow_steps,
            )
        )
        .with_panel(
            kit.heatmap_panel(
                "Duration distribution",
                "Executions per second in each duration bucket of subagent_duration_seconds.",
                "s",
                Target(q.duration_buckets(), "{{le}}"),
            )
        )
        .with_row(kit.row("Work per execution"))
        .with_panel(
            kit.timeseries(
                "Turns per execution p50 / p95 / p99",
                "Model round trips per finished execution (agent.subagent.default_max_turns caps it).",
                "short",
                quantiles(q.turns_quantile),
            )
        )
        .with_panel(
            kit.heatmap_panel(
                "Turns distribution",
                "Executions per second in each turns bucket of subagent_turns_used.",
                "short",
                Target(q.turns_buckets(), "{{le}}"),
            )
        )
        .with_panel(
            kit.timeseries(
                "Tokens per execution p50 / p95 / p99",
                "Input + output tokens per finished execution.",
                "short",
                quantiles(q.tokens_quantile),
            )
        )
        .with_panel(
            kit.heatmap_panel(
                "Tokens distribution",
                "Executions per second in each tokens bucket of subagent_tokens_consumed.",
                "short",
                Target(q.tokens_buckets(), "{{le}}"),
            )
        )
        .with_row(kit.row("Per depth"))
        .with_panel(
            kit.table(
                "Per-depth breakdown",
                "Now, per nesting depth: execution rate, running executions, error ratio (red from the "
                "alert threshold) and p95 duration (red from the slow-executions threshold).",
                "short",
                [
                    Target(q.execution_rate(("depth",))),
                    Target(q.active(("depth",))),
                    Target(q.error_ratio(("depth",))),
                    Target(q.duration_quantile(0.95, ("depth",))),
                ],
                column_units={
                    "Executions / s": "ops",
                    "Running": "short",
                    "Error ratio": "percentunit",
                    "Duration p95": "s",
                },
                renames={
                    "Value #A": "Executions / s",
                    "Value #B": "Running",
                    "Value #C": "Error ratio",
                    "Value #D": "Duration p95",
                },
                column_thresholds={"Error ratio": error_steps, "Duration p95": slow_steps},
            )
        )
        .with_panel(
            kit.timeseries(
                "Duration p95 by depth",
                "95th percentile of execution wall-clock time per nesting depth; the dashed line is the "
                "slow-executions alert threshold.",
                "s",
                [Target(q.duration_quantile(0.95, ("depth",)), kit.legend(*keep, "depth", suffix="depth"))],
                threshold_steps=slow_steps,
            )
        )
        .with_panel(
            kit.timeseries(
                "Error ratio by depth",
                "Failed or refused executions / started executions per nesting depth; the dashed line "
                "is the SubagentHighErrorRate threshold.",
                "percentunit",
                [Target(q.error_ratio(("depth",)), kit.legend(*keep, "depth", suffix="depth"))],
                threshold_steps=error_steps,
            )
        )
        .with_row(kit.row("Alerts"))
        .with_panel(
            kit.alert_list(
                "Firing alerts",
                f"Firing and pending alerts whose name contains '{ALERT_NAME_FILTER}' (the rendered "
                "alert rules), from Grafana's alerting state.",
                ALERT_NAME_FILTER,
            )
        )
        .build()
    )


def quotas(config: Config) -> dashboard.Dashboard:
    q = DashboardQueries(config)
    a = config.alerts
    limit = a.quota_nearly_exhausted.threshold
    steps = [(limit, ORANGE), (1.0, RED)]
    who = ("resource", "session")
    time_unit = [(".*time_seconds.*", kit.unit_override("s"))]
    money = _money_unit(config.cost.currency)

    def usage(resource: str, title: str, unit: str) -> timeseries_b.Panel:
        match = f'resource="{resource}"'
        return kit.timeseries(
            title,
            f"Budget used for {resource} per session (solid), the configured limit (dashed red) and the "
            f"level where SubagentQuotaNearlyExhausted fires: {limit:.0%} of the limit "
            "(alerts.quota_nearly_exhausted.threshold, dashed orange). Empty when unlimited.",
            unit,
            [
                Target(q.quota_used(match), kit.legend("session", suffix="used")),
                Target(q.quota_limit(match), kit.legend("session", suffix="limit")),
                Target(q.quota_warning_level(match), kit.legend("session", suffix="warning")),
            ],
            overrides=[
                (".* limit$", kit.series_style(RED, dashed=True)),
                (".* warning$", kit.series_style(ORANGE, dashed=True)),
            ],
            width=8,
        )

    board = _base(
        config,
        "quotas",
        "Quotas",
        "Session budgets (executions, tokens, wall-clock time, money): usage against the limits, what "
        "is left, spend, refusals and when the budget runs out at the current pace.",
    )
    return (
        board.with_row(kit.row("Budget"))
        .with_panel(
            kit.gauge(
                "Budget used",
                f"Share of each session budget used. Orange from {limit:.0%} "
                "(alerts.quota_nearly_exhausted.threshold, where SubagentQuotaNearlyExhausted fires), "
                "red when exhausted. Unlimited resources are not shown.",
                "percentunit",
                [Target(q.quota_used_ratio(), kit.legend(*who))],
                threshold_steps=steps,
                max_value=1.0,
                width=12,
            )
        )
        .with_panel(
            kit.stat(
                "Remaining budget",
                "Limit minus used per resource and session (time in seconds).",
                "short",
                [Target(q.quota_remaining(), kit.legend(*who))],
                width=6,
                height=8,
            ).override_by_regexp(*time_unit[0])
        )
        .with_panel(
            kit.stat(
                "Configured limits",
                "The session budgets as configured (agent.subagent.max_executions, max_total_tokens, "
                "max_total_time, max_total_cost); unlimited resources are not shown.",
                "short",
                [Target(q.quota_limit(), kit.legend(*who))],
                width=6,
                height=8,
            ).override_by_regexp(*time_unit[0])
        )
        .with_row(kit.row("Usage against limits"))
        .with_panel(usage("executions", "Executions used vs limit", "short"))
        .with_panel(usage("tokens", "Tokens used vs limit", "short"))
        .with_panel(usage("time_seconds", "Wall-clock time used vs limit", "s"))
        .with_row(kit.row("Cost"))
        .with_panel(usage("cost", f"Money used vs limit ({config.cost.currency})", money))
        .with_panel(
            kit.timeseries(
                "Spend over time",
                f"Money spent per hour ({config.cost.currency}) on priced model responses, counted as "
                "executions finish" + (", by model." if q.model_by else "."),
                money,
                [Target(q.spend_per_hour(), kit.legend(*q.keep, *q.model_by))],
                stacked=True,
                width=8,
            )
        )
        .with_panel(
            kit.timeseries(
                "Cost per execution by depth",
                "Money per finished execution that recorded a model response, by depth"
                + (" and model" if q.model_by else "")
                + ": mean (solid) and p95 (dashed). Buckets from a tenth of a cent to $50.",
                money,
                [
                    Target(q.cost_per_execution_average(), kit.legend("depth", *q.model_by, suffix="mean")),
                    Target(
                        q.cost_per_execution_quantile(0.95), kit.legend("depth", *q.model_by, suffix="p95")
                    ),
                ],
                overrides=[(".* p95$", kit.series_style(ORANGE, dashed=True))],
                width=8,
            )
        )
        .with_panel(_cost_extra_panels(config, q, money))
        .with_row(kit.row("Refusals and exhaustion"))
        .with_panel(
            kit.timeseries(
                "Refusals by resource",
                "Executions refused or stopped by a quota per second, by the exhausted resource.",
                "ops",
                [Target(q.rejections(), kit.legend(*q.keep, "resource"))],
                stacked=True,
            )
        )
        .with_panel(
            kit.timeseries(
                "Time to exhaustion",
                "Remaining budget divided by the current consumption rate (linear fit over "
                "$__rate_interval): when the budget runs out at this pace. No value while nothing is "
                "consumed or just after a session restarts its budget.",
                "s",
                [Target(q.time_to_exhaustion(), kit.legend(*who))],
            )
        )
        .build()
    )


def _money_unit(currency: str) -> str:
    """Grafana's unit for the configured currency (a plain number when Grafana has none)."""
    return f"currency{currency}" if currency in _GRAFANA_CURRENCIES else "short"


#: Currencies Grafana has a unit for (``currency<CODE>``).
_GRAFANA_CURRENCIES = frozenset(
    {"USD", "GBP", "EUR", "JPY", "RUB", "UAH", "BRL", "DKK", "ISK", "NOK", "SEK", "CZK", "CHF", "PLN",
     "BTC", "ZAR", "INR", "KRW", "IDR", "PHP", "VND"}
)  # fmt: skip


def _cost_extra_panels(config: Config, q: DashboardQueries, money: str) -> timeseries_b.Panel:
    """Top spenders by agent when the agent label is on; otherwise the unpriced tokens."""
    if config.telemetry.agent_label.enabled:
        return kit.timeseries(
            "Top spenders by agent",
            "The five agents (telemetry.agent_label) spending most per hour on priced model responses.",
            money,
            [Target(q.top_spenders(), kit.legend(*q.keep, "agent"))],
            width=8,
        )
    return kit.timeseries(
        "Unpriced tokens",
        "Tokens per second of model responses with no known price (counted at no cost): add their "
        "prices under cost.prices. Turn on telemetry.agent_label to see the top spenders by agent here.",
        "short",
        [Target(q.unpriced_tokens(), kit.legend(*q.keep, *q.model_by))],
        stacked=True,
        width=8,
    )


def to_json(model: dashboard.Dashboard) -> str:
    """Stable JSON: panel ids numbered in layout order, keys sorted, trailing newline."""
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number
    data = json.loads(json.dumps(model, cls=JSONEncoder))
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
